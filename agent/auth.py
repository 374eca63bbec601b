"""Who may use this agent: a per-agent secret checked on every call, and TLS for agents reached without a tunnel.

The secret is created at the agent's first start (random, 256 bits, file mode 0600, in its store directory),
so only the device user that runs the agent, and whoever the transport lets read it (ssh / adb as that user),
can call it. Android apps can reach 127.0.0.1 too; the loopback address alone proves nothing.
The host sends it as call metadata; `AuthInterceptor` refuses every RPC without it (UNAUTHENTICATED, logged).

TLS (mutual, against a project CA) is only needed when the agent listens beyond loopback; gRPC's own SSL
credentials do the work, so the agent needs no `cryptography` package for it.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import secrets
import stat
from pathlib import Path
from typing import Any, Callable, Optional

import grpc

METADATA_KEY = "x-edgebench-secret"     # gRPC metadata keys are lower case
SECRET_FILE = "agent.secret"
log = logging.getLogger("agent.auth")


def load_or_create_secret(path: str | Path) -> str:
    """The agent's secret, created (0600, atomically, race-free between two starting agents) if missing."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
            f.flush()
            os.fsync(f.fileno())
    mode = stat.S_IMODE(p.stat().st_mode)
    if mode & 0o077:
        # readable by others means usable by others: tighten it rather than serve with a shared secret
        os.chmod(p, 0o600)
        log.warning("%s was mode %o; set to 600", p, mode)
    value = p.read_text().strip()
    if len(value) < 16:
        raise OSError(f"{p} holds no usable secret (empty or too short); delete it and restart the agent")
    return value


class AuthInterceptor(grpc.ServerInterceptor):
    """Refuses any call whose metadata lacks the agent's secret, before the servicer sees a byte of it."""

    def __init__(self, secret: str):
        self._secret = secret.encode()

    def _ok(self, details: grpc.HandlerCallDetails) -> bool:
        for key, value in details.invocation_metadata or ():
            if key == METADATA_KEY:
                v = value.encode() if isinstance(value, str) else bytes(value)
                return hmac.compare_digest(v, self._secret)
        return False

    def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Any],
                          details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        if handler is None or self._ok(details):
            return handler
        method = details.method

        def deny(_request: Any, context: grpc.ServicerContext) -> Any:
            log.warning("refused unauthenticated call %s from %s", method, context.peer())
            context.abort(grpc.StatusCode.UNAUTHENTICATED,
                          f"{method}: no valid agent secret; the host reads it from the agent's "
                          f"{SECRET_FILE} through its transport")

        # the refusal must have the same shape (streaming or not) as the method it stands in for
        kw = {"request_deserializer": handler.request_deserializer, "response_serializer": handler.response_serializer}
        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(deny, **kw)
        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(deny, **kw)
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(deny, **kw)
        return grpc.unary_unary_rpc_method_handler(deny, **kw)


def is_loopback(listen: str) -> bool:
    """True when `host:port` binds only this machine's loopback interface."""
    host = listen.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False            # a host name or an empty host (all interfaces): not loopback


def server_credentials(cert: str, key: str, ca: str) -> grpc.ServerCredentials:
    """Mutual TLS: the agent shows `cert`, and accepts only clients whose certificate `ca` signed."""
    try:
        cert_b, key_b, ca_b = (Path(x).read_bytes() for x in (cert, key, ca))
    except OSError as e:
        raise OSError(f"cannot read TLS file: {e}") from e
    return grpc.ssl_server_credentials([(key_b, cert_b)], root_certificates=ca_b, require_client_auth=True)


def tls_files_given(cert: Optional[str], key: Optional[str], ca: Optional[str]) -> bool:
    given = [bool(x) for x in (cert, key, ca)]
    if any(given) and not all(given):
        raise OSError("TLS needs all three of --tls-cert, --tls-key and --tls-ca")
    return all(given)
