"""Load on one real agent: 16 well-behaved clients mixing every RPC, plus 8 deliberately stalled ones
(header-only uploads, silent Infer streams, a Benchmark nobody reads). GetInfo stays fast (p99 < 0.5 s)
and no well-behaved call fails. The figures are printed (pytest -s)."""

from __future__ import annotations

import hashlib
import threading
import time

import numpy as np

from host.client import AgentClient
from protos import edge_agent_pb2 as pb

SECONDS = 8.0


def test_getinfo_stays_fast_under_load_with_stalled_clients(agent_factory, tflite_model, tmp_path):
    a = agent_factory(args=("--infer-idle-s", "2", "--push-idle-s", "30", "--lock-wait-s", "30"))
    with AgentClient(a.address) as c:
        digest = hashlib.sha256(tflite_model.read_bytes()).hexdigest()
        c.push(tflite_model, digest, "tflite")
        started = c.benchmark(digest, c.run_options(runs=1, min_seconds=0, max_seconds=1, target_ci=0))["started"]
    spec = started["inputs"][0]
    feed = {spec["name"]: np.zeros([max(1, d) for d in spec["shape"]], np.float32)}   # -1: a dynamic batch
    release = threading.Event()
    stop = time.monotonic() + SECONDS
    latencies: list[float] = []
    errors: list[str] = []
    done = {"getinfo": 0, "list": 0, "stat": 0, "push": 0, "bench": 0, "infer": 0}
    lock = threading.Lock()

    def stalled(kind: str, i: int) -> None:
        with AgentClient(a.address, timeout=60) as s:
            def hold_push():
                yield pb.ArtifactChunk(header=pb.ArtifactHeader(sha256=f"{i:064x}", size=10**6,
                                                                file_name="x.tflite", format="tflite"))
                release.wait(60)

            def hold_infer():
                yield pb.InferRequest(sha256=digest)
                release.wait(60)
            try:
                if kind == "push":
                    s.stub.PushArtifact(hold_push(), timeout=60)
                elif kind == "infer":
                    list(s.stub.Infer(hold_infer(), timeout=60))
                else:           # a Benchmark whose client never reads its events
                    call = s.stub.Benchmark(pb.BenchmarkRequest(sha256=digest, options=s.run_options(
                        runs=5, min_seconds=0, max_seconds=0.5, target_ci=0)), timeout=60)
                    release.wait(60)
                    call.cancel()
            except Exception:  # noqa: BLE001 - the stalled ones may end any way they like
                pass

    def worker(role: str, i: int) -> None:
        blob = b"\x1c\x00\x00\x00TFL3" + np.random.default_rng(i).bytes(50_000)
        path = tmp_path / f"w{i}.tflite"
        path.write_bytes(blob)
        with AgentClient(a.address, timeout=30) as w:
            n = 0
            while time.monotonic() < stop:
                n += 1
                try:
                    if role == "query":
                        t0 = time.perf_counter()
                        w.info()
                        with lock:
                            latencies.append(time.perf_counter() - t0)
                            done["getinfo"] += 1
                        w.list()
                        w.stat(digest)
                        with lock:
                            done["list"] += 1
                            done["stat"] += 1
                    elif role == "push":
                        w.push(path, hashlib.sha256(blob).hexdigest(), "tflite")
                        w.delete(hashlib.sha256(blob).hexdigest())
                        with lock:
                            done["push"] += 1
                    elif role == "bench":
                        r = w.benchmark(digest, w.run_options(runs=5, min_seconds=0, max_seconds=0.3, target_ci=0,
                                                              warmup_runs=1, warmup_seconds=0), timeout=60)
                        assert r["summary"]["runs"] >= 5
                        with lock:
                            done["bench"] += 1
                    else:
                        outs = list(w.infer(digest, [feed] * 3, timeout=60))
                        assert len(outs) == 3
                        with lock:
                            done["infer"] += 1
                except Exception as e:  # noqa: BLE001 - every failure of a well-behaved call is counted
                    with lock:
                        errors.append(f"{role}: {e}")
                time.sleep(0.01)

    stalls = [threading.Thread(target=stalled, args=(k, i), daemon=True)
              for i, k in enumerate(["push"] * 5 + ["infer"] * 2 + ["bench"])]
    for t in stalls:
        t.start()
    time.sleep(0.5)
    roles = ["query"] * 10 + ["push"] * 3 + ["bench"] * 2 + ["infer"]
    workers = [threading.Thread(target=worker, args=(r, i), daemon=True) for i, r in enumerate(roles)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(120)
    release.set()
    for t in stalls:
        t.join(30)
    lat = np.array(latencies) * 1e3
    p50, p99 = np.percentile(lat, [50, 99])
    print(f"\nload: {len(roles)} clients + {len(stalls)} stalled for {SECONDS:.0f} s: GetInfo n={lat.size} "
          f"p50={p50:.1f} ms p99={p99:.1f} ms max={lat.max():.1f} ms; completed {done}; errors {len(errors)}")
    assert not errors, errors[:5]
    assert lat.size > 50 and p99 < 500
    assert done["push"] > 0 and done["bench"] > 0 and done["infer"] > 0
