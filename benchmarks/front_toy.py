"""Fronts on the toy problem: hypervolume of each searcher's front against the true one.

    python benchmarks/front_toy.py [--evaluations 60] [--seeds 6] [--stage-toy]

``--objectives`` on ``ToyProblem.make(6, seed, budget=1.0)`` (closed-form accuracy and cost, 5^6
policies, the true front by enumeration); the hypervolume of (1 - accuracy, cost) against (1, 1),
as ``autoprune bench`` computes it. Prints per seed and the mean. ``--stage-toy`` runs on
``StageToy.make_staged(seed=seed, budget=1.0)`` instead (losses coupled within each stage, 5^8
policies), where ``emo-pms`` joins with the toy's closed-form stage scorer.
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np

from autoprune.bench.metrics import hypervolume
from autoprune.front import pareto_front
from autoprune.searchers import make_searcher
from autoprune.searchers.emo_pms import EmoPmsSearcher
from autoprune.testing.stage_toy import StageToy
from autoprune.testing.toy import ToyProblem, run_toy

SEARCHERS = ("random", "qmc", "tpe", "nsga2", "emo")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluations", type=int, default=60)
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--stage-toy", action="store_true", help="the stage-coupled toy, emo-pms included")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    names = (*SEARCHERS, "emo-pms") if args.stage_toy else SEARCHERS
    table = {name: [] for name in ("true", *names)}
    for seed in range(args.seeds):
        problem = StageToy.make_staged(seed=seed, budget=1.0) if args.stage_toy else ToyProblem.make(6, seed=seed, budget=1.0)
        table["true"].append(hypervolume(problem.true_front()))
        for name in names:
            searcher = (EmoPmsSearcher(scorer=problem.stage_scorer, log=lambda message: None) if name == "emo-pms"
                        else make_searcher(name))
            trials = run_toy(searcher, problem, args.evaluations, seed=seed, front=True)
            table[name].append(hypervolume([(t.accuracy, t.metrics["macs"]) for t in pareto_front(trials, ["macs"])]))
        print(f"seed {seed}: " + ", ".join(f"{k} {v[-1]:.4f}" for k, v in table.items()), flush=True)
    print(f"\n{args.evaluations} evaluations, {args.seeds} seeds: mean hypervolume "
          + ", ".join(f"{k} {np.mean(v):.4f}" for k, v in table.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
