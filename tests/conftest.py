"""Tests marked ``gpu`` run where torch sees a CUDA device and are skipped elsewhere."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not any(item.get_closest_marker("gpu") for item in items):
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (none visible to torch here)")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)
