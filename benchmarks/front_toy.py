"""Fronts on the toy problem: hypervolume of each searcher's front against the true one.

    python benchmarks/front_toy.py [--evaluations 60] [--seeds 6]

``--objectives`` on ``ToyProblem.make(6, seed, budget=1.0)`` (closed-form accuracy and cost, 5^6
policies, the true front by enumeration); the hypervolume of (1 - accuracy, cost) against (1, 1),
as ``autoprune bench`` computes it. Prints per seed and the mean.
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np

from autoprune.bench.metrics import hypervolume
from autoprune.front import pareto_front
from autoprune.searchers import make_searcher
from autoprune.testing.toy import ToyProblem, run_toy

SEARCHERS = ("random", "qmc", "tpe", "nsga2", "emo")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluations", type=int, default=60)
    parser.add_argument("--seeds", type=int, default=6)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    table = {name: [] for name in ("true", *SEARCHERS)}
    for seed in range(args.seeds):
        problem = ToyProblem.make(6, seed=seed, budget=1.0)
        table["true"].append(hypervolume(problem.true_front()))
        for name in SEARCHERS:
            trials = run_toy(make_searcher(name), problem, args.evaluations, seed=seed, front=True)
            table[name].append(hypervolume([(t.accuracy, t.metrics["macs"]) for t in pareto_front(trials, ["macs"])]))
        print(f"seed {seed}: " + ", ".join(f"{k} {v[-1]:.4f}" for k, v in table.items()), flush=True)
    print(f"\n{args.evaluations} evaluations, {args.seeds} seeds: mean hypervolume "
          + ", ".join(f"{k} {np.mean(v):.4f}" for k, v in table.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
