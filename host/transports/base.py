"""The Transport contract: how the host reaches an agent on a target.

A transport makes sure an agent runs on the device (bootstrapping it when needed) and gives back a
local `host:port` that reaches the agent's gRPC port (directly for `local`, through a paramiko port
forward for `ssh`, through `adb forward` for `adb`). Everything else (push, benchmark, infer) is the
same gRPC client for every target.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, Optional

from host.errors import UserError


class TransportError(UserError):
    """Unreachable device, failed bootstrap, broken tunnel: one line saying what to do."""


Progress = Optional[Callable[[str], None]]


def agent_pid_sh(pid: str) -> str:
    """POSIX sh (toybox/mksh too) that sets $p to `pid` (a shell word) and succeeds only if that process
    is alive AND is an `agent ... serve`.

    A pid file outlives a reboot; `kill -0` alone would take whatever process was given the recycled
    pid for the agent, and stop_agent would later SIGTERM it. Where /proc exists, its cmdline decides
    (NULs turned into spaces: shells drop NULs); without /proc, liveness is all we can know.
    """
    return (f'p={pid}; kill -0 "$p" 2>/dev/null && {{ [ ! -d /proc/self ] || '
            f'case "$(tr \'\\000\' \' \' <"/proc/$p/cmdline" 2>/dev/null)" in *agent*serve*) true;; *) false;; esac; }}')


class Transport(ABC):
    kind: str = ""

    def __init__(self, target: Any):
        self.target = target          # host.targets.Target

    @abstractmethod
    def connect(self, progress: Progress = None) -> str:
        """Ensure an agent is running on the device and return a local 'host:port' reaching it."""

    @abstractmethod
    def start_agent(self, progress: Progress = None) -> dict[str, Any]:
        """Start (bootstrapping if needed) the agent; returns pid/port/log facts."""

    @abstractmethod
    def stop_agent(self) -> bool:
        """Stop the agent on the device; True if one was stopped."""

    @abstractmethod
    def agent_status(self) -> dict[str, Any]:
        """{'running': bool, 'pid': ..., 'port': ..., 'log': path} without starting anything."""

    def logs(self, lines: int = 100) -> str:
        return ""

    def close(self) -> None:  # noqa: B027 - tunnels and sessions to release, if any
        """Release tunnels/forwards opened by connect()."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
