"""Data loading: digits, CIFAR-10 python format, image folders, batching and augmentation."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from autoprune.data import Split, augment_batch, batches, endless_batches, load_data
from autoprune.errors import UserError


def _rows(images: torch.Tensor) -> list[bytes]:
    return sorted(bytes(img.numpy().tobytes()) for img in images)


def test_digits_split_is_a_deterministic_partition() -> None:
    a = load_data("digits", image_size=16, seed=0)
    b = load_data("digits", image_size=16, seed=0)
    assert a.input_shape == (1, 16, 16) and a.num_classes == 10 and not a.augment
    assert a.train.images.dtype == torch.uint8 and a.train.labels.dtype == torch.int64
    assert (len(a.train), len(a.val), len(a.test)) == (1078, 360, 359)
    for s, t in ((a.train, b.train), (a.val, b.val), (a.test, b.test)):
        assert torch.equal(s.images, t.images) and torch.equal(s.labels, t.labels)
    # the three splits are a partition of the whole data set (as a multiset of images)
    from sklearn.datasets import load_digits

    whole = load_data("digits", image_size=16, seed=0)
    every = torch.cat([whole.train.images, whole.val.images, whole.test.images])
    assert every.shape[0] == len(load_digits().images)
    by_seed = load_data("digits", image_size=16, seed=1)
    assert _rows(every) == _rows(
        torch.cat([by_seed.train.images, by_seed.val.images, by_seed.test.images])
    )
    # the test split never depends on the seed; val does
    assert torch.equal(by_seed.test.images, a.test.images)
    assert not torch.equal(by_seed.val.labels, a.val.labels) or not torch.equal(
        by_seed.val.images, a.val.images
    )
    # val is stratified: every class present
    assert set(a.val.labels.tolist()) == set(range(10))
    assert len(a.mean) == 1 and 0.0 < a.mean[0] < 1.0 and a.std[0] > 0.0


def test_digits_natural_size_and_values() -> None:
    d = load_data("digits")
    assert d.input_shape == (1, 16, 16)
    assert int(d.train.images.max()) == 255 and int(d.train.images.min()) == 0


def test_batches_are_deterministic_and_normalised() -> None:
    d = load_data("digits", image_size=16, seed=0)
    one = list(batches(d, d.train, 100, seed=3, shuffle=True, augment=True))
    two = list(batches(d, d.train, 100, seed=3, shuffle=True, augment=True))
    other = list(batches(d, d.train, 100, seed=4, shuffle=True, augment=True))
    assert len(one) == 11 and one[-1][0].shape[0] == 78
    assert all(
        torch.equal(x1, x2) and torch.equal(y1, y2)
        for (x1, y1), (x2, y2) in zip(one, two, strict=True)
    )
    assert not torch.equal(one[0][1], other[0][1])
    x, y = next(batches(d, d.train, 2000, seed=0, shuffle=False))
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert abs(float(x.mean())) < 1e-3 and abs(float(x.std()) - 1.0) < 1e-2
    assert len(list(batches(d, d.train, 100, seed=0, shuffle=False, drop_last=True))) == 10


def test_endless_batches_reshuffle_each_epoch() -> None:
    d = load_data("digits", image_size=8, seed=0)
    small = d.train.subset(20, seed=0)
    it = endless_batches(d, small, 10, seed=0, augment=False)
    first = [next(it)[1] for _ in range(2)]
    second = [next(it)[1] for _ in range(2)]
    assert sorted(torch.cat(first).tolist()) == sorted(torch.cat(second).tolist())
    assert not torch.equal(torch.cat(first), torch.cat(second))


def test_subset_is_deterministic_and_stratified() -> None:
    d = load_data("digits", image_size=8, seed=0)
    s1, s2 = d.train.subset(50, seed=7), d.train.subset(50, seed=7)
    assert len(s1) == 50 and torch.equal(s1.images, s2.images)
    counts = torch.bincount(s1.labels, minlength=10)
    assert int(counts.min()) >= 4 and int(counts.max()) <= 6
    assert not torch.equal(d.train.subset(50, seed=8).images, s1.images)
    assert d.train.subset(10_000, seed=0) is d.train


def test_augment_batch_is_a_padded_crop_or_its_mirror() -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(1, 256, (16, 2, 8, 8), dtype=torch.uint8)
    out = augment_batch(images, g)
    assert out.shape == images.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(images, (1, 1, 1, 1))
    for i in range(16):
        crops = [
            p[:, dy : dy + 8, dx : dx + 8]
            for p in (padded[i], padded[i].flip(2))
            for dy in range(3)
            for dx in range(3)
        ]
        assert any(torch.equal(out[i], c) for c in crops)
    assert not torch.equal(out, images)  # 16 images: some were moved or flipped


def _write_cifar(root: str, n: int = 20, protocol: int = 2) -> np.ndarray:
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(0)
    first = None
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n)]
        first = data if first is None else first
        with open(os.path.join(root, name), "wb") as f:
            pickle.dump({b"batch_label": b"x", b"data": data, b"labels": labels}, f, protocol)
    return first


@pytest.mark.parametrize("nested,protocol", [(False, 2), (True, 5)])
def test_cifar10_python_format(tmp_path, nested: bool, protocol: int) -> None:
    root = tmp_path / "cifar-10-batches-py" if nested else tmp_path
    first = _write_cifar(str(root), protocol=protocol)
    d = load_data(f"cifar10:{tmp_path}", seed=0)
    assert d.input_shape == (3, 32, 32) and d.num_classes == 10 and d.augment
    assert len(d.train) + len(d.val) == 100 and len(d.val) == 10 and len(d.test) == 20
    everything = torch.cat([d.train.images, d.val.images])
    target = torch.from_numpy(first[0].reshape(3, 32, 32))
    assert any(torch.equal(img, target) for img in everything)
    assert len(d.mean) == 3 and all(0.3 < m < 0.7 for m in d.mean)
    small = load_data(f"cifar10:{tmp_path}", image_size=16)
    assert small.input_shape == (3, 16, 16)


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_cifar10_refuses_forbidden_globals(tmp_path) -> None:
    _write_cifar(str(tmp_path))
    marker = tmp_path / "pwned"
    with open(tmp_path / "data_batch_3", "wb") as f:
        pickle.dump({b"data": _Evil(str(marker)), b"labels": []}, f, protocol=2)
    with pytest.raises(UserError, match="system"):
        load_data(f"cifar10:{tmp_path}")
    assert not marker.exists()


def test_cifar10_bad_inputs(tmp_path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_data(f"cifar10:{tmp_path / 'nope'}")
    with pytest.raises(UserError, match="missing data_batch_1"):
        load_data(f"cifar10:{tmp_path}")
    _write_cifar(str(tmp_path))
    (tmp_path / "test_batch").write_bytes(b"\x80\x02garbage")
    with pytest.raises(UserError, match="cannot read CIFAR-10 batch"):
        load_data(f"cifar10:{tmp_path}")
    tree = tmp_path / "tree"
    (tree / "train" / "cat").mkdir(parents=True)
    with pytest.raises(UserError, match="imagefolder:"):
        load_data(f"cifar10:{tree}")


def _write_folder(root, classes=("cat", "dog"), n_train=6, n_test=2, size=(8, 8)) -> None:
    from PIL import Image

    for split, n in (("train", n_train), ("test", n_test)):
        for label, cls in enumerate(classes):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                colour = (40 + 100 * label, i * 10, 200)
                Image.new("RGB", size, colour).save(d / f"{i:03d}.png")


def test_imagefolder_loads_and_caches(tmp_path, monkeypatch) -> None:
    root = tmp_path / "imgs"
    _write_folder(root)
    cache = tmp_path / "cache"
    d = load_data(f"imagefolder:{root}", cache_dir=cache, seed=0, val_fraction=0.25, progress=False)
    assert d.num_classes == 2 and d.input_shape == (3, 8, 8) and d.augment
    assert len(d.train) + len(d.val) == 12 and len(d.val) == 3 and len(d.test) == 4
    assert sorted(d.test.labels.tolist()) == [0, 0, 1, 1]
    red = {int(img[0, 0, 0]) for img in d.test.images}
    assert red == {40, 140} and d.name == f"imagefolder:{root.resolve()}"
    assert list((cache / "data").glob("imagefolder-imgs-*.npz"))

    import autoprune.data.imagefolder as imagefolder

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(imagefolder, "decode_images", no_decoding)
    again = load_data(f"imagefolder:{root}", cache_dir=cache, seed=0, val_fraction=0.25)
    assert torch.equal(again.train.images, d.train.images)
    with pytest.raises(AssertionError, match="decoded again"):  # another size: decode again
        load_data(f"imagefolder:{root}", image_size=4, cache_dir=cache)


def test_imagefolder_flat_layout_resize_and_errors(tmp_path) -> None:
    from PIL import Image

    root = tmp_path / "flat"
    for label, cls in enumerate(("a", "b", "c")):
        (root / cls).mkdir(parents=True)
        for i in range(10):
            Image.new("L", (12, 10), 20 * i + label).save(root / cls / f"{i}.png")
    d = load_data(f"imagefolder:{root}", image_size=6, cache_dir=tmp_path / "c", progress=False)
    assert d.input_shape == (3, 6, 6) and len(d.test) == 6 and len(d.train) + len(d.val) == 24
    assert set(d.test.labels.tolist()) == {0, 1, 2}
    (root / "a" / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(UserError, match="bad.jpg"):
        load_data(f"imagefolder:{root}", cache_dir=tmp_path / "c", progress=False)
    with pytest.raises(UserError, match="does not exist"):
        load_data(f"imagefolder:{tmp_path / 'none'}", cache_dir=tmp_path / "c")


@pytest.mark.parametrize("spec", ["mnist", "cifar10", "digits:x", "imagefolder:", ""])
def test_bad_specs(spec: str) -> None:
    with pytest.raises(UserError):
        load_data(spec)


def test_split_len_and_take() -> None:
    s = Split(torch.zeros(5, 1, 2, 2, dtype=torch.uint8), torch.arange(5))
    assert len(s) == 5 and s.take(torch.tensor([3, 1])).labels.tolist() == [3, 1]
