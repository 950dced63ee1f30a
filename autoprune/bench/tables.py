"""The per-searcher tables of a bench report: accuracy and cost by view, paired differences
against the baselines over seeds, the cost of each phase, and the formatting they share.

Kept apart from ``markdown`` (which lays the report out) so the tables can be read, tested and
reused by the side studies without the report around them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from autoprune.bench.metrics import mean_sd, paired_difference, trials_to_within


def pct(x: float | None) -> str:
    """A fraction as a percentage with two decimals, or a dash when missing."""
    return "–" if x is None or x != x else f"{100 * x:.2f}"


def _mean_sd(values: Sequence[float | None], scale: float = 1.0, digits: int = 2) -> str:
    """``mean ± sd``; one value alone has no spread, so it is given as it is, marked one seed."""
    mean, sd, n = mean_sd(values)
    if n == 0:
        return "–"
    return f"{scale * mean:.{digits}f} " + (f"± {scale * sd:.{digits}f}" if n > 1 else "(1 seed)")


def _mean_sd_pct(values: Sequence[float | None]) -> str:
    return _mean_sd(values, 100.0)


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A Markdown table's lines."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def reference_accuracy(runs: Sequence[Any]) -> float | None:
    """The best feasible search accuracy any run of these reached (the 0.5-point target)."""
    ends = [r.curve[-1] for r in runs if r.curve and r.curve[-1] is not None]
    return max(ends) if ends else None


def view_rows(runs: Sequence[Any], searchers: Sequence[str], metric: str, reference: float | None,
              measured: bool = False) -> list[list[str]]:
    """One row per searcher: test accuracy, cost against budget (with ``measured``, the latency
    table's estimate, then the reading on this machine), hypervolume, trials to within 0.5."""
    rows = []
    for name in searchers:
        mine = [r for r in runs if r.searcher == name]
        if not mine:
            continue
        # as a fraction of each run's own limit: a resumed bench re-reads the dense latency, so the
        # limits in ms of runs from different invocations differ while the budget (0.5 of dense) does not
        fractions = [f for f in (_pick_fraction(r) for r in mine) if f is not None]
        cost = "–" if not fractions else f"{sum(fractions) / len(fractions):.3f}"
        reach = [trials_to_within(r.curve, reference) if reference is not None else None for r in mine]
        scored_mean, _, _ = mean_sd([r.scored for r in mine])
        probes_mean, _, _ = mean_sd([getattr(r, "probes", 0) for r in mine])
        scored = f"{scored_mean:.1f}" + (f" (+{probes_mean:.0f} probes)" if probes_mean else "")
        wall_mean, _, _ = mean_sd([r.wall_s for r in mine])
        errors = sum(r.error is not None for r in mine)
        if measured:
            here = [r.measured_fraction for r in mine if getattr(r, "measured_fraction", None) is not None]
            cost += f" (measured {sum(here) / len(here):.3f})" if here else " (measured –)"
        rows.append([
            f"`{name}`", _mean_sd_pct([r.final_test for r in mine]), cost,
            f"{sum(bool(r.within_budget) for r in mine)}/{len(mine)}", _mean_sd([r.hypervolume for r in mine], digits=4),
            ", ".join("never" if k is None else str(k) for k in reach), scored, f"{wall_mean:.0f}",
            str(errors) if errors else "",
        ])
    return rows


BASELINES = ("uniform", "random")


def _pick_fraction(run: Any) -> float | None:
    """The exported pick's re-measured cost as a fraction of the budget."""
    if run.final_cost is None or not run.limit or math.isnan(run.limit):
        return None
    return run.final_cost / run.limit


def paired_rows(runs: Sequence[Any], searchers: Sequence[str]) -> list[list[str]]:
    """Per searcher, its final test accuracy minus each baseline's, seed by seed (points), with a
    95% bootstrap interval over seeds, whether it excludes zero, and the picks' cost / budget."""
    by = {name: {r.seed: r.final_test for r in runs if r.searcher == name} for name in searchers}
    rows = []
    for name in searchers:
        if not by[name]:
            continue
        cells = [f"`{name}`"]
        for base in BASELINES:
            if name == base or not by.get(base):
                cells.append("–")
                continue
            d = paired_difference(by[name], by[base])
            if d.pairs == 0:
                cells.append("–")
                continue
            interval = "" if d.low != d.low else f" [{100 * d.low:+.2f}, {100 * d.high:+.2f}]"
            verdict = (" ahead" if d.low > 0 else " behind" if d.high < 0 else "") if d.excludes_zero else ""
            count = "1 seed" if d.pairs == 1 else f"higher at {d.higher} of {d.pairs} seeds"
            if d.t_low == d.t_low:
                count += f"; t [{100 * d.t_low:+.2f}, {100 * d.t_high:+.2f}]"
            cells.append(f"{100 * d.mean:+.2f}{interval}{verdict} ({count})")
        fractions = [f for f in (_pick_fraction(r) for r in runs if r.searcher == name) if f is not None]
        cells.append(", ".join(f"{f:.3f}" for f in fractions) or "–")
        rows.append(cells)
    return rows


def seed_counts(runs: Sequence[Any], searchers: Sequence[str]) -> str:
    """How many seeds the searchers ran: one count when they agree, else the most common count and
    the searchers that ran another ('' without runs). A resumed bench may add seeds to a few."""
    from collections import Counter

    counts = {n: len({r.seed for r in runs if r.searcher == n}) for n in searchers}
    counts = {n: c for n, c in counts.items() if c}
    if not counts:
        return ""
    tally = Counter(counts.values())
    common = max(tally, key=lambda c: (tally[c], c))  # the count most searchers ran, the larger on a tie
    others: dict[int, list[str]] = {}
    for name, count in counts.items():
        if count != common:
            others.setdefault(count, []).append(f"`{name}`")
    return f"{common} seed{'s' if common != 1 else ''}" + "".join(
        f"; {c} for {', '.join(names)}" for c, names in sorted(others.items()))


def cost_rows(runs: Sequence[Any], searchers: Sequence[str], workers: int = 1) -> list[list[str]]:
    """Median seconds per phase per scored trial, seconds per trial overall, overhead fraction of
    the worker time (wall x ``workers`` trials at once)."""
    import statistics

    from autoprune.bench.throughput import overhead_fraction

    rows = []
    for name in searchers:
        mine = [r for r in runs if r.searcher == name and r.scored]
        if not mine:
            continue
        cells = []
        for phase in ("prune_s", "measure_s", "finetune_s", "evaluate_s"):
            vals = [r.phases[phase] for r in mine if phase in r.phases]
            cells.append(f"{statistics.median(vals):.2f}" if vals else "–")
        per_trial = statistics.median(r.wall_s / r.scored for r in mine)
        overhead, _, _ = mean_sd([overhead_fraction(r.wall_s, r.finetune_s + r.evaluate_s, workers) for r in mine])
        rows.append([f"`{name}`", *cells, f"{per_trial:.2f}", f"{100 * overhead:.0f}%"])
    return rows


def busy_note(runs: Sequence[Any], workers: int) -> list[str]:
    """The searches that shared the machine (a 15-minute load average at their end more than half
    a core above the bench's own workers): in the equal-time view they had less of it."""
    busy = sorted({(r.searcher, r.seed, r.load) for r in runs
                   if r.load is not None and r.load > workers + 0.5})
    if not busy:
        return []
    named = ", ".join(f"`{name}` seed {seed} ({load:.1f})" for name, seed, load in busy)
    return [f"Searches that shared the machine with other work (15-minute load average at their end; the "
            f"bench's {workers} worker(s) alone keep it near {workers}): {named}. They scored fewer trials in "
            "this view than on an idle machine.", ""]


def code_note(runs: Sequence[Any]) -> list[str]:
    """Which autoprune commit ran the searches; with several, which units each one ran."""
    codes = sorted({r.code or "unrecorded" for r in runs})
    if len(codes) == 1:
        return [f"Code behind these runs: `{codes[0]}`.", ""]
    if not codes:
        return []
    units = {c: list(dict.fromkeys(f"`{r.searcher}` seed {r.seed}" for r in runs if (r.code or "unrecorded") == c))
             for c in codes}  # both views of a search are runs of one unit
    return ["Code behind these runs (more than one version of the code: compare across them with care): "
            + "; ".join(f"`{c}`: {', '.join(units[c])}" for c in codes) + ".", ""]
