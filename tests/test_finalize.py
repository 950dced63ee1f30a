"""Picking the search's result: the most accurate candidate that stays within budget on re-measure."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from autoprune import finalize
from autoprune.costs import CostSettings
from autoprune.errors import UserError
from autoprune.study import COMPLETE, Trial
from autoprune.testing.toy import ToyProblem

LIMIT = 10.0


def _candidates(readings: list[float]) -> tuple[list[Trial], dict[int, float]]:
    """Scored feasible trials, most accurate first, and what each re-measures (ms)."""
    space = ToyProblem.make().space()
    trials, by_policy = [], {}
    for number, reading in enumerate(readings):
        policy = space.policy({f"slot{i}": (0.2 if i == number else 0.0) for i in range(6)})
        trials.append(Trial(number, policy, COMPLETE, {"val_accuracy": 0.9 - 0.01 * number, "latency_ms": 9.0},
                            fidelity="kd:5", constraint=-0.1))
        by_policy[id(policy)] = reading
    return trials, by_policy


@pytest.fixture
def remeasure(monkeypatch):
    """Replace building and timing a candidate by a table of readings keyed by its policy: one
    value, or (three-round reading, nine-round reading). The readings taken are listed in order
    under the key ``"taken"``, their rounds under ``"rounds"``."""
    table: dict = {"taken": [], "rounds": []}

    def reading(problem, model, rounds: int = 3) -> dict[str, float]:
        value = table[id(model)]
        if isinstance(value, tuple):
            value = value[0] if rounds == 3 else value[1]
        table["taken"].append(value)
        table["rounds"].append(rounds)
        return {"latency_ms": value}

    monkeypatch.setattr(finalize, "slim", lambda task, space, policy, criterion, seed: (policy, []))
    monkeypatch.setattr(finalize, "anchored_latency", reading)
    return table


def _problem(metric: str = "latency_ms", table: str | None = None) -> SimpleNamespace:
    return SimpleNamespace(metric=metric, limit=LIMIT, task=None, space=None, cost=CostSettings((1, 8, 8), table=table),
                           settings=SimpleNamespace(criterion="magnitude", seed=0))


@pytest.mark.parametrize(
    ("readings", "expected", "why"),
    [
        ([9.0, 9.5], 0, "the most accurate has room to spare"),
        ([9.75, 9.0], 0, "inside the 3% margin on three rounds, but nine rounds earn the 1.7% it has"),
        ([(9.75, 9.9), 9.0], 1, "nine rounds put the first too close: the next, with room"),
        ([9.9, 9.8, 9.0], 1, "the first too close even on nine rounds; the second within the smaller margin"),
        ([9.9, 10.4, 9.85], 0, "none has room: the most accurate within the limit"),
        ([10.8, 10.3, 10.5], 1, "none within: the fastest"),
    ],
)
def test_pick_prefers_a_candidate_with_room_under_a_latency_limit(remeasure, readings, expected, why):
    trials, table = _candidates(readings)
    remeasure.update(table)
    said: list[str] = []
    best = finalize.pick(_problem(), trials, margin=0.03, log=said.append)
    assert best.number == expected, why
    first = readings[0][-1] if isinstance(readings[0], tuple) else readings[0]
    assert bool(said) == (first > LIMIT * (1 - 0.03 / 3**0.5)), "every candidate passed over is said in the log"


def test_pick_reads_a_candidate_near_the_limit_for_nine_rounds_and_stops_at_the_first_with_room(remeasure):
    trials, table = _candidates([9.9, 9.0, 8.0])
    remeasure.update(table)
    assert finalize.pick(_problem(), trials, log=lambda _m: None).number == 1
    assert remeasure["taken"] == [9.9, 9.9, 9.0]
    assert remeasure["rounds"] == [3, finalize.VERIFY_ROUNDS, 3]


def test_pick_takes_the_most_accurate_for_an_exact_metric_and_needs_a_candidate():
    trials, _ = _candidates([99.0, 1.0])
    assert finalize.pick(_problem("macs"), trials).number == 0
    with pytest.raises(UserError, match="no trial both met the budget"):
        finalize.pick(_problem(), [])


def test_pick_against_a_device_table_takes_the_most_accurate_without_reading_again(remeasure):
    """A table's estimates are deterministic: no margin, nothing re-read (the candidate at 9.9 ms
    of a 10 ms limit would be passed over on a timed machine)."""
    trials, table = _candidates([9.9, 9.0])
    remeasure.update(table)
    assert finalize.pick(_problem(table="phone.json"), trials, log=lambda _m: None).number == 0
    assert remeasure["taken"] == []


def test_picks_sharing_readings_agree_on_the_trials_they_share(remeasure):
    """The bench's two views pick from overlapping prefixes of one search: with a shared
    ``readings`` memo the candidate near the limit is judged once, not once per view by a noisy
    second reading (here the second reading of trial 0 would have had room to spare)."""
    trials, table = _candidates([9.9, 9.0])
    remeasure.update(table)
    readings: dict[int, float] = {}
    first = finalize.pick(_problem(), trials, log=lambda _m: None, readings=readings)
    remeasure[id(trials[0].policy)] = 9.0  # what a fresh reading of trial 0 would now say
    again = finalize.pick(_problem(), trials, log=lambda _m: None, readings=readings)
    assert first.number == again.number == 1
    assert readings == {0: 9.9, 1: 9.0} and remeasure["taken"] == [9.9, 9.9, 9.0]
    fresh = finalize.pick(_problem(), trials, log=lambda _m: None)
    assert fresh.number == 0, "without the memo the second reading decides"


@pytest.fixture
def exports(monkeypatch):
    """Replace the final fine-tune and export by a table: trial number -> the export's re-measured
    cost. The trials finalised are listed in order under ``"done"``."""
    table: dict = {"done": []}

    def fake_finalize(problem, ledger, best, executor, *, log=print):
        table["done"].append(best.number)
        return SimpleNamespace(verified_cost=table[best.number])

    monkeypatch.setattr(finalize, "finalize", fake_finalize)
    return table


def _search_problem(metric: str = "latency_ms", table: str | None = None) -> SimpleNamespace:
    problem = _problem(metric, table)
    problem.settings.final_steps = 10
    return problem


@pytest.mark.parametrize(
    ("readings", "exported", "done", "why"),
    [
        ([9.0, 9.5, 8.0], {0: 9.9}, [0], "the export is within: nothing more"),
        ([9.0, 9.0, 8.0], {0: 10.01, 1: 9.2}, [0, 1], "the export read over: the next candidate"),
        ([9.0, 9.7, 8.0], {0: 10.01, 2: 8.4}, [0, 2], "the next has 3% room, too little for the doubled margin: the one after"),
        ([9.0, 9.0, 8.0], {0: 10.2, 1: 10.1}, [0, 1], "one retry only: the second export decides, over"),
    ],
)
def test_a_search_finalises_the_next_candidate_when_its_export_reads_over_a_measured_latency(
        remeasure, exports, readings, exported, done, why):
    trials, table = _candidates(readings)
    remeasure.update(table)
    exports.update(exported)
    said: list[str] = []
    best, final = finalize.finalize_within_budget(_search_problem(), None, trials, None, log=said.append)
    assert exports["done"] == done, why
    assert best.number == done[-1] and final.verified_cost == exported[done[-1]]
    assert any("re-measured over the budget" in line for line in said) == (len(done) > 1)


@pytest.mark.parametrize(("metric", "table"), [("macs", None), ("latency_ms", "phone.json")])
def test_an_export_over_an_exact_or_table_budget_is_not_retried(remeasure, exports, metric, table):
    """MACs are exact and a device table's estimate is fixed: finalising another candidate would
    not change what the check reads, so the over-budget export stands (exit status 3)."""
    trials, table_readings = _candidates([9.0, 9.0])
    remeasure.update(table_readings)
    exports.update({0: 10.5, 1: 9.0})
    best, final = finalize.finalize_within_budget(_search_problem(metric, table), None, trials, None, log=lambda _m: None)
    assert exports["done"] == [0] and final.verified_cost == 10.5
