"""``autoprune bench``: every searcher and the baselines on reference tasks, written up in BENCHMARKS.md.

- ``harness``: the tasks (study recipes), both views (same trials, same wall clock), final fine-tunes.
- ``metrics``: hypervolume, best-so-far, trials to within 0.5 points, Spearman.
- ``fidelity``: rank correlation of the cheap scores with final accuracy.
- ``throughput``: scored trials per minute per executor and worker count; overhead.
- ``markdown`` / ``plots``: BENCHMARKS.md and its figures; ``machine``: the machine and versions behind them.
- ``dense``: ``autoprune train``, the training command of the dense reference models.
- ``command``: the CLI arguments of ``bench`` and ``train``.
"""

from __future__ import annotations

from autoprune.bench.harness import BenchConfig, BenchResult, RunResult, run_bench

__all__ = ["BenchConfig", "BenchResult", "RunResult", "run_bench"]
