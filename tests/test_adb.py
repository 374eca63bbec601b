"""The real Debian `adb` client and server against the device stand-in (tests/adb_standin.py).

Each module run uses a private adb server port (ANDROID_ADB_SERVER_PORT, which adb itself reads), so
it never touches a developer's adb server, and kills that server at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from host.targets import Target
from tests.conftest import echo_server

HERE = Path(__file__).resolve().parent
ADB = shutil.which("adb")
pytestmark = pytest.mark.skipif(ADB is None, reason="needs the adb client: apt-get install adb")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StandIn:
    """The stand-in device as a child process; restartable on the same port."""

    def __init__(self, workdir: Path, props: tuple[str, ...] = ()):
        self.dir, self.props = workdir, props
        self.port = _free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def serial(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> StandIn:
        pf = self.dir / "standin.port"
        pf.unlink(missing_ok=True)
        cmd = [sys.executable, str(HERE / "adb_standin.py"), "--port", str(self.port), "--port-file", str(pf)]
        for p in self.props:
            cmd += ["--prop", p]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(self.dir / "standin.log", "ab"),
                                     start_new_session=True)
        deadline = time.monotonic() + 15
        while not pf.exists():
            assert self.proc.poll() is None, (self.dir / "standin.log").read_text()
            assert time.monotonic() < deadline, "stand-in did not start"
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def adb_env(tmp_path_factory):
    """A private adb server for this module; killed at the end."""
    old = os.environ.get("ANDROID_ADB_SERVER_PORT")
    os.environ["ANDROID_ADB_SERVER_PORT"] = str(_free_port())
    subprocess.run([ADB, "start-server"], check=True, capture_output=True, timeout=30)
    yield os.environ["ANDROID_ADB_SERVER_PORT"]
    subprocess.run([ADB, "kill-server"], capture_output=True, timeout=30)
    if old is None:
        os.environ.pop("ANDROID_ADB_SERVER_PORT", None)
    else:
        os.environ["ANDROID_ADB_SERVER_PORT"] = old


@pytest.fixture(scope="module")
def device(adb_env, tmp_path_factory):
    d = StandIn(tmp_path_factory.mktemp("standin"), props=("ro.product.model=Pixel Stand-in",
                                                          "ro.build.version.sdk=34")).start()
    r = subprocess.run([ADB, "connect", d.serial], capture_output=True, text=True, timeout=30)
    assert "connected" in r.stdout, r.stdout + r.stderr
    yield d
    subprocess.run([ADB, "disconnect", d.serial], capture_output=True, timeout=30)
    d.stop()


def adb(device: StandIn, *args: str, input: bytes | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([ADB, "-s", device.serial, *args], capture_output=True, input=input, timeout=timeout,
                          stdin=None if input is not None else subprocess.DEVNULL)


def test_devices_lists_the_standin_with_its_banner(device):
    out = subprocess.run([ADB, "devices", "-l"], capture_output=True, text=True, timeout=30).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith(device.serial))
    assert "device" in line.split()[1]
    assert "model:Pixel_Stand_in" in line


def test_shell_v2_exit_codes_split_stderr_and_stdin(device):
    r = adb(device, "shell", "echo out; echo err >&2; exit 7")
    assert (r.returncode, r.stdout, r.stderr) == (7, b"out\n", b"err\n")
    r = adb(device, "shell", "wc -c", input=b"x" * 300_000)
    assert r.returncode == 0 and int(r.stdout) == 300_000
    r = adb(device, "shell", "getprop ro.product.model")
    assert r.stdout.decode().strip() == "Pixel Stand-in"


def test_push_and_pull_roundtrip_over_several_payloads(device, tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 123)       # > 1 MiB max payload: many WRTE/OKAY rounds
    src = tmp_path / "blob.bin"
    src.write_bytes(data)
    remote = tmp_path / "device" / "sub" / "blob.bin"
    r = adb(device, "push", str(src), str(remote))
    assert r.returncode == 0, r.stderr
    assert remote.read_bytes() == data
    r = adb(device, "shell", f"stat -c %s {remote}")
    assert int(r.stdout) == len(data)
    back = tmp_path / "back.bin"
    assert adb(device, "pull", str(remote), str(back)).returncode == 0
    assert back.read_bytes() == data
    r = adb(device, "pull", str(tmp_path / "missing"), str(tmp_path / "x"))
    assert r.returncode != 0 and b"does not exist" in r.stdout + r.stderr


def _roundtrip(port: int, payload: bytes) -> bytes:
    # no half-close: adb closes the whole stream when one side shuts down writing
    with socket.create_connection(("127.0.0.1", port), timeout=20) as c:
        got = bytearray()
        threading.Thread(target=c.sendall, args=(payload,), daemon=True).start()
        while len(got) < len(payload) and (chunk := c.recv(65536)):
            got += chunk
    return bytes(got)


def test_forward_and_reverse_carry_bytes_both_ways(device):
    srv = echo_server()
    port = srv.getsockname()[1]
    payload = os.urandom(2 * 1024 * 1024)
    try:
        r = adb(device, "forward", "tcp:0", f"tcp:{port}")
        local = int(r.stdout)
        assert _roundtrip(local, payload) == payload
        assert f"tcp:{local} tcp:{port}" in adb(device, "forward", "--list").stdout.decode()
        assert adb(device, "forward", "--remove", f"tcp:{local}").returncode == 0
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", local), timeout=5).close()
        # reverse: a port on the device that reaches the host's echo server
        dev_port = _free_port()
        assert adb(device, "reverse", f"tcp:{dev_port}", f"tcp:{port}").returncode == 0
        assert f"tcp:{dev_port} tcp:{port}" in adb(device, "reverse", "--list").stdout.decode()
        assert _roundtrip(dev_port, payload[:100_000]) == payload[:100_000]
        assert adb(device, "reverse", "--remove-all").returncode == 0
        assert adb(device, "reverse", "--list").stdout.strip() == b""
    finally:
        srv.close()


def _target(device: StandIn, tmp_path: Path, name: str = "phone") -> Target:
    return Target(name=name, kind="android", transport="adb", serial=device.serial, adb_connect=device.serial,
                  python=sys.executable, workdir=str(tmp_path / "data/local/tmp/edgebench"), agent_port=0)


def test_agent_started_through_adb_shell(device, tmp_path):
    import grpc

    from host.transports.adb import AdbTransport
    from protos import edge_agent_pb2 as pb
    from protos import edge_agent_pb2_grpc as pb_grpc

    t = AdbTransport(_target(device, tmp_path))
    events: list[str] = []
    try:
        address = t.connect(events.append)
        assert any(e.startswith("pushing agent") for e in events)
        # the transport brought the agent's secret back (adb shell cat): a plain channel is refused, its client not
        with pytest.raises(grpc.RpcError) as refused:
            pb_grpc.AgentStub(grpc.insecure_channel(address)).GetInfo(pb.GetInfoRequest(), timeout=30)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        from host.client import AgentClient

        info = AgentClient(address).stub.GetInfo(pb.GetInfoRequest(), timeout=30)
        status = t.agent_status()
        # the agent outlived the `adb shell` that started it and is the process the pid file names
        assert status["running"] and status["pid"] == info.pid
        assert os.getsid(info.pid) == info.pid      # setsid applied in place: a session of its own
        assert status["up_to_date"]
        assert status["device"]["ro.product.model"] == "Pixel Stand-in"
        assert status["device"]["ro.build.version.sdk"] == "34"
        fwd = int(address.rsplit(":", 1)[1])
        assert f"tcp:{fwd} tcp:{status['port']}" in adb(device, "forward", "--list").stdout.decode()
        # a second connect reuses the running agent and pushes nothing
        t2 = AdbTransport(_target(device, tmp_path))
        assert t2.connect() and t2.stats["pushed_bytes"] == 0
        t2.close()
        # a connect that fails after its forward was made (here: the secret is unreadable) removes the forward
        from host.transports.base import TransportError

        secret = f"{t.store_dir}/agent.secret"
        t.shell(f"mv {secret} {secret}.away")
        forwards = adb(device, "forward", "--list").stdout.decode()
        with pytest.raises(TransportError, match="agent's secret"):
            AdbTransport(_target(device, tmp_path)).connect()
        assert adb(device, "forward", "--list").stdout.decode() == forwards
        t.shell(f"mv {secret}.away {secret}")
        assert t.stop_agent() is True
        assert t.agent_status()["running"] is False
        with pytest.raises(ProcessLookupError):
            os.kill(info.pid, 0)
        assert "listening on" in t.logs()
    finally:
        t.stop_agent()
        t.close()
    assert f"tcp:{fwd} " not in adb(device, "forward", "--list").stdout.decode()   # forwards removed on close


def test_standin_setsid_is_toyboxs_without_f(device):
    # Android's toybox setsid has only -c -d -w: a transport using `setsid -f` fails on real phones,
    # so it must fail here too (the agent start test above then covers the form that works)
    r = adb(device, "shell", "setsid -f true")
    assert r.returncode != 0 and b"Unknown option" in r.stderr
    assert adb(device, "shell", "setsid true").returncode == 0


def test_python_the_shell_user_cannot_run_is_one_clear_line(device, tmp_path):
    from host.transports.adb import AdbTransport
    from host.transports.base import TransportError

    t = _target(device, tmp_path)
    t.python = "/data/data/com.termux/files/usr/bin/python"     # Termux's private dir: not for adb shell
    tr = AdbTransport(t)
    with pytest.raises(TransportError) as ei:
        tr.start_agent()
    msg = str(ei.value)
    assert "\n" not in msg and f'python = "{t.python}"' in msg and "not executable" in msg
    assert tr.stats["pushed_bytes"] == 0                         # checked before anything is pushed


def test_stale_pid_file_naming_an_unrelated_process_is_not_the_agent(device, tmp_path):
    from host.transports.adb import AdbTransport

    t = _target(device, tmp_path)
    tr = AdbTransport(t)
    # after a reboot agent.pid names a pid that now belongs to something else
    other = subprocess.Popen(["sleep", "60"])
    try:
        wd = Path(t.workdir)
        wd.mkdir(parents=True)
        (wd / "agent.pid").write_text(f"{other.pid}\n")
        (wd / "agent.port").write_text("1\n")
        assert tr.agent_status()["running"] is False
        assert tr.stop_agent() is False
        assert other.poll() is None, "stop_agent killed a process that is not the agent"
    finally:
        other.kill()
        other.wait()


def test_deploy_through_the_adb_transport(device, tmp_path, tflite_int8_model, monkeypatch, capsys):
    from host.cli import main
    from host.transports.adb import AdbTransport

    tdir = tmp_path / "targets"
    tdir.mkdir()
    t = _target(device, tmp_path, name="standin-phone")
    (tdir / "standin-phone.toml").write_text(
        f'name = "standin-phone"\nkind = "android"\ntransport = "adb"\nserial = "{t.serial}"\n'
        f'adb_connect = "{t.adb_connect}"\npython = "{t.python}"\nworkdir = "{t.workdir}"\nagent_port = 0\n')
    monkeypatch.setenv("EDGEBENCH_TARGETS", str(tdir))
    try:
        rc = main(["deploy", "--target", "standin-phone", "--artifact", str(tflite_int8_model), "--runs", "20",
                   "--min-seconds", "0.2", "--max-seconds", "3", "--db", str(tmp_path / "r.sqlite"), "--json"])
        out = capsys.readouterr()
        assert rc == 0, out.err[-2000:]
        (rec,) = json.loads(out.out)
        assert rec["target"] == "standin-phone" and rec["runtime"]["name"] == "litert"
        assert rec["runs"] >= 20 and 0 < rec["latency_ms"]["p50"] < 1000
        assert "[standin-phone] starting agent" in out.err
    finally:
        AdbTransport(t).stop_agent()


def test_recovers_after_the_device_restarts(adb_env, tmp_path):
    """The reconnect path, without racing the adb server's own retry: the device is still down when
    `ensure_device` looks (so it must see "offline" and take the disconnect + connect path) and comes back
    only while the transport is already retrying; the adb server alone would wait out its backoff."""
    from host.transports.adb import AdbTransport

    d = StandIn(tmp_path).start()
    t = AdbTransport(_target(d, tmp_path))
    try:
        t.ensure_device()
        assert t.shell("echo first")[1] == "first\n"
        d.stop()
        deadline = time.monotonic() + 10
        while t.state() != "offline" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert t.state() == "offline"   # the device is down: nothing can bring it back before ensure_device
        up_at: list[float] = []
        restart = threading.Timer(1.0, lambda: (d.start(), up_at.append(time.monotonic())))
        restart.start()
        t.ensure_device()
        restart.join()
        assert t.stats["reconnects"] == 1
        assert up_at and time.monotonic() - up_at[0] < 4   # back within seconds of the device's return
        assert t.shell("echo again")[1] == "again\n"
    finally:
        subprocess.run([ADB, "disconnect", d.serial], capture_output=True, timeout=30)
        d.stop()
