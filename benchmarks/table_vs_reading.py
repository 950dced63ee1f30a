"""How a latency table's estimate of a policy, as a fraction of dense, compares with a reading here.

A bench recipe that judges latency by a table (``latency_table``) trades the machine's drift for
the table's bias: this script shows the bias. It draws random policies of the space whose table
ratio (estimate / the table's dense estimate) lies in ``--low..--high``, builds each, reads it
paired with the dense model (``paired_latency``, three rounds) at the table's batch and threads,
and prints both ratios, the median relative difference and their rank correlation. Weights are
random: latency does not depend on them.

    python benchmarks/table_vs_reading.py --table studies/tables/cifar10_resnet20_b16_t1.json --policies 14
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys

import numpy as np
import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--table", required=True, help="a table written by `autoprune profile`")
    p.add_argument("--model", default="resnet20", help="the model the table was profiled for [resnet20]")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--space", default="cifar_resnet", help="search-space rules [cifar_resnet]")
    p.add_argument("--policies", type=int, default=14)
    p.add_argument("--low", type=float, default=0.38, help="lowest table ratio to keep [0.38]")
    p.add_argument("--high", type=float, default=0.62, help="highest table ratio to keep [0.62]")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()

    from scipy.stats import spearmanr

    from autoprune.costs import CostSettings
    from autoprune.costs.latency import paired_latency
    from autoprune.costs.table import load_device_table
    from autoprune.models import build_model
    from autoprune.prune import apply_policy
    from autoprune.rules import load_rules
    from autoprune.space import SearchSpace

    table = load_device_table(args.table)
    shape = tuple(table.input_shape)
    torch.manual_seed(args.seed)
    model = build_model(args.model, num_classes=args.classes, in_channels=shape[0]).eval()
    x = torch.zeros(1, *shape)
    space = SearchSpace.from_model(model, x, load_rules(args.space))
    settings = CostSettings(shape, batch_size=table.batch_size, threads=table.threads, warmup=3, repeats=15)
    dense = table.estimate(model)
    rng = np.random.default_rng(args.seed)
    rows: list[tuple[float, float]] = []
    for _ in range(400 * args.policies):
        if len(rows) == args.policies:
            break
        slim = apply_policy(model, space, space.sample(rng), x)[0]
        estimate = table.estimate(slim) / dense
        if args.low <= estimate <= args.high:
            _, read = paired_latency(slim, model, settings, rounds=3)
            rows.append((estimate, read))
            print(f"table {estimate:.3f}  read here {read:.3f}  ({read / estimate - 1:+.1%})", flush=True)
    if len(rows) < 2:
        sys.exit(f"only {len(rows)} policies between {args.low} and {args.high}: widen the band")
    table_ratios, read_ratios = zip(*rows, strict=True)
    diffs = [r / t - 1 for t, r in rows]
    print(f"{len(rows)} policies: reading / table - 1 median {statistics.median(diffs):+.1%} "
          f"(range {min(diffs):+.1%} to {max(diffs):+.1%}); Spearman {spearmanr(table_ratios, read_ratios)[0]:.2f}")
    print("command: python " + " ".join(shlex.quote(a) for a in sys.argv))


if __name__ == "__main__":
    main()
