"""Where the host keeps its state: results DB, local agent, caches. EDGEBENCH_HOME overrides all."""

from __future__ import annotations

import os
from pathlib import Path


def data_dir() -> Path:
    env = os.environ.get("EDGEBENCH_HOME")
    if env:
        p = Path(env)
    else:
        base = os.environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
        p = Path(base) / "edgebench"
    p.mkdir(parents=True, exist_ok=True)
    return p


def default_db() -> Path:
    return Path(os.environ.get("EDGEBENCH_DB") or data_dir() / "results.sqlite")


def cache_dir() -> Path:
    env = os.environ.get("EDGEBENCH_CACHE")
    p = Path(env) if env else data_dir() / "cache"
    p.mkdir(parents=True, exist_ok=True)
    return p
