"""What starting from ``uniform``'s first policy costs the Optuna samplers on the toy problem.

    python benchmarks/uniform_start_toy.py [--seeds 8] [--trials 30] [--searchers tpe,gp,cmaes,nsga2]

The toy's accuracy is additive per slot, so its uniform policy is nothing special: the figures say
what the start costs a searcher where it does not help (on the bench ResNet-20 it is the best
policy random search or TPE found in 30 trials; docs/searchers.md, "Starting from uniform").
Prints the mean gap to the optimum's accuracy at equal scored trials, without and with the start.
"""

from __future__ import annotations

import argparse

import numpy as np

from autoprune.searchers import make_searcher
from autoprune.testing.toy import ToyProblem, best_feasible, run_toy


def mean_gap(name: str, start: bool, seeds: int, trials: int) -> float:
    gaps = []
    for seed in range(seeds):
        searcher = make_searcher(name)
        searcher.starts_uniform = start  # an instance attribute: the class default stays
        problem = ToyProblem.make(seed=seed)
        gaps.append(problem.optimum()[0] - best_feasible(run_toy(searcher, problem, trials, seed=seed)))
    return float(np.mean(gaps))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--searchers", default="tpe,gp,cmaes,nsga2")
    args = parser.parse_args()
    print(f"mean gap to the optimum, {args.seeds} seeds, {args.trials} trials: without / with the uniform start")
    for name in args.searchers.split(","):
        plain, start = (mean_gap(name, s, args.seeds, args.trials) for s in (False, True))
        print(f"{name}: {plain:.4f} / {start:.4f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
