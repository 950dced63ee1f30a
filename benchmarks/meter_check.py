"""Do latency readings taken while two workers train agree with one worker's?

Runs one small search three times with ``--executor processes``: 1 worker, 2 workers with the
latency meter (``autoprune/meter.py``: a reading holds the device alone, training yields between
steps), and 2 workers with the meter off (``AUTOPRUNE_METER=off``), to show what it protects
against. The budget is a fraction of the dense model, so every trial reads the dense model beside
its candidate: the same network in every trial, whose readings' spread is the reading's own noise.
Candidates that two runs both proposed (a seeded ``random`` search proposes the same ones until
results steer it apart) are compared policy by policy too.

Prints, per run: the dense model's readings (median, spread = interquartile range / median), the
candidates' readings as ratios to the 1-worker run's reading of the same policy, how long readings
waited for the device (from ``AUTOPRUNE_METER_TRACE``; a reading also waits for another worker's
reading), scored trials per minute of the search loop, and whether
the 2-worker medians agree with the 1-worker one within the 1-worker spread; then the command.

    python benchmarks/meter_check.py                      # the default task: resnet20 on digits, latency 0.5
    python benchmarks/meter_check.py --trials 20 --fidelity kd:100 --skip-off
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Run:
    name: str
    workers: int
    meter: bool
    dense_ms: list[float]
    candidates: dict[str, float]  # policy (JSON) -> raw reading of the candidate, ms
    waits_ms: list[float]
    per_minute: float
    wall_s: float


def spread(values: list[float]) -> float:
    """Interquartile range over the median: the readings' usual spread, as a fraction."""
    q1, med, q3 = np.percentile(values, [25, 50, 75])
    return float((q3 - q1) / med) if med else float("nan")


def run(name: str, workers: int, meter: bool, args: argparse.Namespace, root: Path) -> Run:
    run_dir, trace = root / name, root / f"{name}.trace"
    env = {**os.environ, "AUTOPRUNE_METER_TRACE": str(trace), "AUTOPRUNE_METER": "on" if meter else "off"}
    argv = [sys.executable, "-m", "autoprune.cli", "search", "--target", "latency", "--budget", args.budget,
            "--searcher", args.searcher, "--trials", str(args.trials), "--fidelity", args.fidelity, "--final-steps", "0",
            "--executor", "processes", "--workers", str(workers), "--threads", "1", "--latency-threads", "1",
            "--seed", str(args.seed), "--run-dir", str(run_dir), *args.extra]
    print(f"[{name}] {shlex.join(argv[3:])}", flush=True)
    tick = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - tick
    if done.returncode not in (0, 3):
        sys.exit(f"[{name}] the search failed ({done.returncode}):\n{done.stderr[-3000:]}")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=run_dir.name, storage=f"sqlite:///{run_dir / 'study.db'}")
    dense, candidates = [], {}
    for t in study.get_trials(deepcopy=False):
        attrs = t.user_attrs
        if attrs.get("fidelity") == "final" or "latency_ms_now" not in attrs:
            continue
        dense.append(attrs["latency_ms_now"] / attrs["latency_ratio"])
        candidates[attrs["policy"]] = attrs["latency_ms_now"]
    summary = json.loads((run_dir / "summary.json").read_text())  # the loop's own time, start-up apart
    scored, loop_s = summary["scored"], summary["search_s"]
    from autoprune.meter import read_trace

    rows = read_trace(trace) if trace.exists() else []
    waits = [(start - asked) * 1e3 for kind, _, _, asked, start, _ in rows if kind == "reading"]
    return Run(name, workers, meter, dense, candidates, waits, 60.0 * scored / loop_s, wall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10, help="scored trials per run (default 10)")
    parser.add_argument("--budget", default="0.5", help="latency budget, a fraction of dense (default 0.5)")
    parser.add_argument("--fidelity", default="kd:50", help="how each trial is scored (default kd:50)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--searcher", default="random", help="searcher of every run (default random)")
    parser.add_argument("--skip-off", action="store_true", help="leave out the run with the meter off")
    parser.add_argument("extra", nargs="*", help="more `autoprune search` flags, after --")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="meter-check-"))
    plan = [("1-worker", 1, True), ("2-workers", 2, True)] + ([] if args.skip_off else [("2-workers-meter-off", 2, False)])
    runs = [run(name, workers, meter, args, root) for name, workers, meter in plan]
    base = runs[0]
    base_med, base_spread = statistics.median(base.dense_ms), spread(base.dense_ms)
    print(f"\nmachine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at the end; runs in {root}")
    print("dense-model readings beside each trial's candidate (ms): median, spread = IQR / median, n")
    for r in runs:
        med = statistics.median(r.dense_ms)
        shift = "" if r is base else f" ({med / base_med - 1:+.1%} vs 1 worker)"
        print(f"  {r.name:<20} {med:7.3f} ms{shift:<22} spread {spread(r.dense_ms):5.1%}  n={len(r.dense_ms)}")
    print("candidate readings, the same policy in both runs: median ratio to the 1-worker reading, spread, n")
    for r in runs[1:]:
        ratios = [v / base.candidates[p] for p, v in r.candidates.items() if p in base.candidates]
        if ratios:
            print(f"  {r.name:<20} x{statistics.median(ratios):.3f}  spread {spread(ratios):5.1%}  n={len(ratios)}")
        else:
            print(f"  {r.name:<20} no policy in common with the 1-worker run")
    print("readings' wait for the device (ms): median, max  |  scored trials per minute of the loop (whole run)")
    for r in runs:
        waits = f"{statistics.median(r.waits_ms):6.1f} {max(r.waits_ms):7.1f}" if r.waits_ms else "     -       -"
        print(f"  {r.name:<20} {waits}  |  {r.per_minute:5.2f}  ({r.wall_s:.0f} s)")
    for r in runs[1:]:
        shift = abs(statistics.median(r.dense_ms) / base_med - 1)
        print(f"{r.name}: dense median {'agrees' if shift <= base_spread else 'DISAGREES'} with 1 worker's "
              f"(|shift| {shift:.1%} vs the 1-worker spread {base_spread:.1%})")
    print("\ncommand: python " + shlex.join(sys.argv))
    (root / "summary.json").write_text(json.dumps([r.__dict__ for r in runs], indent=1))


if __name__ == "__main__":
    main()
