"""Transports by name; each imported only when a target uses it (paramiko is host-only and optional)."""

from __future__ import annotations

import importlib

from host.transports.base import Transport, TransportError

_CLASSES = {
    "local": ("host.transports.local", "LocalTransport"),
    "ssh": ("host.transports.ssh", "SSHTransport"),
    "adb": ("host.transports.adb", "AdbTransport"),
    "tcp": ("host.transports.tcp", "TcpTransport"),
}


def open_transport(target) -> Transport:
    """The Transport for a target (host.targets.Target)."""
    if target.transport not in _CLASSES:
        raise TransportError(f"target {target.name}: unknown transport {target.transport!r}")
    module, cls = _CLASSES[target.transport]
    return getattr(importlib.import_module(module), cls)(target)
