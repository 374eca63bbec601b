"""Targets: the devices a user deploys to, defined in TOML files users edit (targets/*.toml).

Search path: $EDGEBENCH_TARGETS (colon-separated dirs), ./targets, the user's config dir. A built-in
`local` target always exists (an agent process on this machine, on loopback).
"""

from __future__ import annotations

import os
from dataclasses import MISSING, asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import tomllib

from host.errors import UserError

KINDS = ("local", "raspberry-pi", "android", "jetson", "linux")
TRANSPORTS = ("local", "ssh", "adb", "tcp")


class TargetError(UserError):
    """Unknown target, invalid TOML, missing field: one line."""


@dataclass
class Target:
    name: str
    kind: str = "local"
    transport: str = "local"
    description: str = ""
    # ssh
    host: str = ""
    port: int = 22
    user: str = ""
    key: str = ""                       # private key file; empty = ssh-agent / default keys
    password: str = ""
    # adb
    serial: str = ""
    adb_connect: str = ""               # host:port for TCP devices (adb connect), empty for USB
    # tcp (mutual TLS, no tunnel): files from `python -m host.tls init`
    tls_ca: str = ""                    # the project CA (PEM)
    tls_cert: str = ""                  # this host's client certificate
    tls_key: str = ""
    tls_name: str = ""                  # the name the agent's certificate must carry (pinned); default: target name
    secret_file: str = ""               # host-side copy of the agent's call secret
    # device side
    workdir: str = "~/.edgebench"       # where the agent, its venv and its store live on the device
    python: str = "python3"             # device-side interpreter (Android: one the adb shell user may run)
    runtime_extra: str = "tflite"       # pip extra installed on the device
    system_site_packages: bool = False  # Jetson: True so JetPack's TensorRT is visible in the venv
    wheels_dir: str = ""                # offline devices: host dir of wheels for the device's platform
    agent_port: int = 50051             # agent's port on the device (bound to the device's loopback)
    store_dir: str = ""                 # agent store; default <workdir>/store
    # run defaults
    threads: int = 0
    cpu_affinity: str = ""              # e.g. "2,3" (taskset list) for big cores
    prefer_runtimes: list[str] = field(default_factory=list)  # e.g. ["tensorrt"] on a Jetson
    source: str = ""                    # file it came from

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("password", None)
        return d


LOCAL = Target(name="local", kind="local", transport="local",
               description="an agent process on this machine (loopback)", source="<built-in>")


def search_dirs() -> list[Path]:
    dirs = []
    env = os.environ.get("EDGEBENCH_TARGETS")
    if env:
        dirs += [Path(p) for p in env.split(os.pathsep) if p]
    dirs.append(Path.cwd() / "targets")
    dirs.append(Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "edgebench" / "targets")
    return dirs


def parse_target(path: Path) -> Target:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise TargetError(f"cannot read target file {path}: {e}") from e
    data.setdefault("name", path.stem)
    known = set(Target.__dataclass_fields__)
    unknown = sorted(set(data) - known)
    if unknown:
        raise TargetError(f"{path}: unknown field(s) {', '.join(unknown)}")
    for key, value in data.items():
        want = _field_type(key)
        # bool is an int in Python; a TOML "2" (a string) for threads is not: say which field, in one line
        if want is not None and (not isinstance(value, want) or (want is not bool and isinstance(value, bool))):
            raise TargetError(f"{path}: {key} must be {_TYPE_NAMES.get(want, want.__name__)}, not {value!r}")
    t = Target(**data)
    t.source = str(path)
    validate(t)
    return t


_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false", list: "a list"}


def _field_type(name: str) -> Optional[type]:
    """The Python type a TOML value for this Target field must have (from the field's default)."""
    f = Target.__dataclass_fields__[name]
    default = f.default_factory() if f.default_factory is not MISSING else f.default  # type: ignore[misc]
    if default is None or default is MISSING:
        return None
    if isinstance(default, float):
        return (int, float)  # type: ignore[return-value]
    return type(default)


def validate(t: Target) -> None:
    if t.kind not in KINDS:
        raise TargetError(f"target {t.name}: kind must be one of {', '.join(KINDS)}, not {t.kind!r}")
    if t.transport not in TRANSPORTS:
        raise TargetError(f"target {t.name}: transport must be one of {', '.join(TRANSPORTS)}")
    if t.transport in ("ssh", "tcp") and not t.host:
        raise TargetError(f"target {t.name}: {t.transport} transport needs host = \"...\"")


def load_targets(dirs: Optional[list[Path]] = None, broken: Optional[dict[str, str]] = None) -> dict[str, Target]:
    """Every readable target; a file that does not parse is left out (its error goes into `broken`, keyed by
    the file's stem) so one bad file does not take every other target down with it."""
    found: dict[str, Target] = {"local": LOCAL}
    for d in dirs if dirs is not None else search_dirs():
        if not d.is_dir():
            continue
        for f in sorted(d.glob("*.toml")):
            try:
                t = parse_target(f)
            except TargetError as e:
                if broken is not None:
                    broken.setdefault(f.stem, str(e))
                continue
            found.setdefault(t.name, t)   # earlier dirs win
    return found


def get_target(name: str, dirs: Optional[list[Path]] = None) -> Target:
    broken: dict[str, str] = {}
    targets = load_targets(dirs, broken)
    if name not in targets and name in broken:
        raise TargetError(broken[name])
    if name not in targets:
        raise TargetError(f"unknown target {name!r} (known: {', '.join(sorted(targets))}); see `host targets list`")
    return targets[name]
