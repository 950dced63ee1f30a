"""What one option of the Optuna searchers does on the toy problem, off against on.

    python benchmarks/sampler_options_toy.py --option fills_budget [--seeds 16] [--trials 30]
    python benchmarks/sampler_options_toy.py --option starts_uniform --seeds 8 --searchers tpe,gp,cmaes,nsga2

``fills_budget``: a proposal the estimate puts under 0.9 of the limit is made less pruned up to
the budget and the sampler is told the filled policy. ``starts_uniform``: the first proposal is
``uniform``'s first policy. The toy's accuracy is additive per slot, so its uniform policy is
nothing special: for that option the figures say what the start costs where it does not help.
Prints the mean gap to the optimum's accuracy at equal scored trials with the option off and on
(the other options at their defaults), and, for the fill, how many proposals a search filled.
"""

from __future__ import annotations

import argparse

import numpy as np

from autoprune.searchers import make_searcher
from autoprune.testing.toy import ToyProblem, best_feasible, run_toy

OPTIONS = ("fills_budget", "starts_uniform")


def mean_gap(name: str, option: str, on: bool, seeds: int, trials: int) -> tuple[float, float]:
    gaps, filled = [], []
    for seed in range(seeds):
        searcher = make_searcher(name)
        setattr(searcher, option, on)  # an instance attribute: the class default stays
        problem = ToyProblem.make(seed=seed)
        gaps.append(problem.optimum()[0] - best_feasible(run_toy(searcher, problem, trials, seed=seed)))
        filled.append(searcher.filled)
    return float(np.mean(gaps)), float(np.mean(filled))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--option", choices=OPTIONS, required=True)
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--searchers", default="tpe,nsga2,cmaes,gp")
    args = parser.parse_args()
    print(f"{args.option}: mean gap to the optimum, {args.seeds} seeds, {args.trials} trials, off / on")
    for name in args.searchers.split(","):
        (off, _), (on, filled) = (mean_gap(name, args.option, flag, args.seeds, args.trials) for flag in (False, True))
        print(f"{name}: {off:.4f} / {on:.4f} ({filled:.1f} proposals filled per search, option on)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
