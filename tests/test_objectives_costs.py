"""Budgets, targets and cost measurement."""

from __future__ import annotations

import pytest
import torch

from autoprune.costs import CostSettings, measure_costs
from autoprune.errors import UserError
from autoprune.models.cifar_resnet import resnet20
from autoprune.objectives import parse_budget


@pytest.mark.parametrize(
    "text,target,fraction,absolute",
    [("0.5", "latency", 0.5, None), ("4ms", "latency", None, 4.0), ("800us", "latency", None, 0.8),
     ("150M", "macs", None, 150e6), ("2.5K", "params", None, 2500.0)],
)
def test_parse_budget(text, target, fraction, absolute):
    b = parse_budget(text, target)
    assert b.fraction == fraction
    assert b.absolute == (pytest.approx(absolute) if absolute is not None else None)


@pytest.mark.parametrize("text", ["0", "-0.5", "1", "1.5", "abc", "4 parsecs"])
def test_bad_budgets(text):
    with pytest.raises(UserError):
        parse_budget(text, "latency")


def test_unknown_target():
    with pytest.raises(UserError, match="unknown target"):
        parse_budget("0.5", "energy")


def test_limit_from_fraction():
    assert parse_budget("0.25", "macs").limit(400.0) == pytest.approx(100.0)


def test_measure_costs_small_model():
    model = resnet20(in_channels=1, width=4)
    costs = measure_costs(model, CostSettings((1, 16, 16), batch_size=2, repeats=3, warmup=1))
    assert costs["params"] == sum(p.numel() for p in model.parameters())
    assert costs["macs"] > costs["params"] and costs["latency_ms"] > 0
    assert torch.get_num_threads() >= 1


def test_paired_latency_ratio_cancels_the_machine_speed():
    from torch import nn

    from autoprune.costs import CostSettings
    from autoprune.costs.latency import paired_latency

    def net(width: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1))

    settings = CostSettings((3, 32, 32), batch_size=4, threads=1, warmup=2, repeats=7)
    big = net(64)
    ms, same = paired_latency(big, big, settings, rounds=3)
    assert ms > 0 and 0.6 < same < 1.6
    _, small = paired_latency(net(8), big, settings, rounds=3)
    assert small < 0.5


def test_a_screening_reading_stops_once_its_median_is_settled():
    from torch import nn

    from autoprune.costs import CostSettings
    from autoprune.costs.latency import MIN_REPEATS, LatencyCost, settled

    assert settled([10.0] * MIN_REPEATS) and not settled([10.0] * (MIN_REPEATS - 1))
    assert not settled([10.0, 12.0, 9.0, 14.0, 10.0, 8.0, 13.0, 11.0])  # a median known to about 10% only
    assert settled([10.0, 10.1, 9.9, 10.05, 9.95, 10.0, 10.02, 9.98])
    settings = CostSettings((3, 8, 8), batch_size=2, warmup=1, repeats=40)
    model = nn.Conv2d(3, 4, 3)
    full, early = LatencyCost(settings), LatencyCost(settings, early_stop=True)
    full.measure(model)
    early.measure(model)
    assert full.passes == 40 and MIN_REPEATS <= early.passes <= 40


def test_a_recheck_near_the_limit_reads_two_more_screening_rounds(monkeypatch):
    """Near the limit the first round counts as one of three; every screening reading stops once
    settled, and a model read before warms up only REWARM passes (the budget checks take every pass)."""
    from torch import nn

    from autoprune.costs import latency
    from autoprune.trial import RECHECK_ROUNDS, read_latency

    class Counted(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            return x

    monkeypatch.setattr(latency, "settled", lambda times: len(times) >= latency.MIN_REPEATS)
    settings = CostSettings((3, 4, 4), batch_size=1, warmup=5, repeats=40)
    per_round = latency.MIN_REPEATS + (-latency.MIN_REPEATS) % latency.CHUNK  # checked in chunks
    model, dense = Counted(), Counted()
    near = read_latency(model, dense, settings, dense_anchor_ms=10.0, limit=1000.0, band=(0.0, float("inf")))
    assert model.calls == dense.calls == (5 + per_round) + (RECHECK_ROUNDS - 1) * (latency.REWARM + per_round)
    assert near["latency_first_passes"] == 2 * per_round and "latency_first_ms" in near
    model = Counted()  # a new candidate beside the same dense model, far from the limit: one round
    far = read_latency(model, dense, settings, dense_anchor_ms=10.0, limit=1e9)
    assert model.calls == 5 + per_round and "latency_first_ms" not in far
    model = Counted()
    latency.paired_latency(model, dense, settings, rounds=3)  # a budget check: every pass, full warm-up
    assert model.calls == 3 * (5 + 40)


def test_a_latency_reading_near_the_limit_is_decided_on_a_second_reading():
    from torch import nn

    from autoprune.trial import read_latency

    def net(width: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1))

    settings = CostSettings((3, 32, 32), batch_size=4, threads=1, warmup=2, repeats=5)
    small, dense = net(8), net(64)
    far = read_latency(small, dense, settings, dense_anchor_ms=10.0, limit=1000.0)
    assert "latency_first_ms" not in far and far["latency_ms"] == pytest.approx(10.0 * far["latency_ratio"])
    near = read_latency(small, dense, settings, dense_anchor_ms=10.0, limit=1000.0, band=(0.0, float("inf")))
    assert near["latency_first_ms"] > 0 and near["latency_ms"] == pytest.approx(10.0 * near["latency_ratio"])
    assert near["latency_ratio"] < 0.5
    absolute = read_latency(small, dense, settings, dense_anchor_ms=None, limit=1.0, band=(0.0, float("inf")))
    assert absolute.keys() == {"latency_ms", "latency_first_ms", "latency_first_passes"}
    assert read_latency(small, dense, settings, dense_anchor_ms=None, limit=None).keys() == {"latency_ms", "latency_first_passes"}
