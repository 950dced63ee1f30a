"""Latency lookup table and analytic estimates on a tiny ResNet-20 (width 4, 16 px, batch 2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autoprune.costs import CostSettings
from autoprune.costs.analytic import count_macs_params
from autoprune.costs.lut import (
    AnalyticEstimate,
    LatencyTable,
    LayerShape,
    LutLatency,
    build_lut,
    device_key,
    fit_calibration,
    profile_shape,
    record_layers,
)
from autoprune.models import build_model
from autoprune.prune import apply_policy
from autoprune.rules import SpaceRules
from autoprune.space import SearchSpace

SHAPE = (3, 16, 16)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = build_model("resnet20:width=4", num_classes=10, in_channels=3).eval()
    x = torch.zeros(1, *SHAPE)
    space = SearchSpace.from_model(model, x, SpaceRules(ratios=(0.0, 0.5, 0.75)))
    return model, x, space, record_layers(model, space, x, batch=2)


@pytest.fixture(scope="module")
def lut_pair(tiny, tmp_path_factory):
    model, x, space, layers = tiny
    cache = tmp_path_factory.mktemp("cache")
    settings = CostSettings(SHAPE, batch_size=2, threads=1, warmup=2, repeats=15)
    kwargs = {"cache_dir": cache, "calibration_policies": 3, "repeats": 3, "layers": layers}
    first = build_lut(model, space, x, settings, **kwargs)
    second = build_lut(model, space, x, settings, **kwargs)
    return first, second, cache


def test_layers_know_which_slot_prunes_their_channels(tiny):
    model, x, space, layers = tiny
    layers = {layer.name: layer for layer in layers}
    conv = layers["layer1.0.conv1"]
    assert dict(conv.outs) == {"layer1.0.conv1": 4}
    assert dict(conv.ins) == {"conv1": 4}  # the stage-1 residual group, rooted at the stem
    assert dict(layers["fc"].ins) == {"layer3.0.conv2": 16} or len(layers["fc"].ins) == 1
    assert layers["fc"].outs == ()
    assert conv.shape.h == 16 and conv.shape.batch == 2


def test_cache_is_written_and_reused(lut_pair):
    first, second, cache = lut_pair
    files = list((cache / "lut").glob("*.json"))
    assert [f.name for f in files] == [f"{device_key(1)}.json"]
    assert first.table.profiled > 30
    assert second.table.profiled == 0  # nothing profiled, nothing measured the second time
    assert (second.a, second.b, second.c) == (first.a, first.b, first.c)
    assert len(LatencyTable(files[0], threads=1).entries) == len(first.table.entries)


def test_dense_estimate_is_close_to_measurement(tiny, lut_pair):
    model, _, space, _ = tiny
    lut = lut_pair[0]
    measured = float(np.median([lut.measure(model) for _ in range(3)]))
    # loose on purpose: on a shared 2-core machine the same forward pass drifts up to 2x in minutes
    assert 0.5 < lut.estimate(space, space.dense()) / measured < 2.0


def test_estimate_falls_as_a_slot_is_pruned_more(tiny, tmp_path):
    """Plumbing check with deterministic entries (per-op timings of a width-4 model are noise)."""
    model, x, space, layers = tiny
    settings = CostSettings(SHAPE, batch_size=2, threads=1)
    table = LatencyTable(tmp_path / "t.json", threads=1)
    lut = LutLatency(table, layers, space, settings)
    for shape in lut.shapes.reachable():  # a MACs-like latency, so no profiling happens
        table.entries[shape.key()] = 1e-3 * shape.cin * shape.cout * shape.h * shape.w / shape.groups
    for var in space.variables:
        raw = [lut.raw(space.policy({var.name: r})) for r in var.choices]
        assert all(b <= a for a, b in zip(raw, raw[1:], strict=False)), var.name
        assert raw[-1] < raw[0], var.name
    assert table.profiled == 0


def test_memoised_sums_equal_the_sum_over_the_policys_layer_shapes(tiny, tmp_path):
    """``raw`` memoises each layer's entry on its slots' widths; the reference sums the entries
    of ``shapes.of(policy)``, every layer's shape built anew."""
    model, x, space, layers = tiny
    table = LatencyTable(tmp_path / "t.json", threads=1)
    lut = LutLatency(table, layers, space, CostSettings(SHAPE, batch_size=2, threads=1))
    for shape in lut.shapes.reachable():  # distinct deterministic entries, so a wrong lookup shows
        table.entries[shape.key()] = 1e-3 * shape.cin * shape.cout * shape.h * shape.w / shape.groups + 1e-6 * shape.cin
    rng = np.random.default_rng(0)
    for policy in [space.dense(), space.most_pruned()] + [space.sample(rng) for _ in range(40)]:
        reference = sum(table.entries[shape.key()] for shape in lut.shapes.of(policy))
        assert lut.raw(policy) == pytest.approx(reference, rel=1e-12)
        assert lut.raw(policy) == pytest.approx(reference, rel=1e-12)  # from the memo now


