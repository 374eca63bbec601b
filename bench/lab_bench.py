"""The shared lab (issue 14), measured on a real PostgreSQL with real `host deploy` processes and two local agents.

1. Throughput: four hosts deploying at once to the same two devices (leases queue them per device) vs one host
   doing the same four deploys one after another. Alternated, repeated; records per minute and wall times.
2. Lease overhead: an uncontended acquire + release round trip (PostgreSQL and SQLite), and a whole deploy with
   leases on vs off, alternated.
3. The gate's false-alarm rate over repeated identical runs (every pair of K identical labelled deploys compared),
   and its detection of one artifact made slower on purpose (XNNPACK off: the reference-kernel fallback).

Results: bench/results/lab.json.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, write_result

sys.path.insert(0, str(ROOT))
from tests.postgres_fixture import Postgres, postgres_skip_reason  # noqa: E402

DEPLOY = ["--repeats", "3", "--runs", "20", "--min-seconds", "0.1", "--max-seconds", "1", "--target-ci", "0"]


def host(env: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "host.cli", *args], capture_output=True, text=True, env=env, cwd=ROOT,
                       timeout=900)
    if check and r.returncode not in (0, 1):
        raise RuntimeError(f"host {' '.join(args[:3])} failed ({r.returncode}): {r.stderr[-2000:]}")
    return r


def start(env: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "host.cli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)


def throughput(env: dict, arts: list[str], rounds: int = 3) -> dict:
    args = ["deploy", "--target", "dev-a,dev-b", *sum((["--artifact", a] for a in arts), []), *DEPLOY]
    four, alone = [], []
    for r in range(rounds):
        for mode in (("four", "alone") if r % 2 == 0 else ("alone", "four")):
            t0 = time.perf_counter()
            if mode == "four":
                procs = [start(env | {"EDGEBENCH_HOST_NAME": f"h{i}"}, *args, "--label", f"tp4-{r}-{i}")
                         for i in range(4)]
                for p in procs:
                    _, err = p.communicate(timeout=900)
                    if p.returncode:
                        raise RuntimeError(err[-2000:])
                four.append(time.perf_counter() - t0)
            else:
                for i in range(4):
                    host(env, *args, "--label", f"tp1-{r}-{i}")
                alone.append(time.perf_counter() - t0)
    records = 4 * 2 * len(arts)
    return {"records_per_scenario": records, "four_hosts_wall_s": four, "one_host_wall_s": alone,
            "four_hosts_records_per_min": 60 * records / statistics.median(four),
            "one_host_records_per_min": 60 * records / statistics.median(alone),
            "throughput_ratio_four_vs_one": statistics.median(alone) / statistics.median(four)}


def lease_roundtrip(location, n: int = 100) -> dict:
    from host.lab import LabSettings, Lease
    from host.results.store import ResultStore

    ResultStore(location).close()
    lab = LabSettings(location=location, ttl=30, poll=0.05, host="bench", user="bench")
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        Lease(lab, "roundtrip").acquire().release()
        times.append((time.perf_counter() - t0) * 1000)
    return {"n": n, "median_ms": statistics.median(times), "p90_ms": sorted(times)[int(0.9 * n)]}


def deploy_overhead(env: dict, art: str, n: int = 5) -> dict:
    on, off = [], []
    for i in range(n):
        for mode in (("on", "off") if i % 2 == 0 else ("off", "on")):
            t0 = time.perf_counter()
            host(env, "deploy", "--target", "dev-a", "--artifact", art, "--lease", mode, *DEPLOY,
                 "--label", f"ovh-{mode}-{i}")
            (on if mode == "on" else off).append(time.perf_counter() - t0)
    return {"n": n, "deploy_lease_on_s": on, "deploy_lease_off_s": off,
            "median_difference_s": statistics.median(on) - statistics.median(off)}


def false_alarms(env: dict, arts: list[str], k: int = 10) -> dict:
    base = ["deploy", "--target", "dev-a", *sum((["--artifact", a] for a in arts), []), "--repeats", "5",
            "--runs", "20", "--min-seconds", "0.1", "--max-seconds", "1"]
    for i in range(k):
        host(env, *base, "--label", f"same{i}")
    # the slowed candidate: the fp32 artifact on reference kernels (XNNPACK off), the int8 one as before
    host(env, "deploy", "--target", "dev-a", "--artifact", arts[0], "--runtime-option", "xnnpack=0",
         *base[7:], "--label", "slowed")
    host(env, "deploy", "--target", "dev-a", "--artifact", arts[1], *base[7:], "--label", "slowed")
    rows = flagged = comparisons = failed = 0
    ratios = []
    for i, j in itertools.combinations(range(k), 2):
        res = json.loads(host(env, "compare", "--baseline", f"same{i}", "--candidate", f"same{j}", "--json").stdout)
        comparisons += 1
        failed += not res["passed"]
        for r in res["rows"]:
            rows += 1
            flagged += r["fails"]
            ratios.append(r["ratio"])
    detect = {"slowed_flagged": 0, "other_flagged": 0, "comparisons": 0, "slowed_ratios": []}
    for i in range(k):
        res = json.loads(host(env, "compare", "--baseline", f"same{i}", "--candidate", "slowed", "--json").stdout)
        detect["comparisons"] += 1
        for r in res["rows"]:
            if r["model_name"] == Path(arts[0]).stem:
                detect["slowed_flagged"] += r["fails"]
                detect["slowed_ratios"].append(r["ratio"])
            else:
                detect["other_flagged"] += r["fails"]
    return {"identical_runs": k, "pair_comparisons": comparisons, "rows_compared": rows, "rows_flagged": flagged,
            "false_alarm_rate_per_row": flagged / rows, "false_alarm_rate_per_gate": failed / comparisons,
            "identical_ratio_range": [min(ratios), max(ratios)], "detection": detect}


def main() -> int:
    reason = postgres_skip_reason()
    if reason:
        print(f"lab bench skipped: {reason}")
        return 0
    # a SIGTERM (make bench interrupted) still stops the server and the agents in the finally below
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = Path(tempfile.mkdtemp(prefix="edgebench-labbench-"))
    pg = Postgres().start()
    env = dict(os.environ, EDGEBENCH_HOME=str(work / "home"), EDGEBENCH_TARGETS=str(work / "targets"))
    (work / "targets").mkdir()
    for name in ("dev-a", "dev-b"):
        (work / "targets" / f"{name}.toml").write_text(f'name = "{name}"\nkind = "local"\ntransport = "local"\n')
    try:
        from tests.conftest import make_tflite

        arts = [str(make_tflite(work / "cnn_fp32.tflite")), str(make_tflite(work / "cnn_int8.tflite", int8=True))]
        env["EDGEBENCH_DB"] = pg.new_database()
        host(env, "deploy", "--target", "dev-a,dev-b", "--artifact", arts[0], "--repeats", "1")   # start the agents
        t0 = time.time()
        out: dict = {"deploy_settings": DEPLOY}
        out["throughput"] = throughput(env, arts)
        print("throughput:", json.dumps(out["throughput"]), flush=True)
        out["lease_roundtrip_postgresql"] = lease_roundtrip(pg.new_database())
        out["lease_roundtrip_sqlite"] = lease_roundtrip(str(work / "roundtrip.sqlite"))
        out["deploy_overhead"] = deploy_overhead(env, arts[0])
        print("lease:", json.dumps({k: out[k] for k in ("lease_roundtrip_postgresql", "lease_roundtrip_sqlite",
                                                        "deploy_overhead")}), flush=True)
        env["EDGEBENCH_DB"] = pg.new_database()
        out["gate"] = false_alarms(env, arts)
        print("gate:", json.dumps(out["gate"]), flush=True)
        out["bench_seconds"] = time.time() - t0
        p = write_result("lab", out)
        print(f"results: {p}")
    finally:
        from host.targets import Target
        from host.transports.local import LocalTransport

        for name in ("dev-a", "dev-b"):
            LocalTransport(Target(name=name), state_dir=work / "home" / "agents" / name).stop_agent()
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
