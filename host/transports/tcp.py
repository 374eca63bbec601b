"""The tcp transport: an agent on a lab network reached directly, over mutual TLS (no SSH/adb tunnel).

The agent is started on the device by whoever administers it (`agent serve --listen 0.0.0.0:PORT
--tls-cert ... --tls-key ... --tls-ca ... --auth-file ...`, files from `python -m host.tls init`); the host
does not start or stop it. The target names the project CA, the host's client certificate, the agent's
secret (a host-side copy) and `tls_name`: the name the agent's certificate must carry (pinned; default
the target's name), so a different agent with a certificate from the same CA is still refused.
"""

from __future__ import annotations

from typing import Any

from host.client import AgentClient, AgentError, TlsConfig, read_secret_file, remember_agent
from host.transports.base import Progress, Transport, TransportError


class TcpTransport(Transport):
    kind = "tcp"

    def __init__(self, target: Any):
        super().__init__(target)
        t = target
        missing = [f for f in ("host", "tls_ca", "tls_cert", "tls_key", "secret_file") if not getattr(t, f, "")]
        if missing:
            raise TransportError(f"target {t.name}: the tcp transport needs {', '.join(missing)} "
                                 "(python -m host.tls init makes the files)")
        self.address = f"{t.host}:{t.agent_port}"
        self.tls = TlsConfig(ca=t.tls_ca, cert=t.tls_cert, key=t.tls_key, server_name=t.tls_name or t.name)

    def _remember(self) -> None:
        try:
            remember_agent(self.address, read_secret_file(self.target.secret_file), self.tls)
        except AgentError as e:
            raise TransportError(str(e)) from e

    def agent_status(self) -> dict[str, Any]:
        self._remember()
        st: dict[str, Any] = {"running": False, "pid": None, "port": self.target.agent_port, "address": self.address}
        try:
            with AgentClient(self.address, timeout=10) as c:
                info = c.info()
        except AgentError as e:
            st["error"] = str(e)
            return st
        st.update(running=True, pid=info["pid"], agent_version=info["agent_version"])
        return st

    def start_agent(self, progress: Progress = None) -> dict[str, Any]:
        st = self.agent_status()
        if not st["running"]:
            raise TransportError(f"no agent answers at {self.address} over TLS ({st.get('error', '')}); tcp agents "
                                 "are started on the device: agent serve --listen 0.0.0.0:PORT --tls-cert ...")
        return st

    def stop_agent(self) -> bool:
        raise TransportError(f"target {self.target.name}: a tcp agent is stopped on the device itself")

    def connect(self, progress: Progress = None) -> str:
        self.start_agent(progress)
        return self.address
