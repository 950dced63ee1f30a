"""One ``--objectives`` run against single-budget runs: wall time, and whether its points match
their picks.

    python benchmarks/front_vs_budgets.py [--budgets 0.3,0.5,0.7] [--trials 8] [--searcher tpe]
                                          [--seed 0] [--out runs/front_vs_budgets]

On the default task (ResNet-20 on digits), with MACs as the cost (exact, so the comparison is not
latency noise): one search with ``--objectives accuracy,macs`` and ``len(budgets) x trials``
trials, each budget's point finalised with ``autoprune export --at macs=B``; against one
``--target macs --budget B`` search of ``trials`` trials per budget. Prints, per budget, the val
and test accuracy after the final fine-tune of both, and the wall time of each side in all
(subprocesses, as a user runs them; the dense model is trained once into a shared cache first).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import time
from pathlib import Path


def run(command: list[str], done: Path | None = None) -> float:
    """Seconds ``command`` took; a search whose run directory ``done`` already holds its summary (an
    interrupted benchmark, run again) is not repeated: its recorded ``elapsed_s`` stands in."""
    if done is not None and (done / "summary.json").is_file():
        print(f"(done: {done})", flush=True)
        return float(json.loads((done / "summary.json").read_text())["elapsed_s"])
    started = time.perf_counter()
    print("$ " + " ".join(command), flush=True)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def final_of(directory: Path) -> dict:
    return json.loads((directory / "summary.json").read_text())["final"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", default="0.3,0.5,0.7")
    parser.add_argument("--trials", type=int, default=8, help="trials per single-budget run")
    parser.add_argument("--searcher", default="tpe")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/front_vs_budgets")
    args = parser.parse_args()
    budgets = [b.strip() for b in args.budgets.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)  # searches already done there are kept (see ``run``)
    common = ["--searcher", args.searcher, "--seed", str(args.seed), "--cache-dir", str(out / "cache")]
    run(["autoprune", "search", "--target", "macs", "--budget", "0.9", "--trials", "1", "--fidelity", "bn",
         "--final-steps", "0", "--run-dir", str(out / "warm"), *common], out / "warm")  # the dense model, once
    front_dir = out / "front"
    front_s = run(["autoprune", "search", "--objectives", "accuracy,macs", "--trials", str(args.trials * len(budgets)),
                   "--run-dir", str(front_dir), *common], front_dir)
    shutil.rmtree(front_dir / "points", ignore_errors=True)  # every export timed from scratch
    single_s = 0.0
    rows = []
    for budget in budgets:
        front_s += run(["autoprune", "export", str(front_dir), "--at", f"macs={budget}", "--format", "torch",
                        "--out", str(out / f"front_{budget}.pt"), "--cache-dir", str(out / "cache")])
        point = next(p for p in (front_dir / "points").iterdir() if (p / "summary.json").is_file()
                     and json.loads((p / "summary.json").read_text())["budget"] == budget)
        single = out / f"budget_{budget}"
        single_s += run(["autoprune", "search", "--target", "macs", "--budget", budget, "--trials", str(args.trials),
                         "--run-dir", str(single), *common], single)
        rows.append((budget, final_of(point), final_of(single)))
    print(f"\n{args.searcher}, seed {args.seed}: one front of {args.trials * len(budgets)} trials against "
          f"{len(budgets)} runs of {args.trials}")
    print("| budget (MACs of dense) | front point: val / test | single run: val / test |")
    print("|---|---|---|")
    for budget, point, single in rows:
        print(f"| {budget} | {point['val_accuracy']:.4f} / {point['test_accuracy']:.4f} | "
              f"{single['val_accuracy']:.4f} / {single['test_accuracy']:.4f} |")
    print(f"wall time: front + {len(budgets)} exports {front_s:.0f} s; {len(budgets)} single-budget runs {single_s:.0f} s "
          f"(ratio {front_s / single_s:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
