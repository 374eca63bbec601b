"""The local transport: an agent process on this machine, on a free loopback port.

The agent runs detached (its own session, pid file, port file, log file under the host's data dir)
so it outlives one `host deploy` and keeps its artifact store; the next deploy finds it through the
pid/port files and reuses it. An agent whose version differs from the host's is restarted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

from host import __version__
from host.client import AgentClient, AgentError, read_secret_file, remember_agent
from host.paths import data_dir
from host.transports.base import Progress, Transport, TransportError


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is not alive
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return True


def _is_agent(pid: int) -> bool:
    """The live process `pid` is an `agent ... serve`, not whatever got the pid after a reboot.

    A pid file outlives the process it names; trusting `kill -0` alone would report (and later
    SIGTERM) an unrelated process that was given the recycled pid. Without /proc we cannot tell
    and fall back to liveness alone.
    """
    if not _alive(pid):
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
    except FileNotFoundError:
        return not os.path.isdir("/proc/self")     # no /proc at all: liveness is all we have
    except OSError:
        return False                               # another user's process: not our agent
    return any(b"agent" in a for a in args) and b"serve" in args


class LocalTransport(Transport):
    kind = "local"

    def __init__(self, target: Any, state_dir: Optional[Path] = None):
        super().__init__(target)
        base = Path(state_dir) if state_dir else data_dir() / "agents" / target.name
        self.dir = base
        self.dir.mkdir(parents=True, exist_ok=True)
        self.pid_file = self.dir / "agent.pid"
        self.port_file = self.dir / "agent.port"
        self.log_file = self.dir / "agent.log"
        self.store = Path(target.store_dir).expanduser() if target.store_dir else self.dir / "store"

    def _read_int(self, p: Path) -> Optional[int]:
        try:
            return int(p.read_text().strip())
        except (OSError, ValueError):
            return None

    def agent_status(self) -> dict[str, Any]:
        pid = self._read_int(self.pid_file)
        port = self._read_int(self.port_file)
        running = bool(pid and _is_agent(pid) and port)
        st = {"running": running, "pid": pid if running else None, "port": port if running else None,
              "address": f"127.0.0.1:{port}" if running else None, "log": str(self.log_file),
              "store": str(self.store)}
        if running:
            try:
                # the agent's secret (0600, created at its first start): what every call must carry
                remember_agent(st["address"], read_secret_file(self.store / "agent.secret"))
                with AgentClient(st["address"], timeout=5) as c:
                    st["agent_version"] = c.info()["agent_version"]
            except AgentError:
                st["responding"] = False
        return st

    def start_agent(self, progress: Progress = None) -> dict[str, Any]:
        st = self.agent_status()
        if st["running"] and st.get("agent_version") == __version__:
            return st
        if st["running"]:
            if progress:
                progress(f"agent {st.get('agent_version', '?')} differs from host {__version__}: restarting")
            self.stop_agent()
        self.port_file.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "agent.cli", "serve", "--listen", "127.0.0.1:0", "--store", str(self.store),
               "--pid-file", str(self.pid_file), "--port-file", str(self.port_file)]
        if self.target.cpu_affinity:
            cmd += ["--cpu-affinity", self.target.cpu_affinity]
        if progress:
            progress(f"starting local agent (log {self.log_file})")
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, cwd=str(self.dir))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            port = self._read_int(self.port_file)
            if port:
                break
            if proc.poll() is not None:
                tail = self.log_file.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
                raise TransportError(f"local agent exited at start ({tail[0]}); see {self.log_file}")
            time.sleep(0.05)
        else:
            proc.kill()
            raise TransportError(f"local agent did not start within 30 s; see {self.log_file}")
        return self.agent_status()

    def connect(self, progress: Progress = None) -> str:
        st = self.start_agent(progress)
        addr = st["address"]
        AgentClient(addr).wait_ready(10)
        return addr

    def stop_agent(self) -> bool:
        pid = self._read_int(self.pid_file)
        if not pid or not _is_agent(pid):
            # stale: the agent is gone (the pid may now belong to something else: never signal it)
            self.pid_file.unlink(missing_ok=True)
            self.port_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            if not _alive(pid):
                break
            time.sleep(0.05)
        else:
            os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        self.port_file.unlink(missing_ok=True)
        return True

    def logs(self, lines: int = 100) -> str:
        if not self.log_file.exists():
            return ""
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
