"""Adaptive BatchNorm recalibration (EagleEye): the cheapest meaningful score of a candidate.

Removing channels shifts every downstream activation, so the dense model's BN running statistics
are wrong for the slimmed one and its raw accuracy is near chance. Re-estimating them on a few
training batches, with no gradient step, makes candidates comparable.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from autoprune import meter


def recalibrate_bn(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], n_batches: int) -> int:
    """Reset BN running stats and re-estimate them (cumulative mean) on ``n_batches``; returns batches used."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns or n_batches <= 0:
        return 0
    saved = [(m.momentum, m.training) for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the batches seen
    was_training = model.training
    model.train()
    used = 0
    device = meter.device_of(model)
    items = iter(batches)
    with torch.no_grad():
        while used < n_batches:
            with meter.step(device):  # drawing the batch is work on the CPU too
                batch = next(items, None)
                if batch is None:
                    break
                model(batch[0])
            used += 1
    for m, (momentum, _) in zip(bns, saved, strict=True):
        m.momentum = momentum
    model.train(was_training)
    return used
