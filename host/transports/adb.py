"""adb transport: the real `adb` client (Debian package adb) drives an Android device.

The device needs a Python with grpcio, protobuf and numpy (and a runtime, e.g. ai-edge-litert), such as
one installed where the `adb shell` user may execute it (`target.python`; Termux's own lives in its
private app directory, which the shell user cannot run). The host pushes the agent as one zip (agent +
protos packages; Python imports from it through PYTHONPATH), starts it through `adb shell` in a session
of its own (`setsid CMD &`, or `nohup` where there is no setsid) so it outlives the shell, and
reaches its loopback port with `adb forward tcp:0 tcp:<agent port>` (removed on close()).

Layout on the device, under target.workdir (default for adb: /data/local/tmp/edgebench):
    agent-<build>.pyz, agent.version, agent.pid, agent.port, agent.log, store/

A TCP device (target.adb_connect = 'host:port') that restarted leaves the adb server with a stale
"offline" transport: the transport disconnects and reconnects it. The adb server port follows adb's own
ANDROID_ADB_SERVER_PORT.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import time
from typing import Any, Optional

from host.transports import bundle
from host.transports.base import Progress, Transport, TransportError, agent_pid_sh

DEFAULT_WORKDIR = "/data/local/tmp/edgebench"
# the properties that describe an Android device in an environment record
FACT_PROPS = ("ro.product.manufacturer", "ro.product.model", "ro.product.device", "ro.product.name",
              "ro.build.version.release", "ro.build.version.sdk", "ro.build.fingerprint", "ro.product.cpu.abi",
              "ro.board.platform", "ro.hardware", "ro.soc.manufacturer", "ro.soc.model", "ro.serialno")
_PROP_LINE = re.compile(r"^\[(.+?)\]: \[(.*)\]$")


def _say(progress: Progress, msg: str) -> None:
    if progress:
        progress(msg)


class AdbTransport(Transport):
    kind = "adb"

    def __init__(self, target: Any):
        super().__init__(target)
        self.adb = shutil.which("adb") or ""
        self.serial = target.serial or target.adb_connect
        self._forward_port: Optional[int] = None
        self.stats = {"pushed_bytes": 0, "reconnects": 0}

    # ---- the adb client -------------------------------------------------------------------------
    def _cmd(self, *args: str, timeout: float = 60.0, serial: bool = True,
             check: bool = True) -> subprocess.CompletedProcess:
        if not self.adb:
            raise TransportError("the adb transport needs the adb client: apt-get install adb "
                                 "(or Android platform-tools on PATH)")
        argv = [self.adb] + (["-s", self.serial] if serial and self.serial else []) + list(args)
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            raise TransportError(f"adb {' '.join(args[:2])} on {self.serial or 'the device'} timed out after "
                                 f"{timeout:.0f}s; check the cable/network and `adb devices`") from e
        if check and r.returncode != 0:
            raise TransportError(f"adb {' '.join(args[:2])} failed on {self.serial or 'the device'}: "
                                 f"{_last(r.stderr or r.stdout)}")
        return r

    def state(self) -> str:
        """'device', 'offline', 'unauthorized', or 'missing'."""
        r = self._cmd("get-state", check=False, timeout=15)
        if r.returncode == 0:
            return r.stdout.strip()
        err = (r.stderr + r.stdout).lower()
        for s in ("offline", "unauthorized"):
            if s in err:
                return s
        return "missing"

    def ensure_device(self, progress: Progress = None, timeout: float = 20.0) -> None:
        """The device is attached and online; TCP devices are (re)connected, stale transports dropped."""
        if not self.serial:
            raise TransportError(f"target {self.target.name}: set serial = \"...\" (see `adb devices`) or "
                                 "adb_connect = \"host:port\"")
        self._cmd("start-server", serial=False, timeout=30)
        st = self.state()
        if st == "device":
            return
        hp = self.target.adb_connect
        if st == "unauthorized":
            raise TransportError(f"device {self.serial} is unauthorized: accept the USB debugging prompt on it")
        if not hp:
            raise TransportError(f"device {self.serial} is {st}: check the USB cable and `adb devices`")
        if st == "offline":
            # the adb server holds a transport from before the device restarted: drop it first
            _say(progress, f"{hp} is offline: reconnecting")
            self._cmd("disconnect", hp, serial=False, check=False)
            self.stats["reconnects"] += 1
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            r = self._cmd("connect", hp, serial=False, check=False, timeout=15)
            last = _last(r.stdout + r.stderr)
            if self.state() == "device":
                return
            time.sleep(0.5)
        raise TransportError(f"cannot connect to {hp} over adb ({last}); is adbd listening "
                             "(adb tcpip 5555) and the device on the network?")

    def shell(self, command: str, timeout: float = 60.0, check: bool = True) -> tuple[int, str, str]:
        """Run a command through `adb shell` (shell v2: real exit code, separate stderr)."""
        r = self._cmd("shell", command, timeout=timeout, check=False)
        if check and r.returncode != 0:
            raise TransportError(f"on {self.serial}: `{command[:80]}` exited {r.returncode}: "
                                 f"{_last(r.stderr or r.stdout)}")
        return r.returncode, r.stdout, r.stderr

    def push(self, local: str, remote: str, timeout: float = 600.0) -> None:
        self._cmd("push", local, remote, timeout=timeout)

    @property
    def workdir(self) -> str:
        wd = self.target.workdir
        # the Target default (~/.edgebench) means nothing to adbd's shell user: use Android's scratch dir
        return (DEFAULT_WORKDIR if not wd or wd.startswith("~") else wd).rstrip("/")

    def _p(self, name: str) -> str:
        return f"{self.workdir}/{name}"

    @property
    def store_dir(self) -> str:
        return self.target.store_dir or self._p("store")

    # ---- facts ----------------------------------------------------------------------------------
    def device_facts(self) -> dict[str, str]:
        """Android properties (getprop) and thermal status, for the environment record."""
        self.ensure_device()
        _, out, _ = self.shell("getprop", check=False)
        props = {}
        for line in out.splitlines():
            m = _PROP_LINE.match(line.strip())
            if m:
                props[m.group(1)] = m.group(2)
        facts = {k: props[k] for k in FACT_PROPS if k in props}
        rc, out, _ = self.shell("dumpsys thermalservice 2>/dev/null | grep -i 'thermal status'", check=False)
        if rc == 0 and out.strip():
            facts["thermal_status"] = out.strip().splitlines()[0].split(":")[-1].strip()
        return facts

    # ---- agent bundle ---------------------------------------------------------------------------
    def installed_version(self) -> str:
        _, out, _ = self.shell(f"cat {shlex.quote(self._p('agent.version'))} 2>/dev/null", check=False)
        return out.strip()

    def check_python(self) -> None:
        """The target's `python` is something the shell user can execute (one clear line if not)."""
        py = shlex.quote(self.target.python)
        # a bare name (python3) is looked up on the shell's PATH; a path must be executable
        if self.shell(f"case {py} in */*) test -x {py} ;; *) command -v {py} >/dev/null ;; esac",
                      check=False)[0] != 0:
            raise TransportError(
                f"{self.serial}: python = \"{self.target.python}\" (target {self.target.name}"
                f"{', ' + self.target.source if self.target.source else ''}) is not executable by the adb shell "
                "user; point it at a Python installed under /data/local/tmp (see targets/android.toml)")

    def bootstrap(self, progress: Progress = None, force: bool = False) -> bool:
        """Push the agent bundle when the device's differs from this checkout; True if pushed."""
        bid = bundle.build_id()
        if not force and self.installed_version() == bid:
            return False
        pyz = bundle.agent_zipapp(progress)
        _say(progress, f"pushing agent {bid} to {self.serial}:{self.workdir}")
        self.shell(f"mkdir -p {shlex.quote(self.workdir)}")
        self.push(str(pyz), self._p("agent.pyz"))
        self.stats["pushed_bytes"] += pyz.stat().st_size
        py = shlex.quote(self.target.python)
        rc, out, err = self.shell(f"PYTHONPATH={shlex.quote(self._p('agent.pyz'))} {py} -m agent.cli --version",
                                  check=False)
        if rc != 0:
            raise TransportError(f"the device's Python ({self.target.python}) cannot run the agent: "
                                 f"{_last(err or out)}; it needs grpcio, protobuf and numpy "
                                 "(pip install grpcio protobuf numpy and a runtime into that Python)")
        self.shell(f"echo {shlex.quote(bid)} > {shlex.quote(self._p('agent.version'))}")
        return True

    # ---- agent lifecycle ------------------------------------------------------------------------
    def _pid(self) -> Optional[int]:
        """The pid in agent.pid if that process is alive and is our agent (not a recycled pid)."""
        pidf = shlex.quote(self._p("agent.pid"))
        rc, out, _ = self.shell(agent_pid_sh(f"$(cat {pidf} 2>/dev/null)") + ' && echo "$p"', check=False)
        return int(out.strip()) if rc == 0 and out.strip().isdigit() else None

    def _exists(self, pid: int) -> bool:
        """The process (a zombie too) is still there: what stop_agent waits out."""
        return self.shell(f"kill -0 {int(pid)} 2>/dev/null", check=False)[0] == 0

    def _is_agent(self, pid: int) -> bool:
        return self.shell(agent_pid_sh(str(int(pid))), check=False)[0] == 0

    def _port(self) -> int:
        _, out, _ = self.shell(f"cat {shlex.quote(self._p('agent.port'))} 2>/dev/null", check=False)
        return int(out.strip()) if out.strip().isdigit() else self.target.agent_port

    def agent_status(self) -> dict[str, Any]:
        self.ensure_device()
        pid = self._pid()
        installed = self.installed_version()
        return {"running": pid is not None, "pid": pid, "port": self._port() if pid else self.target.agent_port,
                "log": self._p("agent.log"), "workdir": self.workdir, "installed": installed,
                "host_build": bundle.build_id(), "up_to_date": installed == bundle.build_id(),
                "serial": self.serial, "device": self.device_facts()}

    def start_agent(self, progress: Progress = None, timeout: float = 60.0) -> dict[str, Any]:
        self.ensure_device(progress)
        self.check_python()
        pid = self._pid()
        pushed = self.bootstrap(progress)
        if pid is not None and pushed:
            _say(progress, "stopping the previous agent (new version pushed)")
            self.stop_agent()
            pid = None
        if pid is not None:
            return {"started": False, "pid": pid, "port": self._port(), "log": self._p("agent.log")}
        t = self.target
        args = ["-m", "agent.cli", "serve", "--listen", f"127.0.0.1:{t.agent_port}", "--store", self.store_dir,
                "--pid-file", self._p("agent.pid"), "--port-file", self._p("agent.port")]
        if t.cpu_affinity:
            args += ["--cpu-affinity", t.cpu_affinity]
        cmd = " ".join(shlex.quote(a) for a in [t.python] + args)
        _say(progress, f"starting agent on {self.serial} (127.0.0.1:{t.agent_port} on the device)")
        env = f"PYTHONPATH={shlex.quote(self._p('agent.pyz'))}"
        redir = f">>{shlex.quote(self._p('agent.log'))} 2>&1 </dev/null &"
        # Leave adbd's session so the agent survives the end of this shell. Android's toybox setsid has
        # no -f (util-linux's does); plain `setsid CMD &` works with both: a background job of a
        # non-interactive sh is no process-group leader, so setsid() succeeds in place, no fork, and
        # the pid stays the agent's. No setsid at all: nohup at least ignores the hang-up.
        self.shell(f"cd {shlex.quote(self.workdir)} && rm -f agent.port && "
                   f"if command -v setsid >/dev/null 2>&1; then {env} setsid {cmd} {redir} "
                   f"else {env} nohup {cmd} {redir} fi")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            _, out, _ = self.shell(f"cat {shlex.quote(self._p('agent.port'))} 2>/dev/null", check=False)
            if out.strip().isdigit():
                return {"started": True, "pid": self._pid(), "port": int(out.strip()), "log": self._p("agent.log")}
            time.sleep(0.3)
        raise TransportError(f"agent on {self.serial} did not start within {timeout:.0f}s; last log lines: "
                             f"{' | '.join(self.logs(5).strip().splitlines()[-5:])}")

    def stop_agent(self, timeout: float = 15.0) -> bool:
        self.ensure_device()
        pid = self._pid()
        if pid is None:
            return False
        self.shell(f"kill {pid}", check=False)
        deadline = time.monotonic() + timeout
        # wait for the process itself: the agent removes its pid file before it has quite exited
        while time.monotonic() < deadline and self._exists(pid):
            time.sleep(0.3)
        if self._is_agent(pid):         # still our agent (not a pid recycled meanwhile): force it
            self.shell(f"kill -9 {pid}; rm -f {shlex.quote(self._p('agent.pid'))}", check=False)
        self.shell(f"rm -f {shlex.quote(self._p('agent.port'))}", check=False)
        return True

    def logs(self, lines: int = 100) -> str:
        _, out, _ = self.shell(f"tail -n {int(lines)} {shlex.quote(self._p('agent.log'))} 2>/dev/null", check=False)
        return out

    def connect(self, progress: Progress = None) -> str:
        info = self.start_agent(progress)
        self._remove_forward()
        r = self._cmd("forward", "tcp:0", f"tcp:{info['port']}")
        port = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
        if not port.isdigit():
            raise TransportError(f"adb forward gave no local port ({_last(r.stdout + r.stderr)})")
        self._forward_port = int(port)
        _say(progress, f"adb forward 127.0.0.1:{port} -> {self.serial} 127.0.0.1:{info['port']}")
        try:
            self._authenticate(f"127.0.0.1:{port}")
        except BaseException:
            self._remove_forward()   # a failed connect leaves no forward behind on the adb server
            raise
        return f"127.0.0.1:{port}"

    def _authenticate(self, address: str) -> None:
        from host.client import AgentClient, remember_agent

        # the agent's secret, readable by the shell user the agent runs as: every call must carry it
        path = f"{self.store_dir}/agent.secret"
        rc, out, err = self.shell(f"cat {shlex.quote(path)}", check=False)
        if rc != 0 or not out.strip():
            raise TransportError(f"cannot read the agent's secret {path} on {self.serial}: "
                                 f"{_last(err or out)}; restart the agent (host agent stop/start)")
        remember_agent(address, out.strip())
        with AgentClient(address) as c:
            c.wait_ready(30)

    def _remove_forward(self) -> None:
        if self._forward_port is not None:
            self._cmd("forward", "--remove", f"tcp:{self._forward_port}", check=False, timeout=15)
            self._forward_port = None

    def close(self) -> None:
        if self.adb and self.serial:
            self._remove_forward()


def _last(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "(no output)"
