"""How far the latency lookup table's estimate is from measuring the slimmed network.

For each model: build (or load) the calibrated LUT, then for ``--policies`` random policies
(``space.sample``) build the slimmed network, measure its latency (median of repeats) and compare
with the estimate. Prints the median and 90th-percentile absolute percentage error (absolute, and relative to the
dense model measured alongside), the measurement's own drift, the rank correlation, and the exact
command. Torchvision models run at 1 thread by default (``--threads 2`` for two): on a 2-core
machine shared with other jobs, two threads mostly measure the scheduler. Weights are random: latency does not depend on them.

    python benchmarks/lut_error.py                      # resnet20 (the default task: digits, 16 px, batch 32), resnet18, mobilenet_v2
    python benchmarks/lut_error.py --models resnet20 --policies 50 --seed 0
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass

import numpy as np
import torch

from autoprune.costs import CostSettings
from autoprune.costs.lut import build_lut, device_key
from autoprune.prune import apply_policy
from autoprune.rules import load_rules
from autoprune.space import SearchSpace


@dataclass(frozen=True)
class Case:
    name: str
    rules: str
    input_shape: tuple[int, int, int]
    batch: int
    threads: int
    profile_repeats: int  # per layer shape
    measure_repeats: int  # per slimmed network


CASES = {
    "resnet20": Case("resnet20", "cifar_resnet", (1, 16, 16), 32, 1, 15, 15),  # the default task
    "resnet18": Case("resnet18", "torchvision", (3, 224, 224), 1, 1, 7, 9),
    "mobilenet_v2": Case("mobilenet_v2", "mobilenet", (3, 224, 224), 1, 1, 7, 9),
}


def build(name: str) -> torch.nn.Module:
    if name == "resnet20":
        from autoprune.models import build_model

        return build_model("resnet20", num_classes=10, in_channels=1)
    import torchvision

    return getattr(torchvision.models, name)(weights=None)


def run_case(case: Case, policies: int, seed: int, cache_dir: str, threads: int | None) -> dict[str, float]:
    """Build the LUT, then compare it with measurement on random policies it was not calibrated on.

    Each policy's measurement is preceded by one of the dense model, so besides the absolute error
    (the LUT as built against ``LatencyCost``'s median) the relative error of latency/dense, which
    cancels slow drifts of the machine's speed, and the drift itself (the dense model's spread) show.
    """
    torch.manual_seed(seed)
    model = build(case.name).eval()
    x = torch.zeros(1, *case.input_shape)
    space = SearchSpace.from_model(model, x, load_rules(case.rules))
    settings = CostSettings(case.input_shape, batch_size=case.batch, threads=threads or case.threads, warmup=3,
                            repeats=case.measure_repeats)
    started = time.perf_counter()
    lut = build_lut(model, space, x, settings, cache_dir=cache_dir, repeats=case.profile_repeats, seed=seed)
    build_s = time.perf_counter() - started
    est_dense = lut.estimate(space, space.dense())
    rng = np.random.default_rng(seed + 1)  # not the calibration policies
    rows, est_ms = [], []
    for _ in range(policies):
        policy = space.sample(rng)
        tick = time.perf_counter()
        estimate = lut.estimate(space, policy)
        est_ms.append((time.perf_counter() - tick) * 1e3)
        slim, _ = apply_policy(model, space, policy, x)
        dense = lut.measure(model)
        rows.append((estimate, lut.measure(slim), dense))
    est, meas, dense = (np.asarray(c) for c in zip(*rows, strict=True))
    ape = np.abs(est - meas) / meas * 100
    rel = np.abs(est / est_dense - meas / dense) / (meas / dense) * 100
    drift = np.abs(dense / np.median(dense) - 1) * 100
    from scipy import stats

    return {
        "threads": settings.threads, "slots": len(space.slots), "shapes": len(lut.shapes.reachable()),
        "profiled": lut.table.profiled, "build_s": build_s, "a": lut.a, "b": lut.b, "c": lut.c,
        "median_ape": float(np.median(ape)), "p90_ape": float(np.percentile(ape, 90)),
        "median_rel": float(np.median(rel)), "p90_rel": float(np.percentile(rel, 90)),
        "drift": float(np.median(drift)), "spearman": float(stats.spearmanr(meas, est)[0]),
        "lat_min": float(meas.min()), "lat_max": float(meas.max()), "estimate_ms": float(np.median(est_ms)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet20,resnet18,mobilenet_v2", help=f"comma list of {', '.join(CASES)}")
    parser.add_argument("--policies", type=int, default=50, help="random policies per model (not the calibration ones)")
    parser.add_argument("--threads", type=int, default=None, help="override every model's thread count")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", default=None, help="LUT cache (default: a fresh temporary directory)")
    args = parser.parse_args(argv)
    print("command: python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])]))
    cache = args.cache_dir or tempfile.mkdtemp(prefix="autoprune-lut-")
    rows = []
    for name in args.models.split(","):
        case = CASES[name.strip()]
        load = os.getloadavg()[0]
        r = run_case(case, args.policies, args.seed, cache, args.threads)
        rows.append((case, r))
        print(f"{case.name}: {r['build_s']:.0f} s table ({r['profiled']} shapes profiled); load {load:.1f} -> "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    print(f"\ndevice {device_key(1)[:-3]}; {args.policies} held-out random policies per model; seed {args.seed}")
    print("a, c, b: the calibration latency ~= a * sum + c * activation volume (M elements) + b ms.")
    print("APE: |estimate - measured| / measured, the LUT as built against LatencyCost's median of repeats.")
    print("rel: the same for latency / dense latency, the dense model measured just before each policy")
    print("     (cancels slow drifts of machine speed). drift: median |dense / median(dense) - 1|, the")
    print("     measurement's own spread over the run: no estimate can beat it on APE.")
    head = (f"{'model':<13} {'batch':>5} {'thr':>3} {'slots':>5} {'shapes':>6} {'a':>5} {'c':>5} {'b ms':>6} {'lat ms':>13} "
            f"{'APE med':>7} {'p90':>6} {'rel med':>7} {'p90':>6} {'drift':>6} {'spearman':>8} {'est ms':>6}")
    print(head)
    print("-" * len(head))
    for case, r in rows:
        print(f"{case.name:<13} {case.batch:>5} {r['threads']:>3} {r['slots']:>5} {r['shapes']:>6} {r['a']:>5.2f} {r['c']:>5.2f} "
              f"{r['b']:>6.2f} {r['lat_min']:>6.1f}-{r['lat_max']:<6.1f} {r['median_ape']:>6.1f}% {r['p90_ape']:>5.1f}% "
              f"{r['median_rel']:>6.1f}% {r['p90_rel']:>5.1f}% {r['drift']:>5.1f}% {r['spearman']:>8.3f} "
              f"{r['estimate_ms']:>6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
