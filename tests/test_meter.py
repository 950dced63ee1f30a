"""The latency meter: readings never overlap training steps on the same device, across processes."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
from pathlib import Path

import pytest

from autoprune import meter
from autoprune.testing import jobs


def _overlaps(rows) -> list[tuple]:
    """(reading, step) pairs of one device whose [start, end] intervals intersect."""
    readings = [r for r in rows if r[0] == "reading"]
    steps = [r for r in rows if r[0] == "step"]
    return [(r, s) for r in readings for s in steps if r[1] == s[1] and s[4] < r[5] and r[4] < s[5]]


def _run(tmp_path: Path, protected: bool) -> list[tuple]:
    trace = tmp_path / "trace"
    env = {"AUTOPRUNE_LOCK_DIR": str(tmp_path / "locks"), "AUTOPRUNE_METER_TRACE": str(trace),
           "AUTOPRUNE_METER": "on" if protected else "off"}
    with concurrent.futures.ProcessPoolExecutor(3, mp_context=multiprocessing.get_context("spawn")) as pool:
        trainers = [pool.submit(jobs.meter_trainer, env, 3.0, 0.01) for _ in range(2)]
        reader = pool.submit(jobs.meter_reader, env, 8, 0.03, 0.1)
        assert reader.result(timeout=120) == 8 and all(t.result(timeout=120) > 0 for t in trainers)
    return meter.read_trace(trace) if trace.exists() else []


def test_readings_never_overlap_training_steps_of_other_processes(tmp_path: Path) -> None:
    rows = _run(tmp_path, protected=True)
    readings = [r for r in rows if r[0] == "reading"]
    steps = [r for r in rows if r[0] == "step"]
    assert len(readings) == 8 and len({s[2] for s in steps}) == 2
    assert not _overlaps(rows)
    # training went on between readings (they did not starve it, nor it them)
    first, last = readings[0][5], readings[-1][4]
    assert sum(first < s[4] < last for s in steps) > 10
    assert max(r[4] - r[3] for r in readings) < 2.0  # a reading waits for the steps under way, no more


def test_without_the_meter_the_same_check_finds_overlaps(tmp_path: Path) -> None:
    """The check above can fail: with the locks off (AUTOPRUNE_METER=off) readings and steps overlap.
    The trace is still written, so the same intervals are compared."""
    rows = _run(tmp_path, protected=False)
    assert [r for r in rows if r[0] == "reading"] and _overlaps(rows)


def test_a_reading_inside_a_step_is_an_error_not_a_deadlock(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("AUTOPRUNE_LOCK_DIR", str(tmp_path))
    with meter.step("cpu"), meter.step("cpu"):  # re-entrant
        with pytest.raises(RuntimeError, match="wait for itself"):
            with meter.reading("cpu"):
                pass
    with meter.reading("cpu"), meter.reading("cpu"), meter.step("cpu"):  # a step inside a reading is the reading's
        pass


@pytest.mark.slow
def test_a_two_worker_search_never_reads_latency_beside_a_training_step(tmp_path: Path, monkeypatch) -> None:
    """A real search: two process workers fine-tune and read latency on this machine's CPU; every
    reading (the driver's and the workers') is checked against every step, timestamps from the trace."""
    from autoprune.cli import main

    trace = tmp_path / "trace"
    monkeypatch.setenv("AUTOPRUNE_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.setenv("AUTOPRUNE_METER_TRACE", str(trace))
    # full-width ResNet-20: at width 4 a pruned net can read slower than the dense one (overheads
    # dominate), and the budget would be refused as out of reach on an unlucky reading
    code = main(["search", "--target", "latency", "--budget", "0.9", "--model", "resnet20", "--image-size", "16",
                 "--dense-epochs", "1", "--trials", "4", "--fidelity", "kd:30", "--final-steps", "10",
                 "--latency-batch", "16", "--latency-repeats", "10", "--latency-warmup", "2", "--searcher", "random",
                 "--seed", "1", "--executor", "processes", "--workers", "2", "--threads", "1",
                 "--run-dir", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache")])
    assert code in (0, 3)
    rows = meter.read_trace(trace)
    readings = [r for r in rows if r[0] == "reading"]
    steps = [r for r in rows if r[0] == "step"]
    workers = {s[2] for s in steps} & {r[2] for r in readings}
    assert len(workers) >= 2, "both workers trained and read latency"  # the driver too, before them
    assert len(readings) > 8 and len(steps) > 100
    assert not _overlaps(rows)
