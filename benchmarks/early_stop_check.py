"""How much a search's screening latency readings save by stopping once their median is settled.

Random policies of the default task (resnet20 on digits, at the search's latency settings: batch
16, one thread, 10 warm-up and 30 timed passes), each read twice side by side, in alternating
order: every repeat (as the budget checks read), and with ``early_stop`` (as a trial's first
reading does, ``autoprune.costs.latency.settled``). Prints the median passes and seconds of each,
and the early reading's median relative difference from the full one beside the full readings'
own spread between two rounds.

    python benchmarks/early_stop_check.py --policies 20 --seed 0
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policies", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from autoprune.costs.latency import LatencyCost
    from autoprune.pipeline import build_problem
    from autoprune.prune import apply_policy
    from autoprune.settings import SearchSettings

    problem = build_problem(SearchSettings(target="latency"), log=lambda message: None)
    settings = problem.cost
    rng = np.random.default_rng(args.seed)
    rows = []
    for i in range(args.policies):
        policy = problem.space.sample(rng)
        model, _ = apply_policy(problem.task.model, problem.space, policy, problem.task.example_inputs())
        full, early, again = LatencyCost(settings), LatencyCost(settings, early_stop=True), LatencyCost(settings)
        order = [(full, "full"), (early, "early")] if i % 2 == 0 else [(early, "early"), (full, "full")]
        got = {}
        for cost, name in order:
            started = time.perf_counter()
            got[name] = (cost.measure(model), cost.passes, time.perf_counter() - started)
        second = again.measure(model)
        rows.append({"full": got["full"], "early": got["early"], "second": second})
        print(f"policy {i}: full {got['full'][0]:.3f} ms ({got['full'][1]} passes, {got['full'][2]:.2f} s), "
              f"early {got['early'][0]:.3f} ms ({got['early'][1]} passes, {got['early'][2]:.2f} s), "
              f"full again {second:.3f} ms", flush=True)
    med = statistics.median
    diff = med(abs(r["early"][0] / r["full"][0] - 1) for r in rows)
    noise = med(abs(r["second"] / r["full"][0] - 1) for r in rows)
    print(f"\n{args.policies} policies ({settings.describe()}): median passes full {med(r['full'][1] for r in rows):.0f}, "
          f"early {med(r['early'][1] for r in rows):.0f}; median seconds full {med(r['full'][2] for r in rows):.3f}, "
          f"early {med(r['early'][2] for r in rows):.3f} ({med(r['early'][2] / r['full'][2] for r in rows):.2f}x); "
          f"early vs full median |difference| {100 * diff:.1f}%, full vs full again {100 * noise:.1f}%")
    print(f"command: python benchmarks/early_stop_check.py --policies {args.policies} --seed {args.seed}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
