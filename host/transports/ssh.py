"""SSH transport (paramiko): bootstrap the agent on a device that has only SSH and Python, then tunnel.

Layout on the device, under target.workdir (default ~/.edgebench):

    venv/            the agent's virtualenv (--system-site-packages when the target asks, e.g. Jetson/TensorRT)
    dist/            the agent wheel built from the host's checkout
    wheels/          wheels the host downloaded for the device's platform (offline devices, target.wheels_dir)
    agent.version    '<build id> extra=<extra>' of what is installed: re-bootstrap only when it differs
    agent.pid/.port  written by `agent serve`; agent.log: its output
    store/           the artifact store (target.store_dir overrides)

The agent listens on the device's loopback only; the host reaches it through a paramiko `direct-tcpip`
channel behind a local ephemeral port (`connect()` returns '127.0.0.1:<that port>'). A session that
drops (device rebooted, Wi-Fi roamed) is reopened on the next command or tunnelled connection; paramiko
errors end as one-line TransportErrors, never as tracebacks.
"""

from __future__ import annotations

import os
import posixpath
import select
import shlex
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

from host.transports import bundle
from host.transports.base import Progress, Transport, TransportError, agent_pid_sh

CONNECT_TIMEOUT = 15.0


def _say(progress: Progress, msg: str) -> None:
    if progress:
        progress(msg)


def _link_errors() -> tuple[type[BaseException], ...]:
    """What a dropped or refused SSH session raises: paramiko's SSHException (ChannelException, "SSH
    session not active", SFTP negotiation) besides socket errors and EOF."""
    try:
        from paramiko import SSHException
    except ImportError:
        return (OSError, EOFError)
    return (OSError, EOFError, SSHException)


def known_hosts_file() -> Path:
    """Host keys seen so far (trust on first use); a changed key is refused. EDGEBENCH_KNOWN_HOSTS overrides."""
    env = os.environ.get("EDGEBENCH_KNOWN_HOSTS")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(Path.home(), ".config")
    return Path(base) / "edgebench" / "known_hosts"


class _Forwarder(threading.Thread):
    """A local listening socket whose connections are carried to (host, port) on the device over SSH.

    `reconnect` returns a live paramiko Transport: when the session the forwarder holds has died, the
    next connection gets a fresh one instead of failing forever on the dead session. Without it, each
    connection is dropped and `last_error` says why.
    """

    def __init__(self, transport: Any, remote_port: int, remote_host: str = "127.0.0.1",
                 reconnect: Optional[Callable[[], Any]] = None):
        super().__init__(daemon=True, name=f"ssh-forward-{remote_port}")
        self.transport, self.remote = transport, (remote_host, remote_port)
        self.reconnect = reconnect
        self.last_error = ""
        self.reconnects = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.stopping = threading.Event()
        self.pairs: list[tuple[socket.socket, Any]] = []

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            try:
                chan = self._open(peer)
            except TransportError as e:     # drop this connection: gRPC reports UNAVAILABLE and retries
                self.last_error = str(e)
                conn.close()
                continue
            self.pairs = [(c, ch) for c, ch in self.pairs if not ch.closed]     # forget finished pairs
            self.pairs.append((conn, chan))
            threading.Thread(target=self._pump, args=(conn, chan), daemon=True).start()

    def _open(self, peer: Any) -> Any:
        """A direct-tcpip channel to the remote port, on a fresh session if the current one died."""
        where = f"{self.remote[0]}:{self.remote[1]}"
        retried = False
        while True:
            if not self.transport.is_active():
                if self.reconnect is None:
                    raise TransportError(f"ssh session for the tunnel to {where} has closed; connect again")
                self.transport = self.reconnect()       # raises TransportError when the device is gone
                self.reconnects += 1
            try:
                return self.transport.open_channel("direct-tcpip", self.remote, peer, timeout=CONNECT_TIMEOUT)
            except _link_errors() as e:
                # a live session that refuses the channel means nothing listens there: no point retrying
                if retried or self.transport.is_active() or self.reconnect is None:
                    raise TransportError(f"ssh tunnel to {where} on the device failed: "
                                         f"{str(e) or type(e).__name__}") from e
                retried = True

    def _pump(self, conn: socket.socket, chan: Any) -> None:
        try:
            while not self.stopping.is_set():
                ready, _, _ = select.select([conn, chan], [], [], 0.5)
                if conn in ready:
                    data = conn.recv(256 * 1024)
                    if not data:
                        break
                    chan.sendall(data)
                if chan in ready:
                    data = chan.recv(256 * 1024)
                    if not data:
                        break
                    conn.sendall(data)
        except _link_errors():
            pass                # either end went away: close both
        finally:
            chan.close()
            conn.close()

    def close(self) -> None:
        self.stopping.set()
        self.sock.close()
        for conn, chan in self.pairs:
            chan.close()
            conn.close()


