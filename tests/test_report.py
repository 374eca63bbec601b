"""`host report` against results stored in a real SQLite ResultStore, and the HTML report rendered
in headless Chromium (Debian `chromium`)."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from agent.bench import median_ci
from host.cli import main
from host.results.report import build_report, render
from host.results.store import ResultStore
from host.stats.repetitions import summarize_repetitions


def _bench(target, platform, method, samples, runtime="litert", precision=None, size=100_000, sha=None, reps=5,
           schedule="deploy-1"):
    """A stored record as host deploy writes it: `samples` split into `reps` repetitions run in the rounds
    of one interleaved schedule (same schedule id = paired rounds), statistics from host.stats."""
    s = np.asarray(samples, float)
    parts = np.array_split(s, reps)
    between = summarize_repetitions([float(np.median(x)) for x in parts])
    offsets = np.cumsum([0] + [len(x) for x in parts])
    lo, hi = median_ci(s)
    p50 = between["p50"] if reps > 1 else float(np.median(s))
    sha = sha or f"{platform}-{method}"
    return {"target": target, "target_kind": "raspberry-pi" if target == "pi4" else "local",
            "sha256": sha, "artifact": f"classifier_{platform}_{method}.bin", "model_name": "classifier",
            "platform": platform, "method": method, "precision": precision or method, "format": "tflite",
            "size_bytes": size, "task": "classification", "runtime": {"name": runtime, "version": "2.3.0"},
            "delegate": "xnnpack", "threads": 4, "runs": len(s), "duration_s": float(s.sum() / 1000),
            "latency_ms": {"p50": p50, "p90": float(np.percentile(s, 90)), "p99": float(np.percentile(s, 99)),
                           "mean": float(s.mean()), "std": float(s.std()), "min": float(s.min()),
                           "max": float(s.max()), "ci95": [lo, hi], "ci_within": [lo, hi],
                           "ci": between["ci"] if reps > 1 else [lo, hi],
                           "ci_label": between["ci_label"] if reps > 1 else "95% CI"},
            "repeats": reps, "between": between, "schedule": {"id": schedule},
            "repetitions": [{"round": r, "p50": float(np.median(x)), "offset": int(offsets[r]), "n": len(x)}
                            for r, x in enumerate(parts)],
            "phases_ms": {"load": 12.5, "first": 3.0, "warmup": 20.0}, "peak_rss_mb": 55.0,
            "flags": ["hot"] if method == "fp16" else [], "samples": s.tolist(), "manifest": {}}


def _eval(target, platform, method, top1, sha=None):
    return {"target": target, "sha256": sha or f"{platform}-{method}", "model_name": "classifier",
            "platform": platform, "method": method, "precision": method, "dataset": "fashion-mnist:test",
            "n": 1000, "task": "classification", "metrics": {"top1": top1, "top5": 0.99},
            "agreement": {"top1_agreement": 0.99, "cosine": 0.999}, "latency_ms_mean": 1.0}


def _fill(location) -> None:
    rng = np.random.default_rng(0)
    fp32 = rng.normal(10.0, 0.2, 200)
    store = ResultStore(location)
    # pi4: static int8 is 2.5x faster within 0.5 pp; dynamic measures the same as fp32 (same samples,
    # shuffled: not significant); fp16 is fastest but loses 6 pp; pytorch fp32 is slower on its own runtime
    store.add_benchmark(_bench("pi4", "tflite", "fp32", fp32))
    store.add_benchmark(_bench("pi4", "tflite", "static", rng.normal(4.0, 0.1, 200), precision="int8", size=30_000))
    store.add_benchmark(_bench("pi4", "tflite", "dynamic", rng.permutation(fp32), precision="dynamic-int8",
                               size=32_000))
    store.add_benchmark(_bench("pi4", "tflite", "fp16", rng.normal(3.0, 0.1, 200), size=52_000))
    store.add_benchmark(_bench("pi4", "pytorch", "fp32", rng.normal(12.0, 0.3, 200), runtime="torch-mobile",
                               size=330_000))
    for plat, meth, acc in (("tflite", "fp32", 0.91), ("tflite", "static", 0.905), ("tflite", "dynamic", 0.909),
                            ("tflite", "fp16", 0.85), ("pytorch", "fp32", 0.91)):
        store.add_eval(_eval("pi4", plat, meth, acc))
    # local: an older, slower fp32 run superseded by a newer one
    store.add_benchmark(_bench("local", "tflite", "fp32", rng.normal(5.0, 0.05, 100)))
    store.add_benchmark(_bench("local", "tflite", "fp32", rng.normal(2.0, 0.05, 100)))
    store.add_benchmark(_bench("local", "tflite", "static", rng.normal(1.5, 0.05, 100), precision="int8"))
    store.add_eval(_eval("local", "tflite", "static", 0.908))
    store.close()


@pytest.fixture
def db(results_location) -> str:
    """The same stored results in SQLite and in PostgreSQL: every test using it runs on both backends."""
    _fill(results_location())
    return results_location()


@pytest.fixture
def sqlite_db(tmp_path) -> Path:
    """SQLite only: for tests whose subject is rendering (Chromium), not the store."""
    _fill(tmp_path / "results.sqlite")
    return tmp_path / "results.sqlite"


def _row(rep, target, platform, method):
    (r,) = [r for r in rep["rows"] if (r["target"], r["platform"], r["method"]) == (target, platform, method)]
    return r


def test_rows_speedups_drops_and_best(db):
    store = ResultStore(db)
    rep = build_report(store, max_drop=1.0)
    assert len(rep["rows"]) == 7                      # the superseded local fp32 run is not a row
    st = _row(rep, "pi4", "tflite", "static")
    assert st["speedup"] == pytest.approx(10.0 / 4.0, rel=0.03)
    assert st["significant"] is True and st["paired_rounds"] == 5
    assert st["speedup_ci"][0] > 2.3 and st["speedup_ci"][1] < 2.7
    assert st["acc_drop"] == pytest.approx(0.5)
    dyn = _row(rep, "pi4", "tflite", "dynamic")
    assert dyn["speedup"] == pytest.approx(1.0, abs=0.02) and dyn["significant"] is False
    assert dyn["speedup_ci"][0] < 1.0 < dyn["speedup_ci"][1]
    assert _row(rep, "pi4", "tflite", "fp16")["acc_drop"] == pytest.approx(6.0)
    # pytorch is compared with pytorch fp32 (its own runtime), not with tflite fp32
    assert _row(rep, "pi4", "pytorch", "fp32")["speedup"] == pytest.approx(1.0)
    local_fp32 = _row(rep, "local", "tflite", "fp32")
    assert local_fp32["p50"] == pytest.approx(2.0, abs=0.05)
    assert _row(rep, "local", "tflite", "static")["speedup"] == pytest.approx(2.0 / 1.5, rel=0.05)
    # local fp32 was never evaluated: no accuracy and no drop (not 0.0); static has no fp32 eval there
    assert local_fp32["accuracy"] is None and local_fp32["acc_drop"] is None
    assert _row(rep, "local", "tflite", "static")["acc_drop"] is None

    assert rep["best"]["pi4 / classifier"]["method"] == "static"
    assert "local / classifier" not in rep["best"]   # an unevaluated FP32 cannot win "best within budget"
    loose = build_report(store, max_drop=10.0)
    assert loose["best"]["pi4 / classifier"]["method"] == "fp16"
    front = {(rep["rows"][i]["platform"], rep["rows"][i]["method"]) for i in rep["pareto"]["pi4 / classifier"]}
    assert front == {("tflite", "fp16"), ("tflite", "static"), ("tflite", "fp32")}
    only_local = build_report(store, target=["local"])
    assert {r["target"] for r in only_local["rows"]} == {"local"}
    store.close()


def test_text_csv_json_formats(db, capsys):
    assert main(["report", "--db", str(db), "--format", "table", "--target", "pi4"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("pi4") and "static" in ln)
    assert re.search(r"2\.\d\dx \[2\.\d\d, 2\.\d\d\] \*", line) and "-0.50" not in line and "+0.50" in line
    # both CIs side by side: between runs (5 repetitions: the range, with its real level) and within a run
    assert re.search(r"\[3\.\d+, 4\.\d+\] 93\.8% CI \(range\)\s+\[3\.\d+, 4\.\d+\] 95% CI", line), line
    assert "best within 1 pp on pi4 / classifier: tflite static" in out
    assert re.search(r"1\.\d\dx \[0\.\d\d, 1\.\d\d\] ns", next(ln for ln in out.splitlines() if "dynamic" in ln))

    assert main(["report", "--db", str(db), "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 7
    fp16 = next(r for r in rows if r["target"] == "pi4" and r["method"] == "fp16")
    assert fp16["flags"] == "hot" and float(fp16["acc_drop"]) == pytest.approx(6.0)
    assert float(fp16["size_bytes"]) == 52_000 and float(fp16["load_ms"]) == 12.5

    assert main(["report", "--db", str(db), "--json", "--max-drop", "10"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["best"]["pi4 / classifier"]["method"] == "fp16" and data["max_drop"] == 10.0
    assert all("samples" not in r and r["n_samples"] > 0 for r in data["rows"])


def test_user_errors_are_one_line(tmp_path, capsys):
    assert main(["report", "--db", str(tmp_path / "none.sqlite")]) == 2
    err = capsys.readouterr().err
    assert "no results database" in err and len(err.strip().splitlines()) == 1
    ResultStore(tmp_path / "empty.sqlite").close()
    assert main(["report", "--db", str(tmp_path / "empty.sqlite"), "--model", "nope"]) == 2
    assert "no results" in capsys.readouterr().err


def _chromium(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        pytest.skip("needs Debian package chromium (apt-get install chromium) to render the HTML report")
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp / 'chromium-profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_html_report_renders_in_chromium(sqlite_db, tmp_path):
    db = sqlite_db
    out = tmp_path / "report.html"
    assert main(["report", "--db", str(db), "--format", "html", "--out", str(out)]) == 0
    html = out.read_text()
    assert "<script" not in html and "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")

    dom = _chromium(["--dump-dom", out.as_uri()], tmp_path).stdout
    assert "<title>edgebench report</title>" in dom
    kinds = re.findall(r'<svg class="plot" data-kind="([a-z-]+)"', dom)
    assert sorted(kinds) == sorted(["latency-distribution"] * 2 + ["accuracy-latency"] * 2 + ["size-by-method"])
    # pi4: 5 boxes; its scatter has 5 points, 3 on the Pareto front (ringed, joined by the dashed path)
    pi4 = dom[dom.index('id="device-pi4"'):]
    assert pi4.count('<g class="box">') >= 5
    scatter = pi4[pi4.index('data-kind="accuracy-latency"'):]
    scatter = scatter[:scatter.index("</svg>")]
    assert scatter.count('<g class="point') == 5 and scatter.count("point front") == 3
    assert 'class="pareto"' in scatter and "point front best" in scatter
    best = dom[dom.index('id="best"'):dom.index("</ul>", dom.index('id="best"'))]
    assert "pi4 / classifier" in best and "tflite / static" in best
    assert dom.count('class="bar"') == 5             # 4 tflite methods + pytorch fp32
    assert dom.count("<tr") == 8                     # header + 7 rows

    png = tmp_path / "report.png"
    _chromium([f"--screenshot={png}", "--window-size=1400,4000", "--hide-scrollbars", out.as_uri()], tmp_path)
    from PIL import Image

    img = np.asarray(Image.open(png).convert("RGB")).reshape(-1, 3).astype(int)
    # the plots' marks are drawn: thousands of pixels in the first palette colours (blue, red)
    for colour in ((0x1F, 0x77, 0xB4), (0xD6, 0x27, 0x28)):
        assert np.sum(np.all(np.abs(img - colour) < 12, axis=1)) > 500, colour


def test_identical_files_of_two_methods_stay_two_rows(results_location):
    """TensorRT fp16 is an engine flag on the same ONNX file: same sha256, two methods, two rows; a
    1% difference between two runs of one file is not called significant."""
    rng = np.random.default_rng(1)
    store = ResultStore(results_location())
    store.add_benchmark(_bench("jetson", "tensorrt", "fp32", rng.normal(1.00, 0.01, 300), runtime="onnxruntime",
                               sha="same"))
    store.add_benchmark(_bench("jetson", "tensorrt", "fp16", rng.normal(0.99, 0.01, 300), runtime="onnxruntime",
                               sha="same"))
    store.add_eval(_eval("jetson", "tensorrt", "fp32", 0.9, sha="same"))
    store.add_eval(_eval("jetson", "tensorrt", "fp16", 0.9, sha="same"))
    rep = build_report(store)
    assert [(r["method"], r["accuracy"]) for r in rep["rows"]] == [("fp32", 0.9), ("fp16", 0.9)]
    fp16 = _row(rep, "jetson", "tensorrt", "fp16")
    # every paired round says ~1.01 (a tight CI that excludes 1), but it lies inside the 3 % noise floor
    assert fp16["speedup"] == pytest.approx(1.01, abs=0.005) and fp16["speedup_ci"][0] > 1.0
    assert fp16["significant"] is False
    store.close()


def test_unsettled_baseline_makes_the_speedup_unreliable(results_location):
    rng = np.random.default_rng(2)
    store = ResultStore(results_location())
    bimodal = np.concatenate([rng.normal(0.3, 0.01, 100), rng.normal(140.0, 5.0, 100)])
    base = _bench("pi4", "pytorch", "fp32", bimodal, runtime="torch-mobile")
    base["flags"] = ["ci-not-reached(225.8%>2.0%)"]
    store.add_benchmark(base)
    store.add_benchmark(_bench("pi4", "pytorch", "static", rng.normal(0.2, 0.01, 200), runtime="torch-mobile"))
    rep = build_report(store)
    st = _row(rep, "pi4", "pytorch", "static")
    assert st["unstable"] is True and st["speedup"] > 100
    assert re.search(r"x \[[0-9., ]+\] \?", render(rep, "table").splitlines()[3])
    store.close()


def test_drop_needs_the_same_exam_and_fronts_never_mix_models(results_location):
    store = ResultStore(results_location())
    rng = np.random.default_rng(1)
    store.add_benchmark(_bench("pi4", "tflite", "fp32", rng.normal(10.0, 0.2, 100)))
    store.add_benchmark(_bench("pi4", "tflite", "static", rng.normal(4.0, 0.1, 100), precision="int8"))
    store.add_eval(_eval("pi4", "tflite", "fp32", 0.91))
    # the int8 artifact was scored on 200 samples only: a drop against the 1000-sample FP32 run would
    # compare two different exams
    store.add_eval(_eval("pi4", "tflite", "static", 0.80) | {"n": 200})
    # a detector on the same device: its mAP must not share an accuracy axis or a front with top-1
    det = _bench("pi4", "tflite", "fp32", rng.normal(1.0, 0.05, 100), sha="det-fp32") | {
        "model_name": "detector", "task": "detection", "flags": ["temp-rose"],
        "device": {"machine": "aarch64", "cpu_count": 4, "agent_version": "0.1.0",
                   "facts": {"board": "Raspberry Pi 4 Model B Rev 1.4", "cpu_model": "Cortex-A72"}},
        "env_before": {"governor": "ondemand", "temps_c": {"cpu-thermal": 48.0}},
        "env_after": {"governor": "ondemand", "temps_c": {"cpu-thermal": 61.5}}}
    store.add_benchmark(det)
    store.add_eval(_eval("pi4", "tflite", "fp32", 0.5, sha="det-fp32") | {
        "model_name": "detector", "task": "detection", "metrics": {"map50": 0.9, "map50_95": 0.5}})
    rep = build_report(store)
    static = next(r for r in rep["rows"] if r["method"] == "static")
    assert static["accuracy"] == pytest.approx(0.80) and static["acc_drop"] is None
    assert set(rep["pareto"]) == {"pi4 / classifier", "pi4 / detector"}
    det_rows = {i for i, r in enumerate(rep["rows"]) if r["model_name"] == "detector"}
    assert set(rep["pareto"]["pi4 / detector"]) == det_rows
    assert not det_rows & set(rep["pareto"]["pi4 / classifier"])
    html = render(rep, "html")
    dev = rep["devices"]["pi4"]
    assert dev["board"].startswith("Raspberry Pi 4") and dev["governors"] == ["ondemand"]
    assert dev["temp_range_c"] == [48.0, 61.5] and (dev["flagged"], dev["runs"]) == (1, 3)
    assert "pi4: Raspberry Pi 4 Model B Rev 1.4; 4 cores aarch64; governor ondemand; 48-62 °C; device state flagged in 1/3 runs" in html
    assert "pi4 / classifier: top1 vs latency" in html and "pi4 / detector: map50_95 vs latency" in html
    store.close()


def test_each_runtime_row_gets_the_accuracy_measured_on_that_runtime(results_location):
    store = ResultStore(results_location())
    rng = np.random.default_rng(2)
    for rt, top1 in (("litert", 0.91), ("tflite-runtime", 0.89)):
        store.add_benchmark(_bench("pi4", "tflite", "static", rng.normal(4.0, 0.1, 50), runtime=rt))
        store.add_eval(_eval("pi4", "tflite", "static", top1) | {"runtime": {"name": rt, "version": "x"}})
    rows = {r["runtime"]: r for r in build_report(store)["rows"]}
    assert rows["litert"]["accuracy"] == pytest.approx(0.91)
    assert rows["tflite-runtime"]["accuracy"] == pytest.approx(0.89)
    assert len(rows) == 2
    store.close()


def test_a_drop_of_exactly_the_budget_is_within_it(results_location):
    store = ResultStore(results_location())
    rng = np.random.default_rng(3)
    store.add_benchmark(_bench("pi4", "tflite", "fp32", rng.normal(10.0, 0.2, 50)))
    store.add_benchmark(_bench("pi4", "tflite", "static", rng.normal(4.0, 0.1, 50), precision="int8"))
    store.add_eval(_eval("pi4", "tflite", "fp32", 0.91))
    store.add_eval(_eval("pi4", "tflite", "static", 0.90))   # 100 * (0.91 - 0.90) = 1.0000000000000009
    assert build_report(store, max_drop=1.0)["best"]["pi4 / classifier"]["method"] == "static"
    store.close()


def test_report_shows_both_cis_the_cv_and_the_unstable_flag(results_location):
    rng = np.random.default_rng(5)
    store = ResultStore(results_location())
    store.add_benchmark(_bench("pi4", "tflite", "fp32", rng.normal(10.0, 0.2, 250)))
    # repetitions at 8, 10, 12, 9, 11 ms: each repetition is tight, together they disagree by 16 %
    drifting = np.concatenate([rng.normal(c, 0.05, 50) for c in (8.0, 10.0, 12.0, 9.0, 11.0)])
    rec = _bench("pi4", "tflite", "static", drifting, precision="int8")
    rec["flags"] = [rec["between"]["unstable"]]
    store.add_benchmark(rec)
    rep = build_report(store)
    st = _row(rep, "pi4", "tflite", "static")
    assert st["cv"] == pytest.approx(0.158, abs=0.005) and st["unstable"] is True
    assert st["ci_lo"] == pytest.approx(8.0, abs=0.1) and st["ci_hi"] == pytest.approx(12.0, abs=0.1)
    assert st["ci_within"][1] - st["ci_within"][0] < 1.5          # pooled samples: a narrower, within-run CI
    table = render(rep, "table")
    line = next(ln for ln in table.splitlines() if "static" in ln)
    assert "unstable(cv=15.8%)" in line and "15.8%" in line and re.search(r"x \[[0-9., ]+\] \?", line)
    html = render(rep, "html")
    assert html.count('class="ci-between"') == 2 and html.count('class="ci-within"') == 2
    assert "unstable(cv=15.8%)" in html
    data = json.loads(render(rep, "json"))["rows"]
    assert {r["method"]: r["repeats"] for r in data} == {"fp32": 5, "static": 5}
    store.close()


def test_single_run_records_and_old_databases_still_read(tmp_path):
    """A database written before repetitions (no repeats/schedule columns, records without repetitions)
    opens, gains the columns, and its rows say what they are: one run, a within-run CI, no significance."""
    import sqlite3

    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript("""CREATE TABLE benchmarks (id INTEGER PRIMARY KEY AUTOINCREMENT, created REAL, target TEXT,
      sha256 TEXT, model_name TEXT, platform TEXT, method TEXT, precision TEXT, runtime TEXT, record TEXT NOT NULL);""")
    rng = np.random.default_rng(6)
    for method, centre, n in (("fp32", 10.0, 100), ("static", 4.0, 4)):
        rec = _bench("pi4", "tflite", method, rng.normal(centre, 0.1, n), reps=1)
        for k in ("repeats", "between", "schedule", "repetitions"):
            rec.pop(k)
        rec["latency_ms"] = {k: v for k, v in rec["latency_ms"].items() if k not in ("ci", "ci_label", "ci_within")}
        db.execute("INSERT INTO benchmarks (created, target, sha256, model_name, platform, method, precision, "
                   "runtime, record) VALUES (?, 'pi4', ?, 'classifier', 'tflite', ?, ?, 'litert', ?)",
                   (float(n), rec["sha256"], method, method, json.dumps(rec)))
    db.commit()
    db.close()
    store = ResultStore(path)
    cols = {row[1] for row in store.db.execute("PRAGMA table_info(benchmarks)")}
    assert {"repeats", "schedule_id", "cv"} <= cols
    rep = build_report(store)
    st = _row(rep, "pi4", "tflite", "static")
    assert st["repeats"] == 1 and st["speedup"] == pytest.approx(2.5, rel=0.05)
    assert st["significant"] is None and st["speedup_ci"] is None    # one run: no between-run information
    assert st["ci_within_label"] == "range"                           # 4 samples: the range, not a 95 % CI
    line = next(ln for ln in render(rep, "table").splitlines() if "static" in ln)
    assert "- (1 run)" in line and "range" in line and "95% CI" not in line
    store.add_benchmark(_bench("pi4", "tflite", "fp32", rng.normal(10.0, 0.1, 100)))   # a new record still writes
    assert store.db.execute("SELECT repeats FROM benchmarks ORDER BY id DESC LIMIT 1").fetchone() == (5,)
    store.close()


def test_accuracy_baseline_from_another_platform_is_named_on_the_row(results_location):
    rng = np.random.default_rng(7)
    store = ResultStore(results_location())
    store.add_benchmark(_bench("pi4", "pytorch", "fp32", rng.normal(10.0, 0.2, 100), runtime="torch-mobile"))
    store.add_eval(_eval("pi4", "pytorch", "fp32", 0.91))
    store.add_benchmark(_bench("pi4", "tflite", "static", rng.normal(4.0, 0.1, 100)))
    store.add_eval(_eval("pi4", "tflite", "static", 0.90))
    rep = build_report(store)
    st = _row(rep, "pi4", "tflite", "static")
    assert st["acc_drop"] == pytest.approx(1.0) and st["acc_baseline"] == "pytorch fp32"
    assert "(vs pytorch fp32)" in next(ln for ln in render(rep, "table").splitlines() if "static" in ln)
    assert _row(rep, "pi4", "pytorch", "fp32")["acc_baseline"] is None
    store.close()


def test_unwritable_outputs_are_one_line_errors(sqlite_db, tmp_path, capsys):
    db = sqlite_db
    assert main(["report", "--db", str(db), "--format", "html", "--out", str(tmp_path / "missing" / "r.html")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "cannot write the report" in err and "Traceback" not in err
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["noise", "--target", "local", "--db", str(blocker / "sub" / "r.sqlite")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "cannot create the directory" in err


def test_mixed_precision_artifacts_are_marked():
    from host.results.report import _row, method_text

    rec = {"platform": "executorch", "method": "static", "precision": "mixed", "model_name": "m",
           "manifest": {"engine": {"float_layers": ["a.b", "c"]}}}
    row = _row(rec, None)
    assert row["float_layers"] == 2 and method_text(row) == "static/mixed (2 float)"
    assert method_text(_row({**rec, "precision": "int8", "manifest": {}}, None)) == "static/int8"
