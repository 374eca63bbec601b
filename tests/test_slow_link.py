"""Pushing over a slow link: an agent in its own network namespace behind a 20 Mbit/s veth.

The test process (the host) stays in the root namespace; the agent runs in a namespace of its own,
joined by a veth pair with link-local 169.254.x.y/30 addresses and `tc tbf rate 20mbit` on both ends
(netem is not in this kernel). Proves: push progress arrives while bytes trickle, a push killed
mid-way resumes sending only the rest, and deadlines fire with a clear message. Root only.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RATE_MBIT = 20
SIZE = 6 * 1024 * 1024          # ~2.5 s at 20 Mbit/s

pytestmark = [pytest.mark.root, pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("tc"),
    reason="needs root and iproute2 (ip, tc) to create network namespaces and shape a veth link")]


def _sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def slow_agent(tmp_path_factory):
    """An `agent serve` in namespace NS at 169.254.A.B+2, reachable from here at 20 Mbit/s."""
    pid = os.getpid()
    ns, vh, vd = f"ebslow{pid}", f"ebh{pid % 100000}", f"ebd{pid % 100000}"
    a, b = 100 + pid % 100, 4 * ((pid // 100) % 60)
    host_ip, dev_ip = f"169.254.{a}.{b + 1}", f"169.254.{a}.{b + 2}"
    d = tmp_path_factory.mktemp("slowlink")
    proc = None
    try:
        _sh("ip", "netns", "add", ns)
        _sh("ip", "link", "add", vh, "type", "veth", "peer", "name", vd)
        _sh("ip", "link", "set", vd, "netns", ns)
        _sh("ip", "addr", "add", f"{host_ip}/30", "dev", vh)
        _sh("ip", "link", "set", vh, "up")
        _sh("ip", "-n", ns, "addr", "add", f"{dev_ip}/30", "dev", vd)
        _sh("ip", "-n", ns, "link", "set", vd, "up")
        _sh("ip", "-n", ns, "link", "set", "lo", "up")
        for args in (["dev", vh], ["-n", ns, "dev", vd]):
            netns = args[:2] if args[0] == "-n" else []
            dev = args[-2:]
            _sh("tc", *netns, "qdisc", "add", *dev, "root", "tbf", "rate", f"{RATE_MBIT}mbit", "burst", "32kbit",
                "latency", "400ms")
        port_file = d / "agent.port"
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "agent.cli", "serve", "--listen", f"{dev_ip}:0",
             "--store", str(d / "store"), "--port-file", str(port_file),
             "--insecure-listen"],       # a private veth pair: the test needs the link, not TLS
            cwd=str(ROOT), stdout=open(d / "agent.log", "ab"), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while not port_file.exists():
            assert proc.poll() is None, (d / "agent.log").read_text()
            assert time.monotonic() < deadline, "agent in the namespace did not start"
            time.sleep(0.05)
        address = f"{dev_ip}:{int(port_file.read_text())}"
        from host.client import remember_agent

        remember_agent(address, (d / "store" / "agent.secret").read_text())
        yield {"address": address, "store": d / "store", "pid": proc.pid, "dir": d}
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "del", vh], capture_output=True, timeout=30)   # gone with the ns, normally


def _artifact(path: Path, seed: int) -> tuple[Path, str]:
    """Bytes shaped like a .tflite (the store checks the TFL3 identifier when it publishes)."""
    import numpy as np

    data = b"\x1c\x00\x00\x00TFL3" + np.random.default_rng(seed).bytes(SIZE - 8)
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def test_push_progress_arrives_while_the_link_is_slow(slow_agent, tmp_path):
    from host.client import AgentClient

    path, sha = _artifact(tmp_path / "a.tflite", 1)
    events: list[tuple[float, int]] = []
    t0 = time.monotonic()
    with AgentClient(slow_agent["address"], timeout=30) as c:
        r = c.push(path, sha, "tflite", progress=lambda done, total: events.append((time.monotonic() - t0, done)))
        elapsed = time.monotonic() - t0
        assert c.stat(sha)["exists"]
    assert r["sent"] == SIZE and r["already_present"] is False
    # the shaper is in effect: 6 MiB cannot cross 20 Mbit/s in much under 2.5 s
    assert elapsed > 0.8 * SIZE * 8 / (RATE_MBIT * 1e6), elapsed
    # progress is monotonic, ends at the size, and its events are spread over the transfer, not bunched at the end
    dones = [d for _, d in events]
    assert dones == sorted(dones) and dones[-1] == SIZE and len(events) >= 5
    half = next(t for t, d in events if d >= SIZE // 2)
    assert half < 0.8 * elapsed, (half, elapsed)


_PUSH_SCRIPT = """
import sys
from host.client import AgentClient
addr, path, sha, secret = sys.argv[1:5]
with AgentClient(addr, timeout=60, secret=open(secret).read().strip()) as c:
    c.push(path, sha, "tflite", retries=0)
