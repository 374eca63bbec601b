"""Four real `host deploy` processes at once against the same two local agents through a real PostgreSQL,
one more host killed (SIGKILL) while it holds a device: the leases keep benchmark runs on one device from
ever overlapping (checked from the stored wall-clock spans of every repetition), every result is stored
once, the killed host's lease expires and the others go on."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from host.results.store import ResultStore
from tests.conftest import ROOT

TTL = 3.0
# short repetitions: the scenario is about scheduling, not about the numbers
FAST = ["--repeats", "2", "--runs", "5", "--min-seconds", "0.05", "--max-seconds", "0.4", "--warmup", "2",
        "--warmup-seconds", "0.01", "--target-ci", "0"]


def _start_host(env: dict, log: Path, *args: str) -> subprocess.Popen:
    with open(log, "w") as f:
        return subprocess.Popen([sys.executable, "-m", "host.cli", "deploy", *args], stdout=subprocess.PIPE,
                                stderr=f, text=True, env=env, cwd=ROOT, start_new_session=True)


@pytest.fixture
def lab_env(tmp_path, pg_url):
    targets = tmp_path / "targets"
    targets.mkdir()
    for name in ("dev-a", "dev-b"):
        (targets / f"{name}.toml").write_text(f'name = "{name}"\nkind = "local"\ntransport = "local"\n')
    env = dict(os.environ, EDGEBENCH_HOME=str(tmp_path / "home"), EDGEBENCH_TARGETS=str(targets),
               EDGEBENCH_DB=pg_url)
    yield env
    from host.targets import Target
    from host.transports.local import LocalTransport

    for name in ("dev-a", "dev-b"):
        LocalTransport(Target(name=name), state_dir=tmp_path / "home" / "agents" / name).stop_agent()


def _overlaps(spans: list[tuple[float, float, str]]) -> list[tuple]:
    spans = sorted(spans)
    return [(a, b) for a, b in zip(spans, spans[1:]) if b[0] < a[1] and a[2] != b[2]]


def test_four_hosts_share_two_devices_and_a_killed_host_frees_its_lease(lab_env, tflite_model, tmp_path, pg_url):
    env = lab_env
    # the victim: long repetitions on dev-a, killed as soon as it holds the lease and is measuring
    victim = _start_host(env, tmp_path / "victim.log", "--target", "dev-a", "--artifact", str(tflite_model),
                         "--label", "victim", "--lease-ttl", str(TTL), "--repeats", "3", "--runs", "100000",
                         "--min-seconds", "20", "--max-seconds", "20", "--target-ci", "0")
    store = ResultStore(pg_url)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if "#1/3" in (tmp_path / "victim.log").read_text():      # its first repetition started on the device
            break
        assert victim.poll() is None, (tmp_path / "victim.log").read_text()
        time.sleep(0.1)
    else:
        pytest.fail("the victim never started measuring: " + (tmp_path / "victim.log").read_text())
    # four hosts, each deploying to both devices; they queue behind the victim on dev-a
    hosts = [_start_host(env | {"EDGEBENCH_HOST_NAME": f"host{i}"}, tmp_path / f"host{i}.log", "--target",
                         "dev-a,dev-b", "--artifact", str(tflite_model), "--label", f"h{i}", "--lease-ttl", str(TTL),
                         "--json", *FAST) for i in range(4)]
    time.sleep(1.0)
    t_kill = time.time()
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(10)
    outs = []
    for i, h in enumerate(hosts):
        out, _ = h.communicate(timeout=300)
        log = (tmp_path / f"host{i}.log").read_text()
        assert h.returncode == 0, log[-3000:]
        outs.append((json.loads(out), log))

    # every host stored one result per device, each once, under its own run
    recs = store.benchmarks()
    assert sorted((r["run"]["label"], r["target"]) for r in recs) == sorted(
        (f"h{i}", t) for i in range(4) for t in ("dev-a", "dev-b"))
    assert len({r["run"]["id"] for r in recs}) == 4
    assert all(r["lease"]["device"] == r["target"] and not r["lease"]["lost"] for r in recs)

    # no two runs on one device overlapped: neither the repetitions' wall-clock spans nor the leases
    for dev in ("dev-a", "dev-b"):
        spans = [(rep["t_start"], rep["t_end"], r["run"]["id"]) for r in recs if r["target"] == dev
                 for rep in r["repetitions"]]
        assert len(spans) == 8 and not _overlaps(spans), _overlaps(spans)
        leases = store.db.execute("SELECT granted, ended, id, state FROM leases WHERE device = ? AND granted IS NOT "
                                  "NULL ORDER BY granted", (dev,)).fetchall()
        ends = [(g, e if e is not None else float("inf"), str(i)) for g, e, i, _ in leases]
        assert not _overlaps(ends)

    # the victim's lease expired (it never released it); dev-a's next holder got it only after the expiry
    (vic,) = store.db.execute("SELECT state, granted, expires, ended FROM leases WHERE label = 'victim'").fetchall()
    assert vic[0] == "expired" and vic[3] >= t_kill
    first_after = min(r["repetitions"][0]["t_start"] for r in recs if r["target"] == "dev-a")
    assert first_after >= t_kill and first_after - t_kill < TTL + 5
    # the waiting hosts said whom they were waiting for
    assert any("waiting for the device: held by" in log and "label victim" in log for _, log in outs)
    (run,) = store.runs("victim")
    assert run["status"] == "running" and run["finished"] is None      # killed: it never finished its run

    # host lab status shows the devices free again, and the expired lease among the recent ones
    r = subprocess.run([sys.executable, "-m", "host.cli", "lab", "status", "--json"], capture_output=True, text=True,
                       env=env, cwd=ROOT, timeout=60)
    st = json.loads(r.stdout)
    assert {d["device"]: d["state"] for d in st["devices"]} == {"dev-a": "free", "dev-b": "free"}
    assert any(x["state"] == "expired" and x["label"] == "victim" for x in st["recent"])
    store.close()
