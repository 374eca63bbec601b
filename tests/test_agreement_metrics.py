"""Label-free metrics: how a converted model agrees with its FP32 source."""

from __future__ import annotations

import numpy as np
import pytest

from host.data import metrics as M


def test_classifier_agreement_top1_top5_cosine():
    ref = np.array([[5.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0],
                    [0.0, 4.0, 3.0, 0.0, 0.0, 0.0, 0.0],
                    [0.0, 0.0, 1.0, 2.0, 0.0, 0.0, 0.0]])
    out = ref.copy()
    out[1] = [0.0, 3.0, 4.0, 0.0, 0.0, 0.0, 0.0]        # top-1 flips, FP32's answer still 2nd
    out[2] = [9.0, 8.0, 7.0, 0.0, 6.0, 5.0, 1.0]        # FP32's answer (3) fell out of the top 5
    r = M.classifier_agreement(out, ref)
    assert r["top1_agreement"] == pytest.approx(1 / 3)
    assert r["top5_agreement"] == pytest.approx(2 / 3)
    cos1 = 24.0 / 25.0
    cos2 = 7.0 / (np.sqrt(5.0) * np.linalg.norm(out[2]))
    assert r["cosine"] == pytest.approx((1.0 + cos1 + cos2) / 3)
    assert M.classifier_agreement(ref, ref) == {"top1_agreement": 1.0, "top5_agreement": 1.0,
                                                "cosine": pytest.approx(1.0)}
    with pytest.raises(ValueError):
        M.classifier_agreement(out[:, :5], ref)


def test_embedding_cosine_and_nearest_neighbour_agreement():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((6, 8))
    ref[1] = ref[0] + 0.01 * rng.standard_normal(8)       # 0 and 1 are each other's nearest neighbours
    assert M.nearest_neighbours(ref)[:2].tolist() == [1, 0]
    same = M.embedding_agreement(ref * 3.0, ref)          # scale does not change cosine or neighbours
    assert same == {"cosine": pytest.approx(1.0), "min_cosine": pytest.approx(1.0), "nn_agreement": 1.0}
    moved = ref.copy()
    moved[1] = -ref[1]                                    # sample 1 now points away: cosine -1
    r = M.embedding_agreement(moved, ref)
    assert r["min_cosine"] == pytest.approx(-1.0)
    assert r["cosine"] == pytest.approx(4.0 / 6.0)
    assert r["nn_agreement"] < 1.0                        # 0 and 1 no longer find each other
