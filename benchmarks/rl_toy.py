"""The RL searchers on the toy problem: mean gap to the optimum against random and TPE.

Each seed draws its own toy problem (``ToyProblem.make(n_slots, seed)``) and runs every searcher
on it for ``--trials`` scored trials (purl's probes are scored outside that count, as the runner
scores them). Prints the mean and spread of the gap to the optimum's accuracy at the end, and, for
the RL searchers, the episodes (full-fidelity trials) and probes needed to come within
``--within`` of the optimum: whether purl's reward at every step shortens the search.

    python benchmarks/rl_toy.py --seeds 5 --trials 40
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from dataclasses import replace

import numpy as np

from autoprune.searchers import make_searcher
from autoprune.searchers.amc import AMCConfig, AMCSearcher
from autoprune.searchers.purl import PuRLSearcher
from autoprune.testing.toy import ToyProblem, run_toy


def searcher(name: str, trials: int, hidden: int | None):
    if name in ("amc", "purl"):
        config = AMCConfig(episodes=trials)
        if hidden is not None:
            config = replace(config, hidden=hidden)
        return AMCSearcher(config) if name == "amc" else PuRLSearcher(config)
    return make_searcher(name)


def curve(trials, within: float, optimum: float) -> tuple[float, int | None, int | None]:
    """Final gap; episodes and probes spent until the best feasible score came within ``within``."""
    best, episodes, probes, reached = 0.0, 0, 0, None
    for t in trials:
        if t.fidelity == "bn":
            probes += 1
            continue
        if t.scored and t.feasible:
            episodes += 1
            best = max(best, t.accuracy or 0.0)
            if reached is None and optimum - best <= within:
                reached = (episodes, probes)
        elif t.state == "rejected":
            episodes += 1
    return optimum - best, *(reached or (None, None))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--searchers", default="amc,purl,random,tpe")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--slots", type=int, default=6)
    parser.add_argument("--budget", type=float, default=0.5)
    parser.add_argument("--within", type=float, default=0.01, help="gap counted as reaching the optimum")
    parser.add_argument("--hidden", type=int, default=None, help="agent hidden units (default AMC's 300)")
    args = parser.parse_args(argv)
    print("command: python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])]), flush=True)
    names = args.searchers.split(",")
    rows: dict[str, list[tuple[float, int | None, int | None]]] = {n: [] for n in names}
    for seed in range(args.seeds):
        problem = ToyProblem.make(n_slots=args.slots, seed=seed, budget=args.budget)
        optimum = problem.optimum()[0]
        for name in names:
            started = time.perf_counter()
            trials = run_toy(searcher(name, args.trials, args.hidden), problem, args.trials, seed=seed, probes=True)
            rows[name].append(curve(trials, args.within, optimum))
            gap, episodes, probes = rows[name][-1]
            print(f"seed {seed} {name:>7}: gap {gap:.4f}, within {args.within} after {episodes} trials "
                  f"({probes} probes), {time.perf_counter() - started:.1f} s", flush=True)
    print(f"\n{args.seeds} seeds, {args.slots} slots, budget {args.budget}, {args.trials} scored trials")
    print(f"{'searcher':>8} | mean gap | sd     | reached within {args.within} | trials to reach (mean) | probes")
    for name in names:
        gaps = [r[0] for r in rows[name]]
        hit = [r for r in rows[name] if r[1] is not None]
        to_reach = f"{np.mean([r[1] for r in hit]):.1f}" if hit else "-"
        probes = f"{np.mean([r[2] for r in hit]):.0f}" if hit else "-"
        print(f"{name:>8} | {np.mean(gaps):.4f}   | {np.std(gaps):.4f} | {len(hit)}/{len(gaps)}"
              f"{'':>18} | {to_reach:>22} | {probes}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
