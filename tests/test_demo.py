"""`python -m host.demo` end to end on a reduced matrix: the zoo classifier (from the cache) quantized, and the
pretrained EfficientNet-Lite0 in fp32 only, deployed to the local agent it starts (under a private
EDGEBENCH_HOME), benchmarked and evaluated on the device (the classifier on labels, EfficientNet by agreement
with its FP32 source on photos:check), the table printed, the HTML report written, the results readable by
`host report`, and the agent stopped afterwards."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

PLATFORM, METHODS = "tflite", ("fp32", "static")   # executorch too would add ~40 s on 2 cores
PRECISION = {"fp32": "fp32", "static": "int8"}


def _agents_under(home: Path) -> list[int]:
    """Pids of live processes whose command line names a path under `home` (the local agent's store)."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes()
        except OSError:
            continue
        if str(home).encode() in cmd and b"serve" in cmd:
            pids.append(int(d.name))
    return pids


def _table_rows(text: str) -> dict[tuple[str, str, str], dict[str, str]]:
    """The comparison table's data rows keyed by (model, platform, method/precision)."""
    lines = text.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.startswith("target") and "platform" in ln)
    cols = re.split(r"\s{2,}", lines[head].strip())
    rows = {}
    for ln in lines[head + 2:]:
        if not ln.strip():
            break
        cells = dict(zip(cols, re.split(r"\s{2,}", ln.strip())))
        rows[(cells["model"], cells["platform"], cells["method"])] = cells
    return rows


def test_demo_reduced_matrix(tmp_path, monkeypatch, capsys):
    pytest.importorskip("torch", reason="needs torch (the 'host' extra) for the reference classifier")
    pytest.importorskip("litert_torch", reason="needs litert-torch (the 'host' extra) for .tflite from PyTorch")
    pytest.importorskip("ai_edge_litert", reason="needs ai-edge-litert (the 'tflite' extra) on the agent")
    from host.cli import main as host_main
    from host.demo import main
    from host.results.store import ResultStore
    from host.targets import get_target
    from host.transports.local import LocalTransport

    home, out = tmp_path / "home", tmp_path / "out"
    monkeypatch.setenv("EDGEBENCH_HOME", str(home))     # the local agent's state; the zoo cache stays shared
    monkeypatch.delenv("EDGEBENCH_DB", raising=False)
    try:
        rc = main(["--platform", PLATFORM, "--method", ",".join(METHODS), "--data-limit", "100",
                   "--min-seconds", "0.2", "--max-seconds", "0.5", "--real-methods", "fp32", "--out", str(out)])
        printed = capsys.readouterr().out
        left = _agents_under(home)
        status_rc = host_main(["agent", "status", "--target", "local", "--json"])
        status = json.loads(capsys.readouterr().out)
    finally:
        LocalTransport(get_target("local")).stop_agent()  # only if the demo failed to: never leave one behind
    assert rc == 0, printed

    # the demo stopped the local agent it started (`agent status` exits 1 for "not running")
    assert status_rc == 1 and status["running"] is False and status["pid"] is None
    assert str(home) in status["log"] and left == []

    # the printed table: one row per (platform, method) with the accuracy measured on the device
    all_rows = _table_rows(printed)
    real = all_rows.pop(("efficientnet_lite0", PLATFORM, "fp32/fp32"))
    assert re.fullmatch(r"top1_agreement 100\.00%", real["accuracy"]), real   # the FP32 artifact is its source
    rows = {(p, m): cells for (model, p, m), cells in all_rows.items()}
    assert set(rows) == {(PLATFORM, f"{m}/{PRECISION[m]}") for m in METHODS} and len(rows) == len(all_rows)
    for cells in rows.values():
        assert cells["target"] == "local" and cells["model"] == "classifier"
        acc = re.fullmatch(r"top1 (\d+\.\d\d)%", cells["accuracy"])
        assert acc and 70.0 < float(acc.group(1)) <= 100.0, cells
    assert rows[(PLATFORM, "fp32/fp32")]["speed-up [CI]"] in ("1.00x (ref)", "1.00x (ref) ?")  # ? = unstable here
    assert "best within 1 pp on local / classifier" in printed

    # the HTML report with its plots
    html = out / "report.html"
    assert f"HTML report: {html}" in printed and html.is_file()
    page = html.read_text()
    kinds = set(re.findall(r'<svg class="plot" data-kind="([a-z-]+)"', page))
    assert {"latency-distribution", "accuracy-latency", "size-by-method"} <= kinds, kinds
    assert all(f"{m}/{PRECISION[m]}" in page for m in METHODS)          # one results row per method
    assert "efficientnet_lite0" in page

    # `host report --format json` on the demo's database holds what the demo stored
    db = out / "results.sqlite"
    assert host_main(["report", "--db", str(db), "--format", "json", "--model", "classifier"]) == 0
    rep = json.loads(capsys.readouterr().out)
    store = ResultStore(db)
    try:
        benches = {b["sha256"]: b for b in store.benchmarks(target="local") if b["model_name"] == "classifier"}
        evals = {e["sha256"]: e for e in store.evals(target="local") if e["model_name"] == "classifier"}
    finally:
        store.close()
    assert len(benches) == len(evals) == len(METHODS) == len(rep["rows"])
    for r in rep["rows"]:
        assert r["target"] == "local" and r["platform"] == PLATFORM and r["method"] in METHODS
        b, e = benches[r["sha256"]], evals[r["sha256"]]
        assert r["p50"] == pytest.approx(b["latency_ms"]["p50"], rel=1e-9)
        assert r["p90"] == pytest.approx(b["latency_ms"]["p90"], rel=1e-9)
        assert r["runs"] == b["runs"] and r["size_bytes"] == b["size_bytes"]
        assert r["metric"] == "top1" and r["accuracy"] == pytest.approx(e["metrics"]["top1"])
        assert r["eval_n"] == 100 and e["n"] == 100
        cells = rows[(PLATFORM, f"{r['method']}/{r['precision']}")]
        assert cells["p50 ms"] == f"{r['p50']:.4g}"                          # the table shows the same numbers
        assert cells["reps"] == str(b["repeats"]) == "5" and "CI" in cells["p50 CI (between runs)"]
        assert cells["accuracy"] == f"top1 {100 * r['accuracy']:.2f}%"
    (best,) = rep["best"].values()
    assert set(rep["best"]) == {"local / classifier"}
    assert best["artifact"] in {r["artifact"] for r in rep["rows"]} and best["acc_drop"] <= rep["max_drop"] + 1e-9
    assert os.path.isdir(out / "artifacts")
