"""Third-party output is kept out of the user's way unless --verbose, and never lost."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("executorch", reason="needs the 'executorch' extra (its runtime prints cpuinfo lines)")

NOISE = ("cpuinfo_utils", "Failed to load", "threadpool.cpp")


def _quantize(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, EDGEBENCH_HOME=str(tmp_path / "home"))
    return subprocess.run([sys.executable, "-m", "host.cli", "quantize", "--model", "tests.models_for_tests:mlp",
                           "--platform", "executorch", "--method", "fp32", "--check-samples", "4", "--json",
                           "--out", str(tmp_path / "out"), *extra],
                          capture_output=True, text=True, timeout=600, env=env, cwd=Path(__file__).parent.parent)


def test_library_noise_goes_to_a_log_unless_verbose(tmp_path):
    r = _quantize(tmp_path)
    assert r.returncode == 0, r.stderr
    assert "[quantize] executorch fp32: wrote" in r.stderr            # our progress still shows
    assert not [n for n in NOISE if n in r.stderr], r.stderr          # theirs does not
    assert r.stdout.lstrip().startswith("[")                          # --json stays clean on stdout
    logs = list((tmp_path / "home" / "logs").glob("host-quantize-*.log"))
    assert len(logs) == 1 and "cpuinfo_utils" in logs[0].read_text()  # kept, not lost
    v = _quantize(tmp_path, "--verbose")
    assert v.returncode == 0 and "cpuinfo_utils" in v.stderr
