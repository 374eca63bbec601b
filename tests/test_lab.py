"""The shared lab's pieces against real databases (SQLite files and a real PostgreSQL server, no mocks):
schema migrations, concurrent writers from several processes, run provenance, device leases (queue order,
--wait, heartbeat, expiry after a SIGKILL) and the `host compare` regression gate on stored runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from host.cli import main
from host.lab import LabSettings, Lease, LeaseError, lab_status
from host.results.migrations import LATEST, current_version
from host.results.store import ResultStore, ResultStoreError
from tests.conftest import ROOT
from tests.test_report import _bench, _eval


def _lab(location, **kw) -> LabSettings:
    return LabSettings(location=location, **({"ttl": 5.0, "poll": 0.05, "host": "testhost", "user": "u"} | kw))


# ------------------------------------------------------------------ schema, writers, provenance

def test_fresh_database_gets_every_migration_once(results_location):
    loc = results_location()
    store = ResultStore(loc)
    assert current_version(store.db) == LATEST
    versions = [r[0] for r in store.db.execute("SELECT version FROM schema_migrations ORDER BY version")]
    assert versions == list(range(1, LATEST + 1))
    store.close()
    again = ResultStore(loc)       # reopening applies nothing
    assert [r[0] for r in again.db.execute("SELECT COUNT(*) FROM schema_migrations")] == [LATEST]
    again.db.execute("INSERT INTO schema_migrations (version, description, applied) VALUES (?, 'future', 0)",
                     (LATEST + 1,))
    again.close()
    with pytest.raises(ResultStoreError, match=f"schema version {LATEST + 1}, newer than this edgebench"):
        ResultStore(loc)


_WRITER = """
import sys, time
sys.path.insert(0, {root!r})
from host.results.store import ResultStore
s = ResultStore({loc!r})
s.begin_run("w{i}")
for k in range({n}):
    s.add_benchmark({{"target": "dev", "sha256": "w{i}-%d" % k, "model_name": "m", "samples": [1.0, 2.0]}})
