"""Searchers side by side on the default task (digits ResNet-20, latency budget 0.5) at equal trials.

Builds the default problem once (the dense model is trained on first use and cached), then runs
each searcher for the same number of scored trials and seeds, each with the same final fine-tune
and test evaluation, and prints the best feasible validation accuracy reached after that many
trials, what was spent to get there, and the final figures. Every search is a study in one Optuna
storage under ``--out`` (``optuna-dashboard sqlite:///<out>/studies.db``).

    python benchmarks/searchers_default.py                                   # tpe, knapsack, random; seed 0
    python benchmarks/searchers_default.py --searchers tpe,random --seeds 3 --trials 20
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from pathlib import Path

from autoprune.bench.harness import run_search
from autoprune.executors import make_executor
from autoprune.pipeline import build_problem
from autoprune.settings import SearchSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--searchers", default="tpe,knapsack,random")
    parser.add_argument("--seeds", type=int, default=1, help="search seeds 0..N-1 per searcher")
    parser.add_argument("--trials", type=int, default=SearchSettings.trials, help="scored trials per search")
    parser.add_argument("--budget", default=SearchSettings.budget)
    parser.add_argument("--out", default="runs/searchers-default", help="run directories and studies.db")
    parser.add_argument("--threads", type=int, default=None, help="training threads per trial [default: all cores]")
    args = parser.parse_args(argv)
    print("command: python " + shlex.join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{(out / 'studies.db').resolve()}"
    problem = build_problem(SearchSettings(budget=args.budget, threads=args.threads))
    s = problem.settings
    print(f"task: {s.model} on {s.data}, {s.target} <= {problem.limit:.3f} ({s.budget} of dense "
          f"{problem.dense[problem.metric]:.3f}), fidelity {s.fidelity}, final {s.final_steps} steps", flush=True)
    rows = []
    with make_executor("inline", workers=1, threads_per_worker=problem.scoring.threads) as executor:
        for name in args.searchers.split(","):
            for seed in range(args.seeds):
                tick = time.perf_counter()
                r = run_search(problem, view="trials", searcher=name, seed=seed, trials=args.trials, time_limit=None,
                               storage=storage, run_dir=out / f"{name}-s{seed}", executor=executor, task="default")
                rows.append((name, seed, r, time.perf_counter() - tick))
                best = max((v for v in r.curve if v is not None), default=None)
                print(f"{name} seed {seed}: best feasible val {best}, {r.scored} scored (+{r.probes} probes), "
                      f"{r.rejected} rejected, "
                      f"search {r.wall_s:.0f} s, final test {r.final_test}, error {r.error}", flush=True)
    print(f"\n{args.trials} scored trials per search; val = best feasible validation accuracy at {s.fidelity} "
          "after those trials; final = the pick after the final fine-tune (test split).")
    print(f"{'searcher':<16} {'seeds':>5} {'val (median)':>12} {'final test':>10} {'final ms':>9} {'scored':>6} "
          f"{'probes':>6} {'rejected':>8} {'search s':>8}")
    for name in args.searchers.split(","):
        mine = [r for n, _, r, _ in rows if n == name]
        vals = [max((v for v in r.curve if v is not None), default=float("nan")) for r in mine]
        tests = [r.final_test for r in mine if r.final_test is not None]
        costs = [r.final_cost for r in mine if r.final_cost is not None]
        print(f"{name:<16} {len(mine):>5} {statistics.median(vals):>12.4f} "
              f"{statistics.median(tests) if tests else float('nan'):>10.4f} "
              f"{statistics.median(costs) if costs else float('nan'):>9.3f} "
              f"{statistics.median(r.scored for r in mine):>6.0f} {statistics.median(r.probes for r in mine):>6.0f} "
              f"{statistics.median(r.rejected for r in mine):>8.0f} "
              f"{statistics.median(r.wall_s for r in mine):>8.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
