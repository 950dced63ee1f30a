"""Data sets as uint8 tensors in memory: ``digits``, ``cifar10:DIR`` and ``imagefolder:DIR``."""

from __future__ import annotations

from pathlib import Path

from autoprune.data._base import (
    DataSplits,
    Split,
    augment_batch,
    batches,
    default_cache_dir,
    endless_batches,
)
from autoprune.errors import UserError

__all__ = [
    "DataSplits",
    "Split",
    "absolute_data_spec",
    "augment_batch",
    "batches",
    "default_cache_dir",
    "endless_batches",
    "load_data",
]

SPECS = "digits, cifar10:DIR or imagefolder:DIR"


def absolute_data_spec(spec: str) -> str:
    """``cifar10:DIR`` or ``imagefolder:DIR`` with DIR made absolute (against the working
    directory), so workers and a run resumed from elsewhere read the same data, and one data set
    has one spelling. Other specs (``digits``, the API's ``live:...``) name no directory."""
    kind, sep, path = spec.partition(":")
    directory = kind.strip().lower() in ("cifar10", "imagefolder") and path.strip()
    return f"{kind}:{Path(path).expanduser().resolve()}" if directory else spec


def load_data(
    spec: str,
    *,
    image_size: int | None = None,
    seed: int = 0,
    val_fraction: float | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> DataSplits:
    """Load a data set by spec: ``digits``, ``cifar10:DIR`` or ``imagefolder:DIR``.

    ``val_fraction`` is the stratified share of the non-test images held out for validation
    (None: 0.25 for digits, giving 60/20/20; 0.1 otherwise). ``cache_dir`` is where decoded image
    folders are cached (default ``$AUTOPRUNE_CACHE`` or ``~/.cache/autoprune``).
    """
    if image_size is not None and (not isinstance(image_size, int) or image_size < 4):
        raise UserError(f"image size must be an integer >= 4, got {image_size!r}")
    if val_fraction is not None and not 0.0 < val_fraction < 1.0:
        raise UserError(f"val fraction must be between 0 and 1, got {val_fraction}")
    kind, sep, arg = spec.partition(":")
    kind = kind.strip().lower()
    if kind == "digits" and not arg:
        from autoprune.data.digits import load_digits_splits

        return load_digits_splits(image_size=image_size, seed=seed, val_fraction=val_fraction)
    if kind in ("cifar10", "imagefolder"):
        if not sep or not arg.strip():
            raise UserError(f"data spec {spec!r} needs a directory: {kind}:DIR")
        if kind == "cifar10":
            from autoprune.data.cifar10 import load_cifar10_splits

            return load_cifar10_splits(
                arg, image_size=image_size, seed=seed, val_fraction=val_fraction
            )
        from autoprune.data.imagefolder import load_imagefolder_splits

        return load_imagefolder_splits(
            arg,
            image_size=image_size,
            seed=seed,
            val_fraction=val_fraction,
            cache_dir=cache_dir,
            progress=progress,
        )
    hint = ""
    if Path(spec).expanduser().is_dir():
        hint = f" (for a directory of images use imagefolder:{spec})"
    raise UserError(f"unknown data spec {spec!r}; use {SPECS}{hint}")
