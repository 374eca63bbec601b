"""The SSH transport against a real sshd (Debian openssh-server) on loopback with throwaway keys.

The "device" is this machine: its /usr/bin/python3 creates the agent's venv offline, from the agent
wheel built from this checkout plus wheels for grpcio/protobuf/numpy/ai-edge-litert that the host
downloads once for the device's platform (cached in $EDGEBENCH_TEST_WHEELS, default
~/.cache/edgebench-test-wheels) and pushes over SFTP (target.wheels_dir).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import threading
from pathlib import Path

import pytest

from host.targets import Target
from tests.conftest import echo_server
from tests.sshd_fixture import Sshd, sshd_skip_reason

pytestmark = [pytest.mark.root, pytest.mark.skipif(sshd_skip_reason() is not None, reason=str(sshd_skip_reason()))]

DEVICE_PYTHON = "/usr/bin/python3"
WHEELS = os.environ.get("EDGEBENCH_TEST_WHEELS", os.path.expanduser("~/.cache/edgebench-test-wheels"))


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    kh = tmp_path_factory.mktemp("kh") / "known_hosts"
    old = os.environ.get("EDGEBENCH_KNOWN_HOSTS")
    os.environ["EDGEBENCH_KNOWN_HOSTS"] = str(kh)
    with Sshd(tmp_path_factory.mktemp("sshd")) as s:
        yield s
    if old is None:
        os.environ.pop("EDGEBENCH_KNOWN_HOSTS", None)
    else:
        os.environ["EDGEBENCH_KNOWN_HOSTS"] = old


def _target(sshd: Sshd, workdir: Path, **kw) -> Target:
    base = dict(name="sshdev", kind="linux", transport="ssh", host="127.0.0.1", port=sshd.port, user="root",
                key=str(sshd.client_key), workdir=str(workdir), python=DEVICE_PYTHON, wheels_dir=WHEELS,
                agent_port=0)
    base.update(kw)
    return Target(**base)


@pytest.fixture(scope="module")
def wheelhouse():
    """Wheels for this machine as a device (offline check first; downloaded from PyPI only once)."""
    if not os.path.exists(DEVICE_PYTHON):
        pytest.skip(f"needs {DEVICE_PYTHON} (Debian python3 with python3-venv) to play the device")
    from host.transports import bundle
    from host.transports.base import TransportError

    try:
        wheel = bundle.agent_wheel()
        return bundle.device_wheelhouse(WHEELS, wheel, "tflite", os.uname().machine, "2.36",
                                        f"{sys.version_info[0]}.{sys.version_info[1]}")
    except TransportError as e:
        pytest.skip(f"needs wheels for grpcio/protobuf/numpy/ai-edge-litert in {WHEELS} "
                    f"(one pip download with PyPI reachable): {e}")


def test_exec_sftp_and_tunnel(sshd, tmp_path):
    from host.transports.ssh import SSHTransport, _Forwarder

    t = SSHTransport(_target(sshd, tmp_path / "dev"))
    try:
        assert t.run("echo out; echo err >&2; exit 5", check=False) == (5, "out\n", "err\n")
        facts = t.device_facts()
        assert facts["machine"] == os.uname().machine and facts["python_version"].startswith("3.")
        # SFTP upload lands byte for byte
        data = os.urandom(2_000_000)
        (tmp_path / "blob").write_bytes(data)
        sftp = t._ssh().open_sftp()
        sftp.put(str(tmp_path / "blob"), str(tmp_path / "uploaded"))
        sftp.close()
        assert (tmp_path / "uploaded").read_bytes() == data
        # a direct-tcpip tunnel to a port on the device's loopback carries bytes both ways
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)

        def echo() -> None:
            c, _ = srv.accept()
            with c:
                while chunk := c.recv(65536):
                    c.sendall(chunk)

        threading.Thread(target=echo, daemon=True).start()
        fwd = _Forwarder(t._ssh().get_transport(), srv.getsockname()[1])
        fwd.start()
        with socket.create_connection(("127.0.0.1", fwd.port), timeout=20) as c:
            threading.Thread(target=c.sendall, args=(data,), daemon=True).start()
            got = bytearray()
            while len(got) < len(data) and (chunk := c.recv(65536)):
                got += chunk
        assert bytes(got) == data
        fwd.close()
        srv.close()
    finally:
        t.close()


def _echo_through(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as c:
        c.sendall(payload)
        got = bytearray()
        while len(got) < len(payload) and (chunk := c.recv(65536)):
            got += chunk
    return bytes(got)


def test_tunnel_reopens_a_dropped_session(sshd, tmp_path):
    from host.transports.ssh import SSHTransport, _Forwarder

    t = SSHTransport(_target(sshd, tmp_path / "dev"))
    srv = echo_server()
    port = srv.getsockname()[1]
    fwd = _Forwarder(t._ssh().get_transport(), port, reconnect=lambda: t._ssh().get_transport())
    stuck = _Forwarder(t._ssh().get_transport(), port)          # the same, but with no way to reconnect
    fwd.start()
    stuck.start()
    try:
        assert _echo_through(fwd.port, b"before") == b"before"
        t._client.get_transport().close()                        # the session drops (device rebooted, ...)
        assert _echo_through(fwd.port, b"after") == b"after"     # a fresh session carries new connections
        assert fwd.reconnects == 1 and t._client.get_transport().is_active()
        with socket.create_connection(("127.0.0.1", stuck.port), timeout=20) as c:
            assert c.recv(1) == b""                                # dropped, with a reason, not a traceback
        assert "ssh session for the tunnel to 127.0.0.1:" in stuck.last_error
    finally:
        fwd.close()
        stuck.close()
        srv.close()
        t.close()


def test_paramiko_errors_on_a_dead_session_become_one_line(sshd, tmp_path, monkeypatch):
    from host.transports import bundle
    from host.transports.base import TransportError
    from host.transports.ssh import SSHTransport

    t = SSHTransport(_target(sshd, tmp_path / "dev", wheels_dir=""))
    try:
        t.device_facts()
        wheel = tmp_path / "edgebench-0-py3-none-any.whl"
        wheel.write_bytes(b"not really a wheel")
        monkeypatch.setattr(bundle, "agent_wheel", lambda progress=None: wheel)
        client = t._ssh()
        real_run = t.run
        # the session dies between the transport's liveness check and the paramiko call (real paramiko
        # raising SSHException "SSH session not active"): no reconnect can step in at that point
        client.get_transport().close()
        monkeypatch.setattr(t, "_ssh", lambda: client)
        with pytest.raises(TransportError, match=r"command on root@127\.0\.0\.1:\d+ failed .*session not active"):
            real_run("true")
        # open_sftp on the dead session: bootstrap reports the upload failing in one line
        monkeypatch.setattr(t, "run", lambda cmd, **kw: (0, "", ""))
        with pytest.raises(TransportError, match=r"uploading the agent to .* failed") as ei:
            t.bootstrap()
        assert "\n" not in str(ei.value)
    finally:
        t.close()


def test_stale_pid_file_naming_an_unrelated_process_is_not_the_agent(sshd, tmp_path):
    import subprocess

    from host.transports.ssh import SSHTransport

    workdir = tmp_path / "dev"
    workdir.mkdir()
    other = subprocess.Popen(["sleep", "60"])
    t = SSHTransport(_target(sshd, workdir))
    try:
        (workdir / "agent.pid").write_text(f"{other.pid}\n")     # left by an agent from before a reboot
        (workdir / "agent.port").write_text("1\n")
        assert t.agent_status()["running"] is False
        assert t.stop_agent() is False
        assert other.poll() is None, "stop_agent killed a process that is not the agent"
    finally:
        other.kill()
        other.wait()
        t.close()


def test_unreachable_bad_key_and_changed_host_key_fail_with_one_clear_line(sshd, tmp_path, monkeypatch):
    from host.transports.base import TransportError
    from host.transports.ssh import SSHTransport
    from tests.sshd_fixture import free_port, keygen

    with pytest.raises(TransportError, match=r"cannot reach root@127\.0\.0\.1:\d+ over ssh"):
        SSHTransport(_target(sshd, tmp_path, port=free_port())).run("true")
    other = keygen(tmp_path / "not_authorized")
    with pytest.raises(TransportError, match="ssh authentication to .* failed: check user/key"):
        SSHTransport(_target(sshd, tmp_path, key=str(other))).run("true")
    # a device whose host key differs from the one recorded is refused (no silent re-trust)
    impostor = keygen(tmp_path / "impostor").with_suffix(".pub").read_text().split()[:2]
    kh = tmp_path / "known_hosts"
    kh.write_text(f"[127.0.0.1]:{sshd.port} {' '.join(impostor)}\n")
    monkeypatch.setenv("EDGEBENCH_KNOWN_HOSTS", str(kh))
    with pytest.raises(TransportError, match=f"host key of .* changed: .*remove its line from {kh}"):
        SSHTransport(_target(sshd, tmp_path)).run("true")


def _host(args: list[str], capsys) -> tuple[int, str, str]:
    from host.cli import main

    rc = main(args)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_bootstrap_start_deploy_stop_redeploy(sshd, wheelhouse, tmp_path, tflite_int8_model, monkeypatch, capsys):
    """The whole life of a device: first contact bootstraps, later contacts only start/reuse the agent."""
    workdir = tmp_path / "device-home" / ".edgebench"
    t = _target(sshd, workdir)
    tdir = tmp_path / "targets"
    tdir.mkdir()
    (tdir / "sshdev.toml").write_text(
        f'kind = "linux"\ntransport = "ssh"\nhost = "127.0.0.1"\nport = {sshd.port}\nuser = "root"\n'
        f'key = "{t.key}"\nworkdir = "{workdir}"\npython = "{DEVICE_PYTHON}"\nwheels_dir = "{WHEELS}"\n'
        'agent_port = 0\n')
    monkeypatch.setenv("EDGEBENCH_TARGETS", str(tdir))
    # The checkout must not "change" mid-test: others editing agent/ meanwhile would rightly re-bootstrap.
    from host.transports import bundle

    frozen = bundle.build_id()
    monkeypatch.setattr(bundle, "build_id", lambda: frozen)
    db = str(tmp_path / "results.sqlite")
    deploy = ["deploy", "--target", "sshdev", "--artifact", str(tflite_int8_model), "--runs", "20",
              "--min-seconds", "0.2", "--max-seconds", "3", "--db", db, "--json"]
    try:
        # 1. targets check before anything is installed: reachable, but the agent is missing
        rc, out, _ = _host(["targets", "check", "sshdev", "--json"], capsys)
        rep = json.loads(out)
        assert rc == 1 and rep["reachable"] is True
        assert any("agent not installed" in m for m in rep["missing"])

        # 2. start: bootstrap (wheel upload, venv, pip from pushed wheels), then a detached agent
        rc, out, err = _host(["agent", "start", "--target", "sshdev", "--json"], capsys)
        assert rc == 0, err
        started = json.loads(out)
        assert started["started"] is True and started["pid"] > 0
        assert "bootstrapping agent" in err and "creating venv" in err and "from pushed wheels" in err
        assert (workdir / "venv" / "bin" / "agent").exists()
        assert (workdir / "wheels").is_dir() and any((workdir / "wheels").glob("ai_edge_litert-*.whl"))
        venv_stamp = (workdir / "venv" / "pyvenv.cfg").stat().st_mtime_ns

        # 3. deploy + benchmark through the SSH tunnel
        rc, out, err = _host(deploy, capsys)
        assert rc == 0, err[-2000:]
        (rec,) = json.loads(out)
        assert rec["runtime"]["name"] == "litert" and rec["runs"] >= 20
        assert 0 < rec["latency_ms"]["p50"] < 1000
        assert "bootstrapping" not in err and "uploading" not in err      # the agent was already there

        # 4. targets check now sees the agent, its runtimes and the device
        rc, out, _ = _host(["targets", "check", "sshdev", "--json"], capsys)
        rep = json.loads(out)
        assert rc == 0, rep["missing"]
        assert rep["agent"]["agent_version"] and rep["agent"]["up_to_date"] is True
        assert any(r["name"] == "litert" and r["available"] for r in rep["runtimes"])

        # 5. stop: the process is gone
        rc, out, _ = _host(["agent", "stop", "--target", "sshdev", "--json"], capsys)
        assert json.loads(out)["stopped"] is True
        rc, out, _ = _host(["agent", "status", "--target", "sshdev", "--json"], capsys)
        assert rc == 1 and json.loads(out)["running"] is False
        with pytest.raises(ProcessLookupError):
            os.kill(started["pid"], 0)
        rc, out, _ = _host(["agent", "logs", "--target", "sshdev", "-n", "5"], capsys)
        assert "agent stopped" in out

        # 6. re-deploy: the agent starts again without re-bootstrapping (nothing uploaded or installed);
        #    the artifact is still in the device's store, so nothing is pushed either
        rc, out, err = _host(deploy, capsys)
        assert rc == 0, err[-2000:]
        (rec2,) = json.loads(out)
        assert "starting agent" in err
        assert not any(w in err for w in ("bootstrapping", "uploading", "creating venv", "installing agent"))
        assert rec2["push"]["already_present"] is True
        assert (workdir / "venv" / "pyvenv.cfg").stat().st_mtime_ns == venv_stamp

        # 7. a device whose agent differs from the host's is re-bootstrapped in place (venv kept)
        (workdir / "agent.version").write_text("0.0.0+old extra=tflite\n")
        from host.transports.ssh import SSHTransport

        tr = SSHTransport(t)
        events: list[str] = []
        try:
            tr.connect(events.append)
            assert tr.stats["bootstraps"] == 1 and tr.stats["pip_installs"] == 1
            assert any("stopping the previous agent" in e for e in events)
            assert not any("creating venv" in e for e in events)
            # wheels already on the device are not sent again: only the agent wheel travels
            assert tr.stats["uploaded_files"] == 1
        finally:
            tr.close()
    finally:
        from host.transports.ssh import SSHTransport

        with SSHTransport(t) as tr:
            tr.stop_agent()
        shutil.rmtree(workdir, ignore_errors=True)