s.finish_run()
"""


def test_concurrent_writers_from_many_processes(results_location):
    """Six processes open a *fresh* database at the same moment (all race to migrate it) and write 40
    records each: every record is stored once, ids are unique, and the schema was applied once."""
    loc = results_location()
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER.format(root=str(ROOT), loc=loc, i=i, n=40)],
                              stderr=subprocess.PIPE, text=True) for i in range(6)]
    for p in procs:
        assert p.wait(120) == 0, p.stderr.read()
    store = ResultStore(loc)
    recs = store.benchmarks()
    assert len(recs) == 240 and len({r["id"] for r in recs}) == 240
    assert len({r["sha256"] for r in recs}) == 240
    assert {r["run"]["label"] for r in recs} == {f"w{i}" for i in range(6)}
    assert [r[0] for r in store.db.execute("SELECT COUNT(*) FROM schema_migrations")] == [LATEST]
    assert {r["status"] for r in store.runs()} == {"done"}
    store.close()


def test_runs_carry_their_provenance(results_location, monkeypatch):
    monkeypatch.setenv("EDGEBENCH_HOST_NAME", "ci-runner-7")
    store = ResultStore(results_location())
    run = store.begin_run("abc123", command=["deploy", "--target", "pi4"])
    bid = store.add_benchmark(_bench("pi4", "tflite", "fp32", np.full(10, 2.0)))
    store.add_eval(_eval("pi4", "tflite", "fp32", 0.9))
    store.finish_run("done")
    store.add_benchmark(_bench("pi4", "tflite", "fp32", np.full(10, 2.0)))   # outside a run: no provenance
    (b,) = store.benchmarks(label="abc123")
    assert b["id"] == bid and b["run"] == {"id": run["id"], "label": "abc123", "host": "ci-runner-7",
                                           "user": run["user"]}
    assert store.evals(label="abc123")[0]["run"]["id"] == run["id"]
    (r,) = store.runs("abc123")
    assert r["host"] == "ci-runner-7" and r["command"] == ["deploy", "--target", "pi4"] and r["status"] == "done"
    assert r["versions"]["edgebench"] and r["versions"]["python"] and r["finished"] >= r["started"]
    assert store.labels() == ["abc123"]
    assert len(store.benchmarks()) == 2
    store.close()


@pytest.mark.parametrize("url", ["postgresql://nobody@127.0.0.1:1/lab", "mysql://x@y/z"])
def test_unreachable_or_unsupported_database_is_one_line(url, tmp_path, capsys):
    for argv in (["report", "--db", url], ["lab", "status", "--db", url],
                 ["compare", "--baseline", "a", "--candidate", "b", "--db", url],
                 ["lab", "runs", "--db", url, "--json"]):
        assert main(argv) == 2, argv
        cap = capsys.readouterr()
        lines = cap.err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in cap.err, cap.err
        assert ("cannot reach the results database" in lines[0]) == url.startswith("postgresql"), lines
        if "--json" in argv:
            assert "error" in json.loads(cap.out)


# ------------------------------------------------------------------ leases

def test_queue_is_served_in_request_order(results_location):
    loc = results_location("lab.sqlite")
    ResultStore(loc).close()
    first = Lease(_lab(loc, host="h1"), "pi4").acquire()
    order: list[str] = []
    logs: list[str] = []
    held: list[Lease] = []

    def wait_for(name: str) -> None:
        lease = Lease(_lab(loc, host=name), "pi4", log=logs.append).acquire()
        order.append(name)
        time.sleep(0.2)           # hold it a little: the next one must wait for this release
        lease.release()
        held.append(lease)

    threads = []
    for name in ("h2", "h3", "h4"):
        t = threading.Thread(target=wait_for, args=(name,))
        t.start()
        threads.append(t)
        time.sleep(0.3)           # each one's request is in before the next one's
    st = lab_status(ResultStore(loc).db)
    (dev,) = st["devices"]
    assert dev["state"] == "held" and dev["holder"]["host"] == "h1"
    assert [q["host"] for q in dev["queue"]] == ["h2", "h3", "h4"]
    first.release()
    for t in threads:
        t.join(30)
    assert order == ["h2", "h3", "h4"]
    assert any("waiting for the device: held by u@h1" in m and f"pid {os.getpid()}" in m for m in logs), logs
    store = ResultStore(loc)
    rows = store.db.execute("SELECT host, granted, ended, state FROM leases ORDER BY granted").fetchall()
    assert [r[0] for r in rows] == ["h1", "h2", "h3", "h4"] and {r[3] for r in rows} == {"released"}
    for a, b in zip(rows, rows[1:]):
        assert a[2] <= b[1]          # held one after another, never two at once
    store.close()


def test_wait_gives_up_naming_the_holder(results_location):
    loc = results_location("lab.sqlite")
    ResultStore(loc).close()
    holder = Lease(_lab(loc, host="alice-laptop", label="nightly"), "jetson").acquire()
    t0 = time.monotonic()
    with pytest.raises(LeaseError) as ei:
        Lease(_lab(loc, host="bob", wait=0.6), "jetson").acquire()
    assert 0.5 <= time.monotonic() - t0 < 5
    msg = str(ei.value)
    assert "held by u@alice-laptop" in msg and "label nightly" in msg and "gave up after" in msg
    other = Lease(_lab(loc, host="carol"), "pi4").acquire()     # another device is not affected
    other.release()
    holder.release()
    store = ResultStore(loc)
    states = dict(store.db.execute("SELECT host, state FROM leases").fetchall())
    assert states == {"alice-laptop": "released", "bob": "gave-up", "carol": "released"}
    store.close()


def test_heartbeat_keeps_a_lease_past_its_ttl(results_location):
    loc = results_location("lab.sqlite")
    ResultStore(loc).close()
    holder = Lease(_lab(loc, ttl=1.0), "pi4").acquire()
    with pytest.raises(LeaseError):       # 2.5 ttl later the holder is still renewing: no expiry
        Lease(_lab(loc, wait=2.5), "pi4").acquire()
    assert not holder.lost
    holder.release()


_HOLDER = """
import sys, time
sys.path.insert(0, {root!r})
from host.lab import LabSettings, Lease
Lease(LabSettings(location={loc!r}, ttl=1.5, poll=0.05, host="victim", user="u"), "pi4").acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_a_killed_holder_frees_the_device_within_the_ttl(results_location):
    loc = results_location("lab.sqlite")
    ResultStore(loc).close()
    p = subprocess.Popen([sys.executable, "-c", _HOLDER.format(root=str(ROOT), loc=loc)], stdout=subprocess.PIPE,
                         text=True, start_new_session=True)
    try:
        assert p.stdout.readline().strip() == "held"
        os.killpg(p.pid, signal.SIGKILL)       # no release, no cleanup: only the expiry can free it
        p.wait(10)
        t0 = time.monotonic()
        lease = Lease(_lab(loc, host="next", wait=20), "pi4").acquire()
        waited = time.monotonic() - t0
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert 0.3 < waited < 1.5 + 2.0, waited     # the victim's remaining ttl, plus polling
    lease.release()
    store = ResultStore(loc)
    states = dict(store.db.execute("SELECT host, state FROM leases").fetchall())
    assert states == {"victim": "expired", "next": "released"}
    store.close()


# ------------------------------------------------------------------ the regression gate

