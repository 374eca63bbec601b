"""What a remote transport installs on a device: the agent, built from this checkout.

- `build_id()`: the agent version plus a hash of its sources, so a device is re-bootstrapped when the
  agent it runs differs from the host's (a changed checkout counts, not only a version bump).
- `agent_wheel()`: `pip wheel` of the agent + protos packages (the `edgebench` distribution without
  the host), cached per build id.
- `agent_zipapp()`: the same packages as a zip Python runs directly (adb targets, whose Python
  already has grpcio/protobuf/numpy, e.g. one installed under /data/local/tmp).
- `device_wheelhouse()`: the wheels a device needs for its platform, fetched by the host with
  `pip download --platform ... --only-binary=:all:` for devices that cannot reach an index.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Callable, Optional

import agent
from host.paths import cache_dir
from host.transports.base import TransportError

Progress = Optional[Callable[[str], None]]
PACKAGES = ("agent", "protos")
# Everything but __pycache__ and editor droppings: the device gets source, it compiles its own bytecode.
_SOURCE_SUFFIXES = (".py", ".proto", ".typed")


def project_root() -> Path:
    root = Path(agent.__file__).resolve().parent.parent
    if not (root / "pyproject.toml").is_file():
        raise TransportError(f"cannot build the agent: {root} is not an edgebench checkout (no pyproject.toml); "
                             "run the host from a source checkout")
    return root


def _source_files(root: Path) -> list[Path]:
    files = []
    for pkg in PACKAGES:
        files += [p for p in (root / pkg).rglob("*") if p.is_file() and p.suffix in _SOURCE_SUFFIXES
                  and "__pycache__" not in p.parts]
    return sorted(files)


def build_id() -> str:
    """'<agent version>+<12 hex of the agent sources and pyproject>', e.g. '0.1.0+3f2a...'."""
    root = project_root()
    h = hashlib.sha256()
    for f in _source_files(root) + [root / "pyproject.toml"]:
        h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes() + b"\0")
    return f"{agent.__version__}+{h.hexdigest()[:12]}"


def _say(progress: Progress, msg: str) -> None:
    if progress:
        progress(msg)


def agent_wheel(progress: Progress = None) -> Path:
    """The agent wheel for this checkout (built once per build id, then taken from the cache)."""
    bid = build_id()
    out = cache_dir() / "agent-wheels" / bid
    found = sorted(out.glob("edgebench-*.whl"))
    if found:
        return found[0]
    root = project_root()
    _say(progress, f"building agent wheel {bid}")
    with tempfile.TemporaryDirectory(prefix="edgebench-wheel-") as tmp:
        # Build from a copy holding only the device packages: the wheel stays small (no host/) and the
        # checkout gets no build/ or egg-info droppings while others work in it.
        src = Path(tmp) / "src"
        src.mkdir()
        for f in _source_files(root):
            dest = src / f.relative_to(root)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dest)
        shutil.copy2(root / "pyproject.toml", src / "pyproject.toml")
        (src / "README.md").write_text("edgebench agent (built by the host for a device)\n")
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-cache-dir",
               "-q", "-w", str(Path(tmp) / "dist"), str(src)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise TransportError(f"building the agent wheel failed: {_last_line(r.stderr or r.stdout)}")
        wheels = sorted((Path(tmp) / "dist").glob("edgebench-*.whl"))
        if not wheels:
            raise TransportError("building the agent wheel produced no edgebench-*.whl")
        out.mkdir(parents=True, exist_ok=True)
        final = out / wheels[0].name
        shutil.copy2(wheels[0], final.with_suffix(".part"))
        final.with_suffix(".part").replace(final)
    return final


def agent_zipapp(progress: Progress = None) -> Path:
    """agent + protos as one .pyz (`python agent.pyz serve ...`), cached per build id."""
    bid = build_id()
    out = cache_dir() / "agent-zipapps" / f"edgebench-agent-{bid}.pyz"
    if out.is_file():
        return out
    _say(progress, f"building agent bundle {bid}")
    root = project_root()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".part")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("__main__.py", "import sys\nfrom agent.cli import main\nsys.exit(main())\n")
        for f in _source_files(root):
            z.write(f, str(f.relative_to(root)))
    tmp.replace(out)
    return out


def manylinux_platforms(machine: str, glibc: str) -> list[str]:
    """pip --platform tags a glibc Linux device accepts, newest first (e.g. aarch64 + glibc 2.36)."""
    try:
        major, minor = (int(x) for x in glibc.split(".")[:2])
    except ValueError:
        major, minor = 2, 17
    tags = [f"manylinux_{major}_{m}_{machine}" for m in range(minor, 16, -1)] if major == 2 else []
    return tags + [f"manylinux2014_{machine}", f"linux_{machine}"]


def device_wheelhouse(wheels_dir: str, wheel: Path, extra: str, machine: str, glibc: str, py_version: str,
                      progress: Progress = None) -> Path:
    """A directory of wheels that installs `wheel[extra]` on the device's platform without an index.

    Kept in <wheels_dir>/cp<ver>-<machine>/; what is already there is reused (checked offline with
    --no-index first), only what is missing is downloaded from the host's index.
    """
    py_tag = py_version.replace(".", "")
    dest = Path(wheels_dir).expanduser() / f"cp{py_tag}-{machine}"
    dest.mkdir(parents=True, exist_ok=True)
    req = f"{wheel}[{extra}]" if extra else str(wheel)
    base = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--python-version", py_version,
            "--implementation", "cp", "-d", str(dest)]
    for tag in manylinux_platforms(machine, glibc):
        base += ["--platform", tag]
    offline = subprocess.run(base + ["--no-index", "--find-links", str(dest), req], capture_output=True, text=True)
    if offline.returncode != 0:
        _say(progress, f"downloading wheels for {machine} / Python {py_version} into {dest}")
        online = subprocess.run(base + [req], capture_output=True, text=True)
        if online.returncode != 0:
            raise TransportError(f"cannot get wheels for the device ({machine}, Python {py_version}): "
                                 f"{_last_line(online.stderr or online.stdout)}; put them in {dest} by hand")
    # pip copied our own wheel in too; the transport uploads that one separately, by build id.
    for stale in dest.glob("edgebench-*.whl"):
        stale.unlink()
    return dest


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "(no output)"
