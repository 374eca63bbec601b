"""Real unlabelled data: scikit-image's photos as views with disjoint calib/check splits, and the fortunes
text corpus split the same way and tokenized for MiniLM."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from host.data import photos, text
from host.data.datasets import DatasetError, Preprocess, load_dataset

pytest.importorskip("skimage")
SMALL = Preprocess.parse("resize=32x32")  # same views, small pixels: fast pixel-level checks


def _digests(x: np.ndarray) -> set[str]:
    return {hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest() for a in x}


def test_photo_splits_are_disjoint_and_cover_every_photo():
    calib, check = photos.views("calib"), photos.views("check")
    assert len(calib) == 15 * len(photos.PHOTOS) and len(check) == 10 * len(photos.PHOTOS)
    assert not {v.label() for v in calib} & {v.label() for v in check}
    assert all(v.flip for v in check) and not any(v.flip for v in calib)
    a, b = load_dataset("photos:calib", pp=SMALL), load_dataset("photos:check", pp=SMALL)
    assert a.y is None and b.y is None and a.x.shape == (285, 3, 32, 32) and b.x.shape == (190, 3, 32, 32)
    assert not _digests(a.x) & _digests(b.x)  # no check image is a calibration image, pixel for pixel
    assert {lab.split("@")[0] for lab in b.meta["views"]} == set(photos.PHOTOS)


def test_photos_are_deterministic_and_preprocessed_for_efficientnet():
    a = load_dataset("photos:check", limit=12)
    b = load_dataset("photos", split="test", limit=12)  # train/test are aliases of calib/check
    np.testing.assert_array_equal(a.x, b.x)
    assert a.x.shape == (12, 3, 224, 224) and a.x.dtype == np.float32
    assert a.preprocess == photos.PREPROCESS and -1.0 <= a.x.min() and a.x.max() <= 1.0  # (pixel-127)/128
    assert a.meta["views"][1] == "chelsea@0.9:0.5,0.5:flip"     # view-major: a prefix covers every photo
    assert len({v.split("@")[0] for v in load_dataset("photos:calib", limit=len(photos.PHOTOS)).meta["views"]}) \
        == len(photos.PHOTOS)


def test_grey_photos_get_three_equal_channels_and_preprocess_is_honoured():
    ds = photos.load("all", only=("camera",))
    assert ds.x.shape == (1, 3, 224, 224)
    np.testing.assert_array_equal(ds.x[0, 0], ds.x[0, 2])
    g = load_dataset("photos", pp=Preprocess.parse("channels=1,mean=0.5,std=0.25"))
    assert g.x.shape == (len(photos.PHOTOS), 1, 224, 224) and g.preprocess.resize == (224, 224)
    with pytest.raises(DatasetError, match="splits calib and check"):
        load_dataset("photos:val")


def test_text_splits_are_disjoint_deterministic_and_tokenized():
    pytest.importorskip("tokenizers")
    if not text.FORTUNES_DIR.is_dir():
        pytest.skip("apt package fortunes is not installed (make setup installs it)")
    calib, check = load_dataset("text:calib", limit=64), load_dataset("text:check", limit=64)
    assert not set(calib.meta["texts"]) & set(check.meta["texts"])
    assert all(text.split_of(t) == "check" for t in check.meta["texts"])
    all_texts = text.sentences()
    assert len(all_texts) > 1000 and len(set(all_texts)) == len(all_texts)
    again = load_dataset("text:check", limit=64)
    np.testing.assert_array_equal(again.x, check.x)
    ids, mask = check.inputs["input_ids"], check.inputs["attention_mask"]
    assert ids.dtype == mask.dtype == np.int64 and ids.shape == (64, 128) and check.x is ids
    np.testing.assert_array_equal(mask, (ids != 0).astype(np.int64))  # [PAD] = 0 only where padding
    assert (ids[:, 0] == 101).all() and check.task == "embedding"
    part = check.take(5, start=3)
    assert part.meta["texts"] == check.meta["texts"][3:8] and part.inputs["attention_mask"].shape == (5, 128)
    assert [a.shape for a in part.input_arrays()] == [(5, 128), (5, 128)]


def test_text_without_the_corpus_is_one_line(tmp_path):
    with pytest.raises(DatasetError, match="apt-get install fortunes"):
        text.load("calib", root=tmp_path)
    with pytest.raises(DatasetError, match="--preprocess applies to images"):
        load_dataset("text:calib", pp=Preprocess())
