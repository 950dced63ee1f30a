"""Numbers the benchmark reports, as pure functions of plain data (unit-tested on hand-made values).

- ``hypervolume``: pymoo's HV indicator on (1 - accuracy, cost / dense) points, both minimised,
  with a fixed reference point, so fronts of different searchers and seeds are comparable.
- ``best_so_far`` / ``trials_to_within``: the best feasible accuracy after each scored trial, and
  how many scored trials a run needed to come within a tolerance of a reference accuracy.
- ``paired_difference``: a searcher against a baseline, seed by seed, with a bootstrap interval.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# (1 - accuracy, cost / dense): a trial at chance accuracy 0 or at the dense cost adds nothing.
HV_REFERENCE: tuple[float, float] = (1.0, 1.0)
WITHIN_POINTS = 0.005  # "within 0.5 points" of accuracy, as a fraction


def hypervolume(points: Iterable[tuple[float, float]], reference: tuple[float, float] = HV_REFERENCE) -> float:
    """Dominated hypervolume of ``(accuracy, cost_fraction)`` points (accuracy max, cost min).

    Points are mapped to ``(1 - accuracy, cost_fraction)`` and measured with pymoo's HV against
    ``reference``; points outside the reference box contribute nothing. No points: 0.0.
    """
    f = np.array([[1.0 - a, c] for a, c in points], dtype=float).reshape(-1, 2)
    ref = np.asarray(reference, dtype=float)
    f = f[np.all(np.isfinite(f), axis=1) & np.all(f < ref, axis=1)]
    if len(f) == 0:
        return 0.0
    from pymoo.indicators.hv import HV

    return float(HV(ref_point=ref)(f))


def best_so_far(accuracies: Sequence[float | None]) -> list[float | None]:
    """Running maximum over scored trials in order; ``None`` (infeasible) keeps the previous best."""
    out: list[float | None] = []
    best: float | None = None
    for a in accuracies:
        if a is not None and math.isfinite(a) and (best is None or a > best):
            best = a
        out.append(best)
    return out


def trials_to_within(curve: Sequence[float | None], reference: float, tol: float = WITHIN_POINTS) -> int | None:
    """1-based number of scored trials after which ``curve`` is within ``tol`` of ``reference``.

    ``None`` if the curve never gets there. The comparison allows for float rounding.
    """
    threshold = reference - tol - 1e-12
    for i, value in enumerate(curve, start=1):
        if value is not None and value >= threshold:
            return i
    return None


def mean_sd(values: Iterable[float | None]) -> tuple[float, float, int]:
    """(mean, sample standard deviation, n) over the finite values; sd is 0 for one value, nan for none."""
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not xs:
        return math.nan, math.nan, 0
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0), len(xs)


def mean_curve(curves: Sequence[Sequence[float | None]]) -> list[float]:
    """Pointwise mean of best-so-far curves over seeds (nan where no seed has a value yet)."""
    length = max((len(c) for c in curves), default=0)
    out = []
    for i in range(length):
        vals = [c[min(i, len(c) - 1)] for c in curves if c]
        vals = [v for v in vals if v is not None]
        out.append(statistics.fmean(vals) if vals else math.nan)
    return out


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (ties averaged); nan with fewer than 3 pairs or a constant side."""
    if len(x) < 3 or len(x) != len(y) or len(set(x)) < 2 or len(set(y)) < 2:
        return math.nan
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)



def spearman_interval(x: Sequence[float], y: Sequence[float], *, level: float = 0.95, resamples: int = 2_000,
                      seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval of ``spearman(x, y)``, resampling the pairs (seeded, so a
    report renders the same interval every time); nan where the correlation is undefined. With 30
    policies a Spearman of 0.8 is known to about +-0.1: the interval says how firmly a fidelity
    clears the target."""
    if math.isnan(spearman(x, y)):
        return math.nan, math.nan
    from scipy.stats import rankdata

    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(x), (resamples, len(x)))
    rx = rankdata(np.asarray(x, dtype=float)[pick], axis=1)  # ties averaged, as spearman() does
    ry = rankdata(np.asarray(y, dtype=float)[pick], axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    norm = np.sqrt((rx * rx).sum(axis=1) * (ry * ry).sum(axis=1))
    ok = norm > 0  # a resample of one distinct value has no correlation
    draws = (rx * ry).sum(axis=1)[ok] / norm[ok]
    if not len(draws):
        return math.nan, math.nan
    tail = 100 * (1 - level) / 2
    return float(np.percentile(draws, tail)), float(np.percentile(draws, 100 - tail))


VERDICT_PAIRS = 3  # seeds a paired difference needs before it is called ahead or behind (issue 15: >= 3)


@dataclass(frozen=True)
class PairedDifference:
    """Mean over seeds of ``searcher - baseline`` and its bootstrap confidence interval."""

    mean: float
    low: float
    high: float
    pairs: int
    level: float = 0.95
    higher: int = 0  # seeds at which the searcher's value was above the baseline's
    t_low: float = math.nan  # Student t interval of the mean: wider than the bootstrap's at few seeds
    t_high: float = math.nan

    @property
    def excludes_zero(self) -> bool:
        # two seeds: the percentile interval is their range, so 2 of 2 would read as a verdict
        return self.pairs >= VERDICT_PAIRS and (self.low > 0 or self.high < 0)


def paired_difference(values: Mapping[int, float | None], baseline: Mapping[int, float | None], *,
                      level: float = 0.95, resamples: int = 10_000, seed: int = 0) -> PairedDifference:
    """``values[s] - baseline[s]`` over the seeds both have, resampled over seeds (percentile
    bootstrap of the mean, seeded, so a report renders the same interval every time), and the
    Student t interval beside it, which at four or five seeds is the more cautious of the two.

    Percentile rather than BCa: with the few seeds a benchmark affords, BCa's acceleration is
    undefined whenever the differences tie. One pair: its difference, interval nan.
    """
    diffs = [float(values[s]) - float(baseline[s]) for s in sorted(values)
             if s in baseline and values[s] is not None and baseline[s] is not None]
    if not diffs:
        return PairedDifference(math.nan, math.nan, math.nan, 0, level)
    mean = statistics.fmean(diffs)
    higher = sum(d > 0 for d in diffs)
    if len(diffs) < 2 or len(set(diffs)) == 1:
        spread = math.nan if len(diffs) < 2 else mean
        return PairedDifference(mean, spread, spread, len(diffs), level, higher, spread, spread)
    from scipy.stats import bootstrap
    from scipy.stats import t as student

    ci = bootstrap((np.array(diffs),), np.mean, confidence_level=level, n_resamples=resamples,
                   method="percentile", rng=np.random.default_rng(seed)).confidence_interval
    half = student.ppf((1 + level) / 2, len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return PairedDifference(mean, float(ci.low), float(ci.high), len(diffs), level, higher,
                            float(mean - half), float(mean + half))
