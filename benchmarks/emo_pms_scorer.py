"""Does EMO-PMS's merged ranking predict trial accuracy? Its top merged candidates against random
draws in `random`'s band under the budget, all scored as trials of the run's fidelity.

Runs `emo-pms`'s sub-searches on the task (default: ResNet-20 on digits, MACs at 0.5 of dense),
then scores its ``--candidates`` best merged policies and as many random draws with
``autoprune.trial.run_trial``. A draw's predicted impairment is the sum of its stages' scores
(each stage scored alone, the rest dense), as the merge adds them up. Prints the sub-search time,
Spearman's rank correlation of predicted impairment with val accuracy, and both groups' accuracy.

    python benchmarks/emo_pms_scorer.py --candidates 8 --seed 0
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace

import numpy as np

from autoprune.pipeline import build_problem, search_context
from autoprune.searchers.emo_pms import EmoPmsSearcher
from autoprune.settings import SearchSettings
from autoprune.trial import run_trial


def _spearman(a: list[float], b: list[float]) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--budget", type=float, default=0.5, help="MACs as a fraction of dense")
    ap.add_argument("--fidelity", default="kd:100")
    ap.add_argument("--candidates", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    settings = SearchSettings(model=args.model, target="macs", budget=args.budget, fidelity=args.fidelity,
                              seed=args.seed, trials=2 * args.candidates, run_dir=tempfile.mkdtemp(prefix="emo_pms_scorer-"))
    problem = build_problem(settings, log=lambda *a, **k: None)
    ctx = search_context(problem)
    searcher = EmoPmsSearcher(candidates=args.candidates)
    searcher.setup(ctx)
    started = time.perf_counter()
    searcher._prepare()
    print(f"sub-searches: {searcher.sub_evaluations} stage candidates scored in {time.perf_counter() - started:.0f} s",
          flush=True)
    merged = [(m.policy, m.impairment) for m in searcher.merged]
    taken = {m for m, _ in merged}
    draws = ctx.sample_within_budget(np.random.default_rng(args.seed), args.candidates, lambda p: p not in taken,
                                     5_000, near=0.9)
    space = ctx.space
    for policy in draws:
        values = space.variable_values(policy)
        parts = [space.policy({space.variables[i].name: values[space.variables[i].name] for i in a.subnet.variables})
                 for a in searcher.archives]
        scores = [searcher.scorer(ctx, a.subnet, [part])[0] for a, part in zip(searcher.archives, parts, strict=True)]
        merged.append((policy, sum(s.impairment for s in scores)))
    template = problem.template(settings.fidelity)
    rows = []
    for number, (policy, predicted) in enumerate(merged):
        outcome = run_trial(problem.recipe, replace(template, number=number, policy=policy, seed=args.seed))
        group = "merged" if number < len(searcher.merged) else "random"
        rows.append((group, predicted, outcome.metrics.get("val_accuracy", float("nan")), outcome.metrics["macs"]))
        print(f"{group} {number}: predicted impairment {predicted:.3f}, val acc {rows[-1][2]:.4f}, "
              f"MACs {rows[-1][3] / problem.dense['macs']:.3f} of dense", flush=True)
    predicted, accuracy = [r[1] for r in rows], [r[2] for r in rows]
    print(f"Spearman(predicted impairment, val acc) over {len(rows)}: {_spearman(predicted, accuracy):.2f}")
    for group in ("merged", "random"):
        acc = [r[2] for r in rows if r[0] == group]
        print(f"{group}: mean val acc {np.mean(acc):.4f}, best {max(acc):.4f} ({len(acc)} policies)")


if __name__ == "__main__":
    main()
