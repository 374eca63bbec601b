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
