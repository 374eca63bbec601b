"""Stored per-operator profiles read back (issue 12): a link dropped mid-profile keeps the ops that arrived,
flagged; `host report` shows each profiled artifact's top ops (table, JSON, HTML with a stacked bar by op type),
with ops that stayed float in an int8 artifact and ops outside the delegate marked; `host compare-ops A B` diffs
two stored profiles by the selectors a user types. Real agent, real runtimes (ONNX Runtime, ExecuTorch)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
import socket
import threading
import time
from pathlib import Path

import pytest

from host.artifacts import load_artifact
from host.client import AgentClient, remember_agent
from host.profile import profile_artifact
from host.results.store import ResultStore
from host.targets import LOCAL
from tests.conftest import host
from tests.test_profile import models  # noqa: F401  (the module fixture: fp32 / int8 ONNX, XNNPACK .pte)

pytestmark = pytest.mark.skipif(not all(importlib.util.find_spec(m) for m in ("torch", "onnxruntime", "onnx")),
                                reason="needs torch + onnxruntime + onnx (extras: host, onnx)")


class SlowLink:
    """A TCP link between the host and the agent: requests pass freely, replies trickle (256 bytes every 5 ms,
    ~50 KB/s, a slow radio link) so a profile's op events arrive one by one; cut() drops the link at once, as a
    cable pulled or a device gone (the same moment tests/test_partial_results.py picks by event, without
    killing the agent)."""

    def __init__(self, upstream: str):
        host_, port = upstream.rsplit(":", 1)
        self.upstream = (host_, int(port))
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(8)
        self.address = f"127.0.0.1:{self.srv.getsockname()[1]}"
        self.socks: list[socket.socket] = []
        self.cut_at: float | None = None
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            u = socket.create_connection(self.upstream)
            self.socks += [c, u]
            threading.Thread(target=self._pipe, args=(c, u, 0), daemon=True).start()
            threading.Thread(target=self._pipe, args=(u, c, 256), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, chunk: int) -> None:
        try:
            while self.cut_at is None and (data := src.recv(chunk or 65536)):
                for i in range(0, len(data), chunk or len(data)):
                    if self.cut_at is not None:
                        return
                    dst.sendall(data[i:i + (chunk or len(data))])
                    if chunk:
                        time.sleep(0.005)
        except OSError:
            pass

    def cut(self) -> None:
        self.cut_at = time.monotonic()
        for s in self.socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self.srv.close()
        if self.cut_at is None:
            self.cut()


def _stored(agent, store: ResultStore, path: Path, runs: int = 5, **kw) -> dict:
    art = load_artifact(path)
    with AgentClient(kw.pop("address", agent.address)) as c:
        c.push(art.path, art.manifest.sha256, art.manifest.format, art.manifest.to_json())
        return profile_artifact(c, LOCAL, art, c.run_options(threads=1), runs, store, lambda m: None, **kw)


def test_link_dropped_mid_profile_keeps_what_arrived_flagged(agent, models, env, tmp_path):  # noqa: F811
    store = ResultStore(tmp_path / "r.sqlite")
    full = _stored(agent, store, models["int8"], runs=200)   # the same profile over a link that holds
    link = SlowLink(agent.address)
    remember_agent(link.address, agent.secret)
    arrived = []

    def on_event(kind, result):
        if kind == "op":
            arrived.append(result["ops"][-1]["name"])
            if len(arrived) == 3:
                link.cut()
    try:
        rec = _stored(agent, store, models["int8"], runs=200, address=link.address, on_event=on_event)
    finally:
        link.close()
    n_full = len(full["ops"])
    assert n_full >= 8 and not full["flags"]
    # what arrived before the cut is kept (a chunk in flight may complete one more op), nothing after it
    assert 3 <= len(rec["ops"]) < n_full and [o["name"] for o in rec["ops"]][:3] == arrived
    assert [o["name"] for o in rec["ops"]] == [o["name"] for o in full["ops"]][:len(rec["ops"])]
    assert all(len(o["times_ms"]) == 200 for o in rec["ops"]) and rec["runs"] == 200
    assert len(rec["flags"]) == 1 and rec["flags"][0].startswith(f"incomplete(link lost after {len(rec['ops'])} ops")
    # no summary arrived: the run totals were not measured, so coverage and overhead are missing, never 0
    assert rec["run_totals_ms"] == [] and rec["coverage"] != rec["coverage"] and rec["overhead"] != rec["overhead"]
    stored = [p for p in store.profiles() if p["id"] == rec["id"]][0]
    assert stored["flags"] == rec["flags"] and len(stored["ops"]) == len(rec["ops"])
    # the agent is unharmed: the next profile over a good link is whole
    assert not _stored(agent, store, models["int8"], runs=3)["flags"]
    store.close()
    # readers show the flag: the report's head line, compare-ops' note (on what arrived)
    r = host(env, "compare-ops", str(full["id"]), str(rec["id"]), "--db", str(tmp_path / "r.sqlite"))
    assert r.returncode == 0 and "B is flagged: incomplete(link lost" in r.stdout, r.stderr[-2000:]
    r = host(env, "compare-ops", "--list", "--db", str(tmp_path / "r.sqlite"), "--json")
    listed = {row["id"]: row for row in json.loads(r.stdout)}
    assert listed[str(rec["id"])]["flags"].startswith("incomplete(") and listed[str(full["id"])]["flags"] == "-"


def test_report_and_compare_ops_read_stored_profiles(agent, models, env, tmp_path):  # noqa: F811
    db = tmp_path / "r.sqlite"
    store = ResultStore(db)
    fp32, int8 = _stored(agent, store, models["fp32"]), _stored(agent, store, models["int8"])
    pte = _stored(agent, store, models["pte"]) if "pte" in models else None
    store.close()
    assert any(o.get("stayed_float") for o in int8["ops"])          # ReduceMean runs in float between Q/DQ
    if pte:   # mean on portable kernels beside the XNNPACK call
        assert [o["op_type"] for o in pte["ops"] if o.get("outside_delegate")] == ["mean"]

    r = host(env, "report", "--db", str(db), "--top-ops", "3")
    assert r.returncode == 0, r.stderr[-2000:]
    heads = [ln for ln in r.stdout.splitlines() if ln.startswith("  local / ")]
    assert len(heads) == 2 + bool(pte) and "stayed float" in heads[1] and f"profile #{int8['id']}" in heads[1]
    top = sorted(int8["ops"], key=lambda o: -o["median_ms"])[:3]
    block = r.stdout.split(heads[1])[1]
    assert all(o["name"][:56] in block for o in top)

    r = host(env, "report", "--db", str(db), "--json", "--top-ops", "4")
    profs = {p["artifact"]: p for p in json.loads(r.stdout)["profiles"]}
    p8 = profs["net_int8.onnx"]
    assert [o["name"] for o in p8["top_ops"]] == [o["name"] for o in
                                                   sorted(int8["ops"], key=lambda o: -o["median_ms"])[:4]]
    fams = {f["family"]: f for f in p8["by_type"]}
    assert fams["conv"]["types"] == ["QLinearConv"] and fams["conv"]["ops"] == 2
    assert sum(f["share"] for f in p8["by_type"]) == pytest.approx(1.0)
    if pte:
        assert "1 op outside the delegate" in heads[2] and profs["net_xnnpack.pte"]["status"] == "ok"

    html = tmp_path / "r.html"
    r = host(env, "report", "--db", str(db), "--format", "html", "--out", str(html), "--top-ops", "50")
    assert r.returncode == 0, r.stderr[-2000:]
    page = html.read_text()
    segs = re.findall(r'data-artifact="([^"]+)" data-family="([^"]+)" data-share="([0-9.]+)"', page)
    for name in ("net_fp32.onnx", "net_int8.onnx"):   # one stacked bar per artifact: its shares add to 1
        assert sum(float(s) for a, _, s in segs if a == name) == pytest.approx(1.0, abs=2e-3)
    fams_int8 = {f for a, f, _ in segs if a == "net_int8.onnx"}
    # the 8 families with the most time get a colour (the rest is "other"): conv leads every bar here
    assert "conv" in fams_int8 and len(fams_int8 - {"other"}) <= 8
    assert 'class="flag">stayed float' in page and (not pte or 'class="flag">outside delegate' in page)

    # compare-ops: by id, and by ARTIFACT@TARGET; the same rows as the comparison host profile --compare prints
    from host.profile import compare
    r = host(env, "compare-ops", str(fp32["id"]), "net_int8.onnx@local", "--db", str(db), "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    c = json.loads(r.stdout)
    want = compare(fp32, int8)
    assert [(x["match"], (x["a"] or {}).get("name"), (x["b"] or {}).get("name")) for x in c["rows"]] == \
        [(x["match"], (x["a"] or {}).get("name"), (x["b"] or {}).get("name")) for x in want["rows"]]
    by = {t["family"]: t for t in c["by_type"]}
    assert by["conv"]["a_ms"] > 0 and by["conv"]["b_ms"] > 0 and by["quantizelinear"]["a_ms"] is None
    r = host(env, "compare-ops", "net_fp32.onnx", str(int8["id"]), "--db", str(db))
    assert r.returncode == 0 and "only B" in r.stdout, r.stderr[-2000:]
    assert "where the time went" in r.stdout and "on local" in r.stdout
    r = host(env, "compare-ops", "--list", "--db", str(db))
    assert r.returncode == 0 and "net_int8.onnx" in r.stdout

    # one artifact on two devices (a second target name on the same agent here): ARTIFACT@TARGET picks each side,
    # the bare name is ambiguous and says so; every layer pairs with itself by name
    store = ResultStore(db)
    art = load_artifact(models["fp32"])
    with AgentClient(agent.address) as cl:
        profile_artifact(cl, dataclasses.replace(LOCAL, name="bench2"), art, cl.run_options(threads=1), 5, store,
                         lambda m: None)
    store.close()
    r = host(env, "compare-ops", "net_fp32.onnx@local", "net_fp32.onnx@bench2", "--db", str(db), "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    c = json.loads(r.stdout)
    assert (c["a"]["target"], c["b"]["target"]) == ("local", "bench2")
    assert [x["match"] for x in c["rows"]] == ["name"] * len(fp32["ops"])
    r = host(env, "compare-ops", "net_fp32.onnx", "net_fp32.onnx@bench2", "--db", str(db))
    assert r.returncode == 2 and "profiled on bench2, local" in r.stderr
    for bad in (("999", str(fp32["id"])), ("nothing.onnx@local", "1"), (str(fp32["id"]), str(fp32["id"]))):
        r = host(env, "compare-ops", *bad, "--db", str(db))
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "error:" in r.stderr


def test_marks_and_xnnpack_precision_on_captured_rows():
    """Pure parts on rows shaped like the runtimes' own: XNNPACK labels name a datatype after the layout (a
    layout alone says nothing: no precision); outside-delegate marks only where the profiler sees the delegate."""
    from agent.runtimes.profiling import _xnn_precision
    from host.profile import mark_ops

    assert [_xnn_precision(x) for x in ("Convolution (NHWC, QC8) IGEMM", "Fully Connected (NC, QD8, F32, QC8W)",
                                        "Convolution (NHWC, F32) IGEMM", "Add (ND)", "Clamp (NC)")] == \
        ["int8", "int8", "fp32", "", ""]

    def rec(delegate: str, rows: list[tuple[str, str]]) -> dict:
        return mark_ops({"runtime": {"delegate": delegate},
                         "ops": [{"op_type": t, "backend": b, "precision": "fp32"} for t, b in rows]})
    et = rec("xnnpack", [("Convolution (NHWC, F32) IGEMM", "xnnpack"), ("delegate call", "xnnpack"),
                         ("mean", "portable")])
    assert [o["outside_delegate"] for o in et["ops"]] == [False, False, True]
    ort_ep = rec("XnnpackExecutionProvider", [("Conv", "xnnpack"), ("Gather", "cpu")])
    assert [o["outside_delegate"] for o in ort_ep["ops"]] == [False, True]
    for plain in (rec("cpu", [("Conv", "cpu")]), rec("gpu", [("conv1 + relu1", "tensorrt")]),
                  rec("none", [("aten::conv2d", "cpu")])):
        assert not any("outside_delegate" in o for o in plain["ops"])   # nothing to be outside of
    int8 = mark_ops({"runtime": {}, "ops": [{"op_type": "QLinearConv", "backend": "cpu", "precision": "int8"},
                                            {"op_type": "ReduceMean", "backend": "cpu", "precision": "fp32"}]})
    assert [o["stayed_float"] for o in int8["ops"]] == [False, True]


@pytest.mark.skipif(not importlib.util.find_spec("executorch"), reason="needs executorch (extra: executorch)")
def test_quantize_writes_the_etrecord_the_profile_reads(agent, env, tmp_path):
    """`host quantize` for ExecuTorch keeps an ETRecord beside the .pte; a profile of that artifact then names its
    rows by torch module (conv, depthwise conv, linear of ReLU6Net); without it the rows keep the runtime's names."""
    out = tmp_path / "out"
    r = host(env, "quantize", "--model", "tests.models_for_tests:relu6_net", "--platform", "executorch",
             "--method", "fp32", "--check-samples", "4", "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    pte = Path(json.loads(r.stdout)[0]["path"])
    etrecord = pte.with_name(pte.name + ".etrecord")
    assert etrecord.is_file() and json.loads(Path(str(pte) + ".manifest.json").read_text())["checks"]["etrecord"] \
        == etrecord.name
    store = ResultStore(tmp_path / "r.sqlite")
    rec = _stored(agent, store, pte)
    assert rec["sources_from"] == etrecord.name
    assert [o["source"] for o in rec["ops"] if o["source"]] == ["c1", "c2", "fc"]
    etrecord.unlink()
    bare = _stored(agent, store, pte)
    assert "sources_from" not in bare and not any(o["source"] for o in bare["ops"])


@pytest.mark.skipif(not importlib.util.find_spec("executorch"), reason="needs executorch (extra: executorch)")
def test_pointwise_conv_maps_to_the_fully_connected_op_xnnpack_runs(agent, tmp_path):
    """XNNPACK runs a 1x1 convolution as a Fully Connected GEMM: the ETRecord mapping counts it with the linears,
    so each row names its own module (EfficientNet-Lite0: 60 of 65 ops named, fp32 and int8; was 18, partly wrong)."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.spatial = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.point = torch.nn.Conv2d(8, 16, 1)
            self.head = torch.nn.Linear(16, 4)

        def forward(self, x):
            return self.head(self.point(torch.relu(self.spatial(x))).mean((2, 3)))

    ep = torch.export.export(Net().eval(), (torch.randn(1, 3, 16, 16),))
    et = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()], generate_etrecord=True).to_executorch()
    pte = tmp_path / "pw.pte"
    pte.write_bytes(et.buffer)
    et.get_etrecord().save(str(pte) + ".etrecord")
    rec = _stored(agent, ResultStore(tmp_path / "r.sqlite"), pte, runs=3)
    named = {o["op_type"].split(" (")[0] + ":" + o["source"] for o in rec["ops"] if o["source"]}
    assert {"Convolution:spatial", "Fully Connected:point", "Fully Connected:head"} <= named
