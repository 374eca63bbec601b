"""`host deploy --target local` as a user runs it: real CLI process, real local agent, SQLite results."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import host


def test_deploy_local_json_and_store(env, tflite_model, tflite_int8_model, tmp_path):
    db = tmp_path / "results.sqlite"
    r = host(env, "deploy", "--target", "local", "--artifact", str(tflite_model), "--artifact", str(tflite_int8_model),
             "--runs", "20", "--min-seconds", "0.2", "--max-seconds", "3", "--db", str(db), "--json", check=True)
    results = json.loads(r.stdout)
    assert len(results) == 2
    for res in results:
        assert res["target"] == "local" and len(res["sha256"]) == 64
        assert res["runtime"]["name"] == "litert" and res["runtime"]["version"]
        lat = res["latency_ms"]
        assert res["runs"] >= 20
        assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        # p50 is the median of the repetition medians: inside their (between-run) CI; the within-run CI is
        # the pooled samples' and need not hold it
        assert lat["ci"][0] <= lat["p50"] <= lat["ci"][1] and lat["ci_within"][0] <= lat["ci_within"][1]
        assert res["repeats"] == 5 and len(res["repetitions"]) == 5
        assert set(res["phases_ms"]) == {"import", "load", "first", "warmup"}
        assert res["peak_rss_mb"] > 0 and "cpu" in json.dumps(res["env_before"]).lower()
    assert "push" in r.stderr or "already on the device" in r.stderr  # progress went to stderr
    # a second deploy of the same artifact sends no bytes, and both runs are stored
    r2 = host(env, "deploy", "--target", "local", "--artifact", str(tflite_model), "--runs", "5",
              "--min-seconds", "0", "--max-seconds", "2", "--db", str(db), "--json", check=True)
    assert json.loads(r2.stdout)[0]["push"]["sent"] == 0
    from host.results.store import ResultStore

    stored = ResultStore(db).benchmarks(target="local")
    assert len(stored) == 3 and all(len(s["samples"]) == s["runs"] for s in stored)


def test_user_errors_are_one_line(env, tmp_path, tflite_model):
    cases = [
        ["deploy", "--target", "nope", "--artifact", str(tflite_model)],
        ["deploy", "--target", "local", "--artifact", str(tmp_path / "missing.tflite")],
        ["deploy", "--target", "local", "--artifact", str(Path(__file__))],  # not a model file
    ]
    for args in cases:
        r = host(env, *args, "--db", str(tmp_path / "r.sqlite"))
        assert r.returncode == 2, (args, r.stderr)
        lines = [line for line in r.stderr.strip().splitlines() if line]
        assert len(lines) == 1 and "error" in lines[0] and "Traceback" not in r.stderr, r.stderr


def test_non_model_pushed_fails_cleanly(env, tmp_path):
    fake = tmp_path / "fake.tflite"
    fake.write_bytes(b"definitely not a flatbuffer" * 10)
    # a bare file is read on the host first (its manifest is made from it): refused there in one line
    r = host(env, "deploy", "--target", "local", "--artifact", str(fake), "--db", str(tmp_path / "r.sqlite"))
    assert r.returncode == 2 and "not a valid Flatbuffer" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    # with a manifest claiming it is a model, the bytes reach the agent, which refuses to publish them
    from host.artifacts import Artifact, Manifest, sha256_file

    Artifact(fake, Manifest(file=fake.name, sha256=sha256_file(fake), size_bytes=fake.stat().st_size,
                            platform="tflite", format="tflite", precision="fp32", method="fp32")).write_manifest()
    r = host(env, "deploy", "--target", "local", "--artifact", str(fake), "--db", str(tmp_path / "r.sqlite"), "--json")
    assert r.returncode == 1
    out = json.loads(r.stdout)
    assert "not a TFLite flatbuffer" in out[0]["error"]


def test_one_unreachable_target_does_not_sink_the_others(env, tflite_model, tmp_path):
    tdir = Path(env["EDGEBENCH_TARGETS"])
    tdir.mkdir(parents=True, exist_ok=True)
    (tdir / "deadpi.toml").write_text('name = "deadpi"\nkind = "raspberry-pi"\ntransport = "ssh"\n'
                                      'host = "127.0.0.1"\nport = 1\nuser = "pi"\n')
    db = tmp_path / "results.sqlite"
    r = host(env, "deploy", "--target", "local,deadpi", "--artifact", str(tflite_model), "--runs", "5",
             "--min-seconds", "0", "--max-seconds", "1", "--db", str(db), "--json")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    by_target = {res["target"]: res for res in json.loads(r.stdout)}
    assert by_target["local"]["runs"] >= 5 and "error" not in by_target["local"]
    assert "deadpi" in by_target and "127.0.0.1:1" in by_target["deadpi"]["error"]
    from host.results.store import ResultStore

    assert [s["target"] for s in ResultStore(db).benchmarks()] == ["local"]


def test_repetitions_are_interleaved_recorded_and_noise_is_measured(env, tflite_model, tflite_int8_model, tmp_path):
    """A real agent: 2 artifacts x 3 repetitions in a seeded interleaved order, each repetition its own
    worker (its own load), the order recorded with both records; then host noise and the report."""
    db = tmp_path / "results.sqlite"
    r = host(env, "deploy", "--target", "local", "--artifact", str(tflite_model), "--artifact", str(tflite_int8_model),
             "--repeats", "3", "--schedule-seed", "5", "--runs", "5", "--min-seconds", "0", "--max-seconds", "1",
             "--warmup", "1", "--warmup-seconds", "0", "--db", str(db), "--json", check=True)
    results = json.loads(r.stdout)
    from host.schedule import interleaved_order

    names = [tflite_model.name, tflite_int8_model.name]
    expected = [[rnd, names[i]] for rnd, i in interleaved_order(2, 3, 5)]
    for res in results:
        sched = res["schedule"]
        assert sched["order"] == expected and sched["seed"] == 5 and sched["repeats"] == 3
        reps = res["repetitions"]
        assert res["repeats"] == 3 and [rep["round"] for rep in reps] == [0, 1, 2]
        # each repetition ran at the position the schedule gave it
        assert [rep["position"] for rep in reps] == [i for i, (rnd, n) in enumerate(expected) if n == res["artifact"]]
        assert all(rep["load_ms"] > 0 and rep["runs"] >= 5 for rep in reps)       # its own worker, its own load
        assert sum(rep["n"] for rep in reps) == res["runs"]
        assert [rep["offset"] for rep in reps] == [0, reps[0]["n"], reps[0]["n"] + reps[1]["n"]]
        lat = res["latency_ms"]
        assert lat["p50"] == sorted(rep["p50"] for rep in reps)[1]                  # median of the 3 medians
        assert lat["ci"] == [min(rep["p50"] for rep in reps), max(rep["p50"] for rep in reps)]
        assert lat["ci_label"] == "75.0% CI (range)" and res["between"]["cv"] is not None
    # the two artifacts alternate: every round holds both, so no artifact runs twice before the other once
    positions = sorted((rep["position"], res["artifact"]) for res in results for rep in res["repetitions"])
    assert [{n for p, n in positions[i:i + 2]} for i in (0, 2, 4)] == [set(names)] * 3
    from host.results.store import ResultStore

    stored = ResultStore(db)
    assert [row[0] for row in stored.db.execute("SELECT repeats FROM benchmarks")] == [3, 3]
    assert len({row[0] for row in stored.db.execute("SELECT schedule_id FROM benchmarks")}) == 1
    stored.close()

    n = host(env, "noise", "--target", "local", "--repeats", "3", "--min-seconds", "0", "--db", str(db), "--json",
             check=True)
    noise = json.loads(n.stdout)
    assert noise["repeats"] == 3 and len(noise["rep_medians"]) == 3 and noise["cv"] >= 0
    assert noise["reference"].startswith("noise_reference.tflite (litert")
    rep = host(env, "report", "--db", str(db), check=True).stdout
    assert "noise floor" in rep and "between runs of noise_reference.tflite" in rep
