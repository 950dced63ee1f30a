"""Mean gap to the optimum on the toy problem: `emo` (both objective sets) against `random` and `tpe`.

    python benchmarks/emo_toy.py --trials 30 --seeds 6

The figures in docs/searchers.md ("Evolutionary: emo") come from this command.
"""

from __future__ import annotations

import argparse

import numpy as np

from autoprune.searchers import make_searcher
from autoprune.searchers.emo import EmoSearcher
from autoprune.testing.toy import ToyProblem, best_feasible, run_toy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--seeds", type=int, default=6)
    args = ap.parse_args()
    contenders = {
        "emo (error, population 8)": lambda: EmoSearcher(pop_size=8),
        "emo (error, population 8, no fill to the budget)": lambda: EmoSearcher(pop_size=8, fill=False),
        "emo (error and cost, population 8)": lambda: EmoSearcher(pop_size=8, objectives=("error", "cost")),
        "emo (error and cost, population 8, no fill)": lambda: EmoSearcher(
            pop_size=8, objectives=("error", "cost"), fill=False),
        "random": lambda: make_searcher("random"),
        "tpe": lambda: make_searcher("tpe"),
    }
    for name, make in contenders.items():
        gaps = []
        for seed in range(args.seeds):
            problem = ToyProblem.make(seed=seed)
            gaps.append(problem.optimum()[0] - best_feasible(run_toy(make(), problem, args.trials, seed=seed)))
        print(f"{name}: mean gap {np.mean(gaps):.3f} (per seed {', '.join(f'{g:.3f}' for g in gaps)})", flush=True)


if __name__ == "__main__":
    main()
