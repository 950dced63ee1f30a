"""The bench report's table of portfolio members: who asked how many trials, and who found the pick.

Issue 22 judges a portfolio by its accuracy against its members alone and by each member's share;
the shares come from the ledger (``report.member_rows``) and are stored with each run's result.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def member_rows(runs: Sequence[Any]) -> list[list[str]]:
    """One row per portfolio run (searcher, seed): each member's share of trials and of time."""
    rows = []
    for run in sorted(runs, key=lambda r: (r.searcher, r.seed)):
        if not run.members:
            continue
        order = sorted(run.members.items(), key=lambda item: -item[1]["trial_share"])
        trials = ", ".join(f"`{name}` {100 * m['trial_share']:.0f}% ({m['scored']:.0f} scored)" for name, m in order)
        time = ", ".join(f"`{name}` {100 * m['time_share']:.0f}%" for name, m in order)
        rows.append([f"`{run.searcher}`", str(run.seed), trials, time, f"`{run.pick_member}`" if run.pick_member else "–"])
    return rows


def members_section(runs: Sequence[Any]) -> list[str]:
    """Markdown lines for the portfolio runs among ``runs`` (one view); none when there are none."""
    rows = member_rows(runs)
    if not rows:
        return []
    lines = ["#### Portfolio members", "",
             "| portfolio | seed | share of ordinary trials (scored) | share of trial time | pick proposed by |",
             "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines + ["", "Ordinary trials: scored or rejected at the search fidelity, set-up probes (knapsack's scan) "
                        "apart; time: the seconds the ledger records per trial plus the member's ask time, probes "
                        "included.", ""]
