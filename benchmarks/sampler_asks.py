"""How long an Optuna searcher takes to propose one policy on a real task, apart from training.

Builds a bench task (default: CIFAR-10 ResNet-20 at 0.3 of dense latency, where nearly every
proposal is estimated over budget), then asks the searcher for one policy at a time and tells it
a synthetic result: feasible by the latency lookup table's estimate, with an accuracy that falls
with the mean pruning ratio. Nothing is trained or measured after the set-up, so what is printed
is the searcher's own cost: seconds per requested policy, and how many proposals the estimate
screened out for it. ``--max-screened`` overrides the searcher's cap on screened proposals per
policy (``OptunaSearcher.max_screened``).

    python benchmarks/sampler_asks.py                       # gp, 20 policies, its own cap (4)
    python benchmarks/sampler_asks.py --max-screened 50     # the cap before: asks grow with the data
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time

from autoprune.pipeline import build_problem, search_context
from autoprune.searchers import OptunaSearcher, make_searcher
from autoprune.settings import load_study_recipe, settings_from_dict
from autoprune.study import COMPLETE, REJECTED, Trial


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--searcher", default="gp")
    parser.add_argument("--policies", type=int, default=20)
    parser.add_argument("--max-screened", type=int, default=None)
    parser.add_argument("--study", default="studies/bench_cifar10_resnet20_latency30.yaml")
    parser.add_argument("--data-root", default="../shared/data/cifar10")
    args = parser.parse_args(argv)

    data = load_study_recipe(args.study)
    data["data"] = f"imagefolder:{args.data_root}"
    problem = build_problem(settings_from_dict(data, args.study).replace(searcher=args.searcher), log=lambda _m: None)
    context = search_context(problem)
    searcher = make_searcher(args.searcher)
    if not isinstance(searcher, OptunaSearcher):
        parser.error(f"--searcher {args.searcher} is not an Optuna searcher")
    if args.max_screened is not None:
        searcher.max_screened = args.max_screened
    searcher.setup(context)
    print(f"$ python {shlex.join(['benchmarks/sampler_asks.py', *(argv if argv is not None else sys.argv[1:])])}")
    print(f"{args.searcher} on {args.study}: at most {searcher.max_screened} screened proposals per policy")
    seconds = []
    for number in range(args.policies):
        screened, fallbacks = searcher.screened, searcher.fallbacks
        tick = time.perf_counter()
        asked = searcher.ask(1)
        seconds.append(time.perf_counter() - tick)
        if not asked:
            print("the searcher has nothing more to propose")
            break
        policy = asked[0]
        estimate = float(context.estimate(policy))
        accuracy = 1.0 - 0.8 * statistics.fmean(v for _, v in policy.items)
        state = COMPLETE if estimate <= context.limit else REJECTED
        searcher.tell(Trial(number, policy, state, {"val_accuracy": accuracy, context.metric: estimate},
                            fidelity=problem.settings.fidelity, constraint=estimate / context.limit - 1.0))
        print(f"policy {number:3d}: {seconds[-1]:6.2f} s, screened {searcher.screened - screened:3d}, "
              f"from the feasible box {searcher.fallbacks - fallbacks}")
    half = len(seconds) // 2
    print(f"seconds per policy: median {statistics.median(seconds):.2f}, first half "
          f"{statistics.median(seconds[:half] or seconds):.2f}, second half {statistics.median(seconds[half:]):.2f}, "
          f"max {max(seconds):.2f}")


if __name__ == "__main__":
    main()