def _rec(target, method, centres, rng, label_run, sha=None):
    """A stored benchmark whose 5 repetitions centre on `centres` (ms), 40 raw samples each."""
    samples = np.concatenate([rng.normal(c, 0.01 * c, 40) for c in centres])
    rec = _bench(target, "tflite", method, samples, sha=sha or f"{label_run}-{method}")
    rec["run"] = {"id": label_run, "label": label_run.split("#")[0], "host": "h"}
    return rec


def _stored_runs(location, slow_factor=1.25, drop=0.0):
    """base: two devices x two artifacts; rerun: the same again (fresh noise); cand: static on pi4 made
    slower by `slow_factor`, everything else as base."""
    rng = np.random.default_rng(11)
    store = ResultStore(location)
    for label in ("base", "rerun", "cand"):
        store.db.execute("INSERT INTO runs (run_id, label, host, started, status, versions) "
                         "VALUES (?, ?, 'h', 0, 'done', '{}')", (label + "#1", label))
        for target in ("pi4", "jetson"):
            for method, centre in (("fp32", 10.0), ("static", 4.0)):
                c = centre * (slow_factor if (label, target, method) == ("cand", "pi4", "static") else 1.0)
                # repetitions drift by a few percent between processes, as they do on a real device
                reps = c * (1 + rng.normal(0, 0.02, 5))
                store.add_benchmark(_rec(target, method, reps, rng, label + "#1"))
                acc = 0.90 - (drop if (label, target, method) == ("cand", "jetson", "fp32") else 0)
                store.add_eval(_eval(target, "tflite", method, acc, sha=f"{label}#1-{method}")
                               | {"run": {"id": label + "#1", "label": label, "host": "h"}})
    store.close()


def test_gate_flags_the_slowed_artifact_and_nothing_else(results_location, capsys):
    loc = results_location()
    _stored_runs(loc, slow_factor=1.25)
    assert main(["compare", "--baseline", "base", "--candidate", "cand", "--db", loc]) == 1
    out = capsys.readouterr().out
    failing = [ln for ln in out.splitlines() if ln.endswith("FAIL slower")]
    assert len(failing) == 1 and failing[0].startswith("pi4") and "tflite/static" in failing[0], out
    assert "gate FAILED: 1 regression(s) of 4 rows" in out
    assert main(["compare", "--baseline", "base", "--candidate", "cand", "--db", loc, "--json"]) == 1
    res = json.loads(capsys.readouterr().out)
    (bad,) = [r for r in res["rows"] if r["fails"]]
    assert bad["ratio"] == pytest.approx(1.25, rel=0.05) and bad["ci"][0] > 1.0 and bad["ci_level"] > 0.96
    assert bad["basis"] == "5 vs 5 repetition medians" and bad["verdict"] == "slower"
    assert all(r["verdict"] in ("ok", "faster") for r in res["rows"] if r is not bad)
    # identical reruns pass; a threshold above the slowdown passes; --target narrows the rows
    assert main(["compare", "--baseline", "base", "--candidate", "rerun", "--db", loc]) == 0
    assert main(["compare", "--baseline", "base", "--candidate", "cand", "--db", loc, "--max-slowdown", "40"]) == 0
    assert main(["compare", "--baseline", "base", "--candidate", "cand", "--db", loc, "--target", "jetson"]) == 0
    capsys.readouterr()


def test_gate_accuracy_drop_and_user_errors(results_location, capsys):
    loc = results_location()
    _stored_runs(loc, slow_factor=1.0, drop=0.01)     # jetson fp32 lost 1 pp
    assert main(["compare", "--baseline", "base", "--candidate", "cand", "--db", loc, "--json"]) == 1
    res = json.loads(capsys.readouterr().out)
    (bad,) = [r for r in res["rows"] if r["fails"]]
    assert (bad["target"], bad["method"], bad["verdict"]) == ("jetson", "fp32", "accuracy-drop")
    assert bad["acc_change_pp"] == pytest.approx(-1.0)
    assert main(["compare", "--baseline", "base", "--candidate", "cand", "--db", loc, "--max-drop", "1.5"]) == 0
    capsys.readouterr()
    for argv, text in ((["--baseline", "nope", "--candidate", "cand"], "no run has that label"),
                       (["--baseline", "base", "--candidate", "base"], "same label"),
                       (["--baseline", "base", "--candidate", "cand", "--max-slowdown", "-1"], ">= 0"),
                       (["--baseline", "base", "--candidate", "cand", "--target", "nothere"], "nothing to compare")):
        assert main(["compare", *argv, "--db", loc]) == 2
        err = capsys.readouterr().err
        assert text in err and len(err.strip().splitlines()) == 1, err
