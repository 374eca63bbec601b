"""`host deploy --target local` as a user runs it: real CLI process, real local agent, SQLite results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def env(tmp_path):
    e = dict(os.environ, EDGEBENCH_HOME=str(tmp_path / "home"), EDGEBENCH_TARGETS=str(tmp_path / "targets"))
    yield e
    from host.targets import LOCAL
    from host.transports.local import LocalTransport

    LocalTransport(LOCAL, state_dir=tmp_path / "home" / "agents" / "local").stop_agent()


def host(env, *args, check=False):
    r = subprocess.run([sys.executable, "-m", "host.cli", *args], capture_output=True, text=True, env=env, cwd=ROOT,
                       timeout=300)
    if check:
        assert r.returncode == 0, r.stderr[-3000:]
    return r


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
        assert lat["ci95"][0] <= lat["p50"] <= lat["ci95"][1]
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
