"""The local transport's pid file: a stale one naming a recycled pid must not be taken for the agent."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from host.targets import Target
from host.transports.local import LocalTransport, _is_agent

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc to tell processes apart")


def test_stale_pid_file_naming_an_unrelated_process_is_not_the_agent(tmp_path):
    # what a reboot leaves: agent.pid/agent.port from the old agent, the pid now given to something else
    other = subprocess.Popen(["sleep", "60"])
    try:
        t = LocalTransport(Target(name="stale", kind="local", transport="local"), state_dir=tmp_path)
        t.pid_file.write_text(f"{other.pid}\n")
        t.port_file.write_text("1\n")
        assert not _is_agent(other.pid)
        st = t.agent_status()
        assert st["running"] is False and st["pid"] is None and st["address"] is None
        assert t.stop_agent() is False
        assert other.poll() is None, "stop_agent signalled a process that is not the agent"
        assert not t.pid_file.exists() and not t.port_file.exists()   # the stale files are cleared
    finally:
        other.kill()
        other.wait()


def test_a_process_that_is_an_agent_serve_is_recognised(tmp_path):
    # same check, positive side: argv with the agent module and `serve` (what start_agent runs)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "agent.cli", "serve"])
    try:
        # until the child has exec'd, /proc/PID/cmdline is still the parent's (pytest's)
        deadline = time.monotonic() + 10
        while b"serve" not in Path(f"/proc/{proc.pid}/cmdline").read_bytes() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _is_agent(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    assert not _is_agent(proc.pid)        # reaped: gone
