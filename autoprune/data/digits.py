"""scikit-learn's handwritten digits (1,797 real 8x8 images, 10 classes), upsampled once at load."""

from __future__ import annotations

import torch

from autoprune.data._base import DataSplits, Split, make_splits, resize_uint8, split_off

DEFAULT_SIZE = 16  # 8x8 digits upscaled twice: enough for a CIFAR ResNet, 4x cheaper than 32 px

TEST_FRACTION = 0.2
TEST_SEED = 20240601  # fixed: the test split never depends on the search seed
VAL_FRACTION = 0.25  # of the non-test part: train/val/test = 60/20/20


def load_digits_splits(
    *, image_size: int | None = None, seed: int = 0, val_fraction: float | None = None
) -> DataSplits:
    """Digits as 1-channel uint8 images of ``image_size`` (default 16: the 8x8 originals upscaled twice) px.

    The test split (20%) is fixed; val is carved from the rest with ``seed``
    (``val_fraction`` of the non-test part, default 0.25, i.e. 60/20/20 overall).
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    raw = torch.from_numpy(bunch.images).to(torch.float32)  # N x 8 x 8, values 0..16
    images = (raw * (255.0 / 16.0)).round_().clamp_(0, 255).to(torch.uint8).unsqueeze(1)
    images = resize_uint8(images, image_size or DEFAULT_SIZE)
    labels = torch.from_numpy(bunch.target).to(torch.int64)
    rest, test = split_off(Split(images, labels), TEST_FRACTION, TEST_SEED)
    return make_splits(
        "digits",
        rest,
        test,
        10,
        seed=seed,
        val_fraction=VAL_FRACTION if val_fraction is None else val_fraction,
        augment=False,
    )