"""


def test_push_killed_midway_resumes_with_only_the_rest(slow_agent, tmp_path):
    from host.client import AgentClient

    path, sha = _artifact(tmp_path / "b.tflite", 2)
    part = slow_agent["store"] / "partial" / f"{sha}.part"
    proc = subprocess.Popen([sys.executable, "-c", _PUSH_SCRIPT, slow_agent["address"], str(path), sha,
                             str(slow_agent["store"] / "agent.secret")],
                            cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not (part.exists() and part.stat().st_size >= SIZE * 0.3):
        assert proc.poll() is None, proc.stderr.read().decode()[-1000:]
        assert time.monotonic() < deadline, "the push never got going"
        time.sleep(0.02)
    proc.kill()                      # the cut: the host process dies mid-transfer
    proc.wait()
    with AgentClient(slow_agent["address"], timeout=30) as c:
        deadline = time.monotonic() + 10
        held = -1
        while time.monotonic() < deadline:        # the agent notices the cancelled stream and keeps what it got
            st = c.stat(sha)
            if st["bytes_held"] == held and held > 0:
                break
            held = st["bytes_held"]
            time.sleep(0.3)
        assert not st["exists"] and SIZE * 0.3 <= held < SIZE, held
        t0 = time.monotonic()
        r = c.push(path, sha, "tflite")
        resumed_s = time.monotonic() - t0
        assert r["sent"] == SIZE - held and r["skipped"] == held
        assert c.stat(sha)["exists"]
    # and the resumed push took about the time of the rest, not of the whole
    assert resumed_s < 0.95 * SIZE * 8 / (RATE_MBIT * 1e6) + 0.5, resumed_s


def test_deadlines_fire_with_a_clear_message(slow_agent, tmp_path):
    from host.client import AgentClient, AgentError

    path, sha = _artifact(tmp_path / "c.tflite", 3)
    with AgentClient(slow_agent["address"], timeout=30) as c:
        t0 = time.monotonic()
        with pytest.raises(AgentError, match=r"timed out .*check the link") as e:
            c.push(path, sha, "tflite", retries=0, timeout=0.7)
        assert e.value.code == "timeout" and time.monotonic() - t0 < 10
        assert 0 < c.stat(sha)["bytes_held"] < SIZE          # what crossed before the deadline is kept
    # an agent that stops answering (frozen process, link up): the call's deadline fires, not a hang
    os.kill(slow_agent["pid"], signal.SIGSTOP)
    agent_pids = subprocess.run(["pgrep", "-s", str(slow_agent["pid"])], capture_output=True, text=True).stdout
    for p in agent_pids.split():
        os.kill(int(p), signal.SIGSTOP)
    try:
        with AgentClient(slow_agent["address"], timeout=1.5) as c:
            t0 = time.monotonic()
            with pytest.raises(AgentError, match="timed out") as e:
                c.info()
            assert e.value.code == "timeout" and time.monotonic() - t0 < 6
    finally:
        for p in agent_pids.split():
            os.kill(int(p), signal.SIGCONT)
        os.kill(slow_agent["pid"], signal.SIGCONT)
    with AgentClient(slow_agent["address"], timeout=10) as c:
        assert c.info()["agent_version"]                      # and it answers again once it runs