class SSHTransport(Transport):
    kind = "ssh"

    def __init__(self, target: Any):
        super().__init__(target)
        self._client: Any = None
        self._forward: Optional[_Forwarder] = None
        self._workdir = ""
        self._facts: dict[str, str] = {}
        self._lock = threading.Lock()     # the tunnel thread may reopen the session while commands run
        # what this object did, so callers (and tests) can tell a bootstrap from a plain start
        self.stats = {"uploaded_bytes": 0, "uploaded_files": 0, "bootstraps": 0, "pip_installs": 0}

    # ---- SSH session ----------------------------------------------------------------------------
    @property
    def where(self) -> str:
        t = self.target
        return f"{t.user + '@' if t.user else ''}{t.host}:{t.port}"

    def _ssh(self) -> Any:
        with self._lock:
            return self._session()

    def _session(self) -> Any:
        if self._client is not None:
            tr = self._client.get_transport()
            if tr is not None and tr.is_active():
                return self._client
            self._client.close()            # a dropped session: release it and open a new one
            self._client = None
        try:
            import paramiko
        except ImportError as e:
            raise TransportError("the ssh transport needs paramiko: pip install 'edgebench[host]'") from e
        t = self.target
        client = paramiko.SSHClient()
        kh = known_hosts_file()
        kh.parent.mkdir(parents=True, exist_ok=True)
        kh.touch(exist_ok=True)
        client.load_host_keys(str(kh))
        # First contact records the key (like ssh's accept-new); a different key later is refused.
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        try:
            client.connect(t.host, port=t.port, username=t.user or None,
                           key_filename=os.path.expanduser(t.key) if t.key else None,
                           password=t.password or None, timeout=CONNECT_TIMEOUT, banner_timeout=CONNECT_TIMEOUT,
                           auth_timeout=CONNECT_TIMEOUT, allow_agent=not t.key, look_for_keys=not t.key)
        except paramiko.BadHostKeyException as e:
            raise TransportError(f"host key of {self.where} changed: if the device was reinstalled, remove its "
                                 f"line from {kh}") from e
        except paramiko.AuthenticationException as e:
            raise TransportError(f"ssh authentication to {self.where} failed: check user/key in "
                                 f"{t.source or 'the target file'}") from e
        except (OSError, EOFError, paramiko.SSHException) as e:
            raise TransportError(f"cannot reach {self.where} over ssh ({e}); check that the device is on and "
                                 f"host/port in {t.source or 'the target file'}") from e
        # keepalives notice a dead link within ~45 s, so is_active() turns False and we reconnect
        client.get_transport().set_keepalive(15)
        self._client = client
        return client

    def run(self, command: str, timeout: float = 120.0, check: bool = True) -> tuple[int, str, str]:
        """Run a shell command on the device: (exit code, stdout, stderr)."""
        try:
            _, out, err = self._ssh().exec_command(command, timeout=timeout)
            stdout = out.read().decode(errors="replace")
            stderr = err.read().decode(errors="replace")
            rc = out.channel.recv_exit_status()
        except _link_errors() as e:   # socket.timeout is an OSError; a dropped session an SSHException
            raise TransportError(f"command on {self.where} failed or timed out after {timeout:.0f}s: "
                                 f"{command.split()[0] if command.split() else command} ({e})") from e
        if check and rc != 0:
            tail = (stderr or stdout).strip().splitlines()[-3:]
            raise TransportError(f"on {self.where}: `{_short(command)}` exited {rc}: {' | '.join(tail)}")
        return rc, stdout, stderr

    @property
    def workdir(self) -> str:
        if not self._workdir:
            wd = self.target.workdir or "~/.edgebench"
            if wd.startswith("~"):
                _, home, _ = self.run("printf %s \"$HOME\"")
                wd = home + wd[1:]
            self._workdir = wd.rstrip("/")
        return self._workdir

    def _p(self, *parts: str) -> str:
        return posixpath.join(self.workdir, *parts)

    @property
    def store_dir(self) -> str:
        return self.target.store_dir or self._p("store")

    def device_facts(self) -> dict[str, str]:
        """machine, Python version, glibc of the device's Python: what picks the wheels it needs."""
        if not self._facts:
            py = shlex.quote(self.target.python)
            code = ("import platform,sys;print(platform.machine());print('%d.%d'%sys.version_info[:2]);"
                    "print(platform.libc_ver()[1] or '2.17');print(platform.node())")
            rc, out, err = self.run(f"{py} -c {shlex.quote(code)}", check=False)
            if rc != 0:
                raise TransportError(f"no usable Python on {self.where} ({self.target.python!r}: "
                                     f"{(err or out).strip()[:200]}); install python3 there or set python = in the target")
            machine, pyver, glibc, node = (out.split("\n") + ["", "", "", ""])[:4]
            self._facts = {"machine": machine, "python_version": pyver, "glibc": glibc, "hostname": node}
        return self._facts

    # ---- bootstrap ------------------------------------------------------------------------------
    def wanted_version(self) -> str:
        return f"{bundle.build_id()} extra={self.target.runtime_extra}"

    def installed_version(self) -> str:
        _, out, _ = self.run(f"cat {shlex.quote(self._p('agent.version'))} 2>/dev/null; "
                             f"test -x {shlex.quote(self._p('venv/bin/agent'))} || echo missing-venv", check=False)
        return "" if "missing-venv" in out else out.strip()

    def _upload(self, sftp: Any, local: Path, remote: str, progress: Progress) -> None:
        try:
            if sftp.stat(remote).st_size == local.stat().st_size:
                return                          # wheels are immutable by name: same size, same file
        except OSError:
            pass
        _say(progress, f"uploading {local.name} ({local.stat().st_size / 1e6:.1f} MB)")
        sftp.put(str(local), remote + ".part")
        sftp.posix_rename(remote + ".part", remote)
        self.stats["uploaded_bytes"] += local.stat().st_size
        self.stats["uploaded_files"] += 1

    def _push_wheels(self, wheel: Path, facts: dict[str, str], progress: Progress) -> str:
        """SFTP the agent wheel (and, for offline devices, the wheelhouse); returns the wheel's device path."""
        t = self.target
        sftp = self._ssh().open_sftp()
        try:
            remote_wheel = self._p("dist", wheel.name)
            # the wheel's name does not change with the checkout; the build id does, so always replace it
            sftp.put(str(wheel), remote_wheel + ".part")
            sftp.posix_rename(remote_wheel + ".part", remote_wheel)
            self.stats["uploaded_bytes"] += wheel.stat().st_size
            self.stats["uploaded_files"] += 1
            if t.wheels_dir:
                house = bundle.device_wheelhouse(t.wheels_dir, wheel, t.runtime_extra, facts["machine"],
                                                 facts["glibc"], facts["python_version"], progress)
                for whl in sorted(house.glob("*.whl")):
                    self._upload(sftp, whl, self._p("wheels", whl.name), progress)
        finally:
            try:
                sftp.close()
            except _link_errors():
                pass                        # the session is already gone; the error that matters is raised
        return remote_wheel

    def bootstrap(self, progress: Progress = None, force: bool = False) -> bool:
        """Install the host's agent on the device if it differs; True if anything was installed."""
        want = self.wanted_version()
        if not force and self.installed_version() == want:
            return False
        t = self.target
        facts = self.device_facts()
        _say(progress, f"bootstrapping agent {want} on {self.where} ({facts['machine']}, Python {facts['python_version']})")
        wheel = bundle.agent_wheel(progress)
        self.run(f"mkdir -p {shlex.quote(self._p('dist'))} {shlex.quote(self._p('wheels'))}")
        try:
            remote_wheel = self._push_wheels(wheel, facts, progress)
        except _link_errors() as e:
            raise TransportError(f"uploading the agent to {self.where} failed ({str(e) or type(e).__name__}); "
                                 "check the link and free space on the device, then retry") from e
        find_links = f"--no-index --find-links {shlex.quote(self._p('wheels'))} " if t.wheels_dir else ""
        venv_py = self._p("venv", "bin", "python")
        rc, _, _ = self.run(f"test -x {shlex.quote(venv_py)}", check=False)
        if rc != 0:
            site = " --system-site-packages" if t.system_site_packages else ""
            _say(progress, f"creating venv {self._p('venv')}{site}")
            self.run(f"{shlex.quote(t.python)} -m venv{site} {shlex.quote(self._p('venv'))}", timeout=300)
        req = f"{remote_wheel}[{t.runtime_extra}]" if t.runtime_extra else remote_wheel
        pip = f"{shlex.quote(venv_py)} -m pip install -q --disable-pip-version-check "
        _say(progress, f"installing agent with extra '{t.runtime_extra or '-'}'"
                       f"{' from pushed wheels' if find_links else ' from the device index'}")
        self.run(pip + find_links + shlex.quote(req), timeout=900)
        # same version number, new code: replace the agent itself without touching its dependencies
        self.run(pip + "--no-deps --force-reinstall --no-index " + shlex.quote(remote_wheel), timeout=300)
        self.stats["pip_installs"] += 1
        self.run(f"printf '%s\\n' {shlex.quote(want)} > {shlex.quote(self._p('agent.version'))}")
        self.stats["bootstraps"] += 1
        return True

    # ---- agent lifecycle ------------------------------------------------------------------------
    def _pid(self) -> Optional[int]:
        """The pid in agent.pid if that process is alive and is our agent (not a recycled pid)."""
        pidf = shlex.quote(self._p("agent.pid"))
        rc, out, _ = self.run(agent_pid_sh(f"$(cat {pidf} 2>/dev/null)") + ' && echo "$p"', check=False)
        return int(out.strip()) if rc == 0 and out.strip().isdigit() else None

    def _exists(self, pid: int) -> bool:
        """The process (a zombie too) is still there: what stop_agent waits out."""
        return self.run(f"kill -0 {int(pid)} 2>/dev/null", check=False)[0] == 0

    def _is_agent(self, pid: int) -> bool:
        return self.run(agent_pid_sh(str(int(pid))), check=False)[0] == 0

    def _port(self) -> int:
        _, out, _ = self.run(f"cat {shlex.quote(self._p('agent.port'))} 2>/dev/null", check=False)
        return int(out.strip()) if out.strip().isdigit() else self.target.agent_port

    def agent_status(self) -> dict[str, Any]:
        pid = self._pid()
        installed = self.installed_version()
        return {"running": pid is not None, "pid": pid, "port": self._port() if pid else self.target.agent_port,
                "log": self._p("agent.log"), "workdir": self.workdir, "installed": installed,
                "host_build": self.wanted_version(), "up_to_date": installed == self.wanted_version(),
                "device": dict(self.device_facts()), "where": self.where}

    def start_agent(self, progress: Progress = None, timeout: float = 120.0) -> dict[str, Any]:
        pid = self._pid()
        installed = self.bootstrap(progress)
        if pid is not None and installed:
            _say(progress, "stopping the previous agent (new version installed)")
            self.stop_agent()
            pid = None
        if pid is not None:
            return {"started": False, "pid": pid, "port": self._port(), "log": self._p("agent.log")}
        t = self.target
        wd = shlex.quote(self.workdir)
        args = ["serve", "--listen", f"127.0.0.1:{t.agent_port}", "--store", self.store_dir,
                "--pid-file", self._p("agent.pid"), "--port-file", self._p("agent.port")]
        if t.cpu_affinity:
            args += ["--cpu-affinity", t.cpu_affinity]
        cmd = " ".join(shlex.quote(a) for a in [self._p("venv", "bin", "agent")] + args)
        log = shlex.quote(self._p("agent.log"))
        _say(progress, f"starting agent on {self.where} (127.0.0.1:{t.agent_port} on the device)")
        # setsid -f: its own session, so it outlives this SSH session; fallback for setsid without -f
        self.run(f"cd {wd} && rm -f agent.port && mkdir -p {shlex.quote(self.store_dir)} && "
                 f"if setsid -f true 2>/dev/null; then setsid -f {cmd} >>{log} 2>&1 </dev/null; "
                 f"else nohup {cmd} >>{log} 2>&1 </dev/null & fi")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            _, out, _ = self.run(f"cat {shlex.quote(self._p('agent.port'))} 2>/dev/null", check=False)
            if out.strip().isdigit():
                pid = self._pid()
                return {"started": True, "pid": pid, "port": int(out.strip()), "log": self._p("agent.log")}
            time.sleep(0.5)
        raise TransportError(f"agent on {self.where} did not start within {timeout:.0f}s; last log lines: "
                             f"{' | '.join(self.logs(5).strip().splitlines()[-5:])}")

    def stop_agent(self, timeout: float = 15.0) -> bool:
        pid = self._pid()
        if pid is None:
            return False
        self.run(f"kill {pid}", check=False)
        deadline = time.monotonic() + timeout
        # wait for the process itself: the agent removes its pid file before it has quite exited
        while time.monotonic() < deadline and self._exists(pid):
            time.sleep(0.3)
        if self._is_agent(pid):         # still our agent (not a pid recycled meanwhile): force it
            self.run(f"kill -9 {pid}; rm -f {shlex.quote(self._p('agent.pid'))}", check=False)
        self.run(f"rm -f {shlex.quote(self._p('agent.port'))}", check=False)
        return True

    def logs(self, lines: int = 100) -> str:
        _, out, _ = self.run(f"tail -n {int(lines)} {shlex.quote(self._p('agent.log'))} 2>/dev/null", check=False)
        return out

    def connect(self, progress: Progress = None) -> str:
        info = self.start_agent(progress)
        if self._forward is not None and self._forward.remote[1] == info["port"] and self._forward.is_alive():
            return f"127.0.0.1:{self._forward.port}"
        if self._forward is not None:
            self._forward.close()
        # the tunnel reopens the session through _ssh() if it drops (same checks, same one-line errors)
        self._forward = _Forwarder(self._ssh().get_transport(), info["port"],
                                   reconnect=lambda: self._ssh().get_transport())
        self._forward.start()
        _say(progress, f"tunnel 127.0.0.1:{self._forward.port} -> {self.where} 127.0.0.1:{info['port']}")
        address = f"127.0.0.1:{self._forward.port}"
        _wait_ready(address)
        self.remember_secret(address)
        return address

    def remember_secret(self, address: str) -> None:
        """Read the agent's secret (0600, as the device user the agent runs as) so calls through `address` carry it."""
        from host.client import remember_agent

        path = posixpath.join(self.store_dir, "agent.secret")
        rc, out, err = self.run(f"cat {shlex.quote(path)}", check=False)
        if rc != 0 or not out.strip():
            raise TransportError(f"cannot read the agent's secret {path} on {self.where}: "
                                 f"{(err or 'empty').strip()[:200]}; restart the agent (host agent stop/start)")
        remember_agent(address, out.strip())

    def close(self) -> None:
        if self._forward is not None:
            self._forward.close()
            self._forward = None
        if self._client is not None:
            self._client.close()
            self._client = None


def _wait_ready(address: str, timeout: float = 30.0) -> None:
    from host.client import AgentClient

    with AgentClient(address) as c:
        c.wait_ready(timeout)


def _short(command: str, n: int = 80) -> str:
    return command if len(command) <= n else command[: n - 3] + "..."
