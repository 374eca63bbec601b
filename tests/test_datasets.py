"""Data loaders users point --calib / --data at: image folders (with a preprocessing spec), arrays,
and the one-line errors for data that cannot be used."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from host.data.datasets import DatasetError, Preprocess, load_dataset


def _folder(root: Path, classes: int = 3, per_class: int = 4, size=(10, 12), mode: str = "RGB") -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            shape = (*size, 3) if mode == "RGB" else size
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(root / f"class{c}" / f"{i}.png")
    return root


def test_a_limited_folder_slice_covers_every_class(tmp_path):
    ds = load_dataset(str(_folder(tmp_path / "imgs")), limit=6)
    assert ds.y.tolist() == [0, 1, 2, 0, 1, 2] and ds.classes == ["class0", "class1", "class2"]
    assert ds.x.shape == (6, 3, 10, 12) and ds.x.dtype == np.float32


def test_preprocess_spec_resizes_normalises_and_goes_grey(tmp_path):
    pp = Preprocess.parse("resize=8x6,mean=0.5,std=0.25,channels=1")
    assert pp.resize == (8, 6) and pp.mean == (0.5,) and pp.std == (0.25,) and pp.channels == 1
    ds = load_dataset(str(_folder(tmp_path / "imgs")), pp=pp)
    assert ds.x.shape == (12, 1, 8, 6)
    assert ds.x.min() >= (0 - 0.5) / 0.25 - 1e-6 and ds.x.max() <= (1 - 0.5) / 0.25 + 1e-6
    assert ds.preprocess.to_dict()["resize"] == (8, 6)


def test_unusable_data_is_one_line(tmp_path):
    root = _folder(tmp_path / "mixed", classes=1, per_class=1)
    _folder(tmp_path / "other", classes=1, per_class=1, size=(20, 20))
    (tmp_path / "other" / "class0" / "0.png").rename(root / "class0" / "big.png")
    with pytest.raises(DatasetError, match="differ in size.*resize=HxW"):
        load_dataset(str(root))
    (root / "class0" / "big.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="cannot read image"):
        load_dataset(str(root))
    with pytest.raises(DatasetError, match="splits train and test"):
        load_dataset("fashion-mnist:val")
    with pytest.raises(DatasetError, match="bad --preprocess part 'resize=axb'"):
        Preprocess.parse("resize=axb")
    with pytest.raises(DatasetError, match="applies to image folders"):
        load_dataset("digits", pp=Preprocess())


def test_npz_arrays_with_labels(tmp_path):
    x = np.random.default_rng(0).standard_normal((5, 1, 4, 4)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(5))
    ds = load_dataset(str(tmp_path / "d.npz"), limit=3)
    np.testing.assert_array_equal(ds.x, x[:3])
    assert ds.y.tolist() == [0, 1, 2]
