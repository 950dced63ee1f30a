"""What filling proposals up to the budget does for the Optuna samplers on the toy problem.

    python benchmarks/fill_budget_toy.py [--seeds 16] [--trials 30] [--searchers tpe,nsga2,cmaes,gp]

A proposal the estimate puts under 0.9 of the limit is made less pruned until it is at the budget
(``SearchContext.fill``) and the sampler is told the filled policy (``OptunaSearcher.fills_budget``).
Prints the mean gap to the optimum's accuracy at equal scored trials, without and with the fill,
and how many proposals per search were filled.
"""

from __future__ import annotations

import argparse

import numpy as np

from autoprune.searchers import make_searcher
from autoprune.testing.toy import ToyProblem, best_feasible, run_toy


def mean_gap(name: str, fill: bool, seeds: int, trials: int) -> tuple[float, float]:
    gaps, filled = [], []
    for seed in range(seeds):
        searcher = make_searcher(name)
        searcher.fills_budget = fill  # an instance attribute: the class default stays
        problem = ToyProblem.make(seed=seed)
        gaps.append(problem.optimum()[0] - best_feasible(run_toy(searcher, problem, trials, seed=seed)))
        filled.append(searcher.filled)
    return float(np.mean(gaps)), float(np.mean(filled))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--searchers", default="tpe,nsga2,cmaes,gp")
    args = parser.parse_args()
    print(f"mean gap to the optimum, {args.seeds} seeds, {args.trials} trials: without / with the fill")
    for name in args.searchers.split(","):
        (plain, _), (filled, count) = (mean_gap(name, f, args.seeds, args.trials) for f in (False, True))
        print(f"{name}: {plain:.4f} / {filled:.4f} ({count:.1f} proposals filled per search)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