def test_profiled_latency_grows_with_width():
    wide = profile_shape(LayerShape("conv", 2, 32, 64, 16, 16, (3, 3), padding=(1, 1)), 1, 2, 7)
    narrow = profile_shape(LayerShape("conv", 2, 32, 4, 16, 16, (3, 3), padding=(1, 1)), 1, 2, 7)
    assert narrow < wide


def test_analytic_estimates_match_the_counter(tiny):
    model, x, space, layers = tiny
    dense_macs, dense_params = count_macs_params(model, SHAPE)
    macs = AnalyticEstimate(layers, space, "macs", dense_macs)
    params = AnalyticEstimate(layers, space, "params", dense_params)
    rng = np.random.default_rng(0)
    for _ in range(2):
        policy = space.sample(rng)
        slim, _ = apply_policy(model, space, policy, x)
        true_macs, true_params = count_macs_params(slim, SHAPE)
        assert macs(policy) == pytest.approx(true_macs, rel=1e-6)
        assert params(policy) == pytest.approx(true_params, rel=1e-6)


def test_calibration_fits_the_volume_term_it_is_given():
    rng = np.random.default_rng(0)
    sums, volumes = rng.uniform(2, 10, 16), rng.uniform(0.5, 4, 16)
    measured = 1.3 * sums + 0.8 * volumes + 2.0 + rng.normal(0, 0.01, 16)
    fit = fit_calibration(sums, volumes, measured)
    assert fit["a"] == pytest.approx(1.3, abs=0.02) and fit["c"] == pytest.approx(0.8, abs=0.02)
    assert fit["b"] == pytest.approx(2.0, abs=0.1) and fit["n"] == 16 and fit["max_err"] < 0.01


def test_calibration_keeps_two_terms_where_three_would_chase_noise():
    rng = np.random.default_rng(1)
    sums, volumes = rng.uniform(2, 10, 16), rng.uniform(0.5, 4, 16)
    few = fit_calibration(sums[:6], volumes[:6], 1.3 * sums[:6] + 0.8 * volumes[:6] + 2.0)
    assert few["c"] == 0.0 and 0.25 <= few["a"] <= 4  # six networks: a * sum + b only
    falling = fit_calibration(sums, volumes, 1.5 * sums - 0.9 * volumes + 3.0)  # more volume, faster: implausible
    assert falling["c"] == 0.0
    flat = fit_calibration([5.0] * 12, volumes[:12], [7.0] * 12)  # sums do not vary: an offset only
    assert (flat["a"], flat["c"], flat["b"]) == (1.0, 0.0, 2.0)


def test_activation_volume_is_what_the_slimmed_networks_batchnorms_output(tiny, tmp_path):
    """The volume term against an independent count: hooks on the built network's BatchNorms."""
    model, x, space, layers = tiny
    settings = CostSettings(SHAPE, batch_size=2, threads=1, warmup=1, repeats=1)
    lut = LutLatency(LatencyTable(tmp_path / "t.json", threads=1, warmup=1, repeats=1), layers, space, settings)
    lut.table.latency = lambda shape: 1.0  # no profiling: only the volumes are checked here
    rng = np.random.default_rng(0)
    for policy in [space.dense(), space.most_pruned(), *(space.sample(rng) for _ in range(4))]:
        slim, _ = apply_policy(model, space, policy, x)
        seen: list[int] = []
        hooks = [m.register_forward_hook(lambda m, i, out, seen=seen: seen.append(out[0].numel()))
                 for m in slim.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        with torch.no_grad():
            slim(torch.zeros(1, *SHAPE))
        for h in hooks:
            h.remove()
        assert lut.terms(policy)[1] == pytest.approx(sum(seen) / 1e6)
    assert LayerShape("conv", 1, 4, 4, 8, 8).volume() == 0.0
