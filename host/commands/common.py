"""Pieces several commands share: --db, artifact expansion, table printing."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Iterable

from host.artifacts import MANIFEST_SUFFIX, SELF_DESCRIBING, Artifact, ArtifactError, load_artifact
from host.paths import default_db


def add_db(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", default=None, metavar="PATH|URL",
                   help=f"results database: a SQLite file, or postgresql://USER[:PASSWORD]@HOST[:PORT]/DB for a "
                        f"lab shared by many hosts (default: $EDGEBENCH_DB, else {default_db()})")


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")


def db_path(args: argparse.Namespace) -> Path | str:
    """--db, else $EDGEBENCH_DB, else the default file; a database URL stays a string (Path would fold its //)."""
    import os

    loc = getattr(args, "db", None) or os.environ.get("EDGEBENCH_DB")
    if loc and "://" in loc:
        return loc
    return Path(loc) if loc else default_db()


def db_exists(loc: Path | str) -> bool:
    """A SQLite file that is there, or any database URL (a server is asked when the store opens)."""
    return isinstance(loc, str) or Path(loc).is_file()


def expand_artifacts(paths: Iterable[str]) -> list[Artifact]:
    """Files as given; a directory means every artifact with a manifest in it, plus every ready `.tflite` /
    `.onnx` file without one (its manifest is made from the file)."""
    out: list[Artifact] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            found = {m.with_name(m.name[: -len(MANIFEST_SUFFIX)]) for m in path.iterdir()
                     if m.name.endswith(MANIFEST_SUFFIX)}
            found |= {f for f in path.iterdir() if f.is_file() and f.suffix.lower() in SELF_DESCRIBING}
            if not found:
                raise ArtifactError(f"no artifacts in {path}: no manifests and no .tflite/.onnx files "
                                    f"(run host quantize --out {path})")
            out += [load_artifact(f) for f in sorted(found)]
        else:
            out.append(load_artifact(path))
    return out


def print_table(rows: list[list[Any]], header: list[str]) -> None:
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for i, r in enumerate(cells):
        print("  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths))).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))


def _no_nan(obj: Any) -> Any:
    """NaN (a figure that was not measured) becomes null: NaN is not JSON, and scripts choke on it."""
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, dict):
        return {k: _no_nan(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_no_nan(v) for v in obj]
    return obj


def dump_json(obj: Any) -> None:
    print(json.dumps(_no_nan(obj), indent=2, default=str))
