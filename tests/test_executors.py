"""Executors: results in order, exceptions with their type, identical numbers on every backend."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import sys
import time
import traceback
from collections.abc import Iterator

import pytest

from autoprune.errors import UserError
from autoprune.executors import (
    EXECUTORS,
    Executor,
    InlineExecutor,
    ProcessExecutor,
    RayExecutor,
    TrialResources,
    make_executor,
)
from autoprune.testing import jobs

TIMEOUT = 120


@pytest.fixture(scope="module")
def processes() -> Iterator[ProcessExecutor]:
    executor = ProcessExecutor(workers=2, threads_per_worker=1)
    yield executor
    executor.shutdown(cancel=True)


@pytest.fixture(scope="module")
def ray_executor() -> Iterator[RayExecutor]:
    pytest.importorskip("ray")
    executor = RayExecutor(workers=2, threads_per_worker=1)
    yield executor
    executor.shutdown(cancel=True)
    import ray

    assert not ray.is_initialized()


@pytest.fixture(params=["inline", "processes", pytest.param("ray", marks=pytest.mark.ray)])
def executor(request: pytest.FixtureRequest) -> Executor:
    if request.param == "inline":
        return InlineExecutor(threads_per_worker=1)
    return request.getfixturevalue("ray_executor" if request.param == "ray" else "processes")


def test_results_come_back_in_submission_order(executor: Executor) -> None:
    # Later jobs are shorter, so they finish first on a parallel backend.
    futures = [executor.submit(jobs.square, i, 0.05 * (5 - i)) for i in range(6)]
    assert [f.result(timeout=TIMEOUT) for f in futures] == [i * i for i in range(6)]


def test_exception_keeps_type_message_and_worker_traceback(executor: Executor) -> None:
    future = executor.submit(jobs.fail, "bad ratio 1.5")
    with pytest.raises(ValueError, match="bad ratio 1.5") as caught:
        future.result(timeout=TIMEOUT)
    assert type(caught.value) is ValueError
    text = "".join(traceback.format_exception(caught.value))
    assert "jobs.py" in text and "raise ValueError(message)" in text
    # The executor still works after a failed trial.
    assert executor.submit(jobs.square, 3).result(timeout=TIMEOUT) == 9


def test_threads_per_worker_applies_inside_the_trial(executor: Executor) -> None:
    assert executor.submit(jobs.thread_count).result(timeout=TIMEOUT) == 1


def test_inline_restores_the_callers_thread_count() -> None:
    import torch

    before = torch.get_num_threads()
    executor = InlineExecutor(threads_per_worker=before + 1)
    assert executor.submit(jobs.thread_count).result() == before + 1
    assert torch.get_num_threads() == before


def test_same_numbers_inline_and_processes(processes: ProcessExecutor) -> None:
    inline = InlineExecutor(threads_per_worker=1)
    expected = [inline.submit(jobs.tiny_training, seed).result() for seed in (0, 1)]
    assert expected[0] != expected[1]  # the seed matters, so equality below means something
    futures = [processes.submit(jobs.tiny_training, seed) for seed in (0, 1)]
    assert [f.result(timeout=TIMEOUT) for f in futures] == expected


@pytest.mark.ray
def test_same_numbers_on_ray(ray_executor: RayExecutor) -> None:
    inline = InlineExecutor(threads_per_worker=1)
    expected = [inline.submit(jobs.tiny_training, seed).result() for seed in (0, 1)]
    futures = [ray_executor.submit(jobs.tiny_training, seed) for seed in (0, 1)]
    assert [f.result(timeout=TIMEOUT) for f in futures] == expected


def test_processes_run_trials_in_parallel(processes: ProcessExecutor, tmp_path) -> None:
    assert processes.capacity == 2
    futures = [processes.submit(jobs.rendezvous, str(tmp_path), f"job{i}", 2) for i in range(2)]
    (pid_a, met_a), (pid_b, met_b) = (f.result(timeout=TIMEOUT) for f in futures)
    assert met_a and met_b, "the two jobs never ran at the same time"
    assert pid_a != pid_b != os.getpid()


@pytest.mark.ray
def test_ray_runs_trials_in_parallel_and_cancels(ray_executor: RayExecutor, tmp_path) -> None:
    assert ray_executor.capacity == 2
    futures = [ray_executor.submit(jobs.rendezvous, str(tmp_path), f"job{i}", 2) for i in range(2)]
    assert all(f.result(timeout=TIMEOUT)[1] for f in futures)
    # Cancelling frees the CPUs: a later job still runs although both slots were taken.
    long = [ray_executor.submit(jobs.sleep, 60) for _ in range(3)]
    assert all(f.cancel() for f in long)
    _, not_done = concurrent.futures.wait(long, timeout=10)
    assert not not_done
    assert ray_executor.submit(jobs.square, 4).result(timeout=TIMEOUT) == 16


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is dead too
        return f.read().split(") ")[-1][0] != "Z"


def test_keyboard_interrupt_kills_process_workers_promptly(tmp_path) -> None:
    start = time.monotonic()
    pids = tmp_path / "pids"
    with pytest.raises(KeyboardInterrupt):
        with ProcessExecutor(workers=1) as executor:
            futures = [executor.submit(jobs.pid_then_sleep, str(pids), 60) for _ in range(3)]
            _wait_for_pids(pids, 1)
            workers = executor.worker_pids()
            raise KeyboardInterrupt
    assert time.monotonic() - start < 60
    assert workers and not any(_alive(pid) for pid in workers)
    assert futures[-1].cancelled()
    # Waiting on the killed and cancelled trials returns at once instead of hanging.
    _, not_done = concurrent.futures.wait(futures, timeout=10)
    assert not not_done
    with pytest.raises(concurrent.futures.CancelledError):
        futures[0].result(timeout=1)
    with pytest.raises(RuntimeError, match="shut down"):
        executor.submit(jobs.square, 2)


def _wait_for_pids(path, n: int, timeout: float = TIMEOUT) -> list[int]:
    """The PIDs that ``jobs.pid_then_sleep`` calls wrote to ``path``, once there are ``n``."""
    deadline = time.monotonic() + timeout
    while True:
        pids = [int(p) for p in path.read_text().split()] if path.exists() else []
        if len(pids) >= n:
            return pids
        assert time.monotonic() < deadline, f"only {len(pids)} of {n} jobs started"
        time.sleep(0.05)


@pytest.mark.parametrize("kind", ["processes", pytest.param("ray", marks=pytest.mark.ray)])
def test_a_worker_killed_mid_trial_is_run_again_once_then_failed(kind: str, tmp_path) -> None:
    """SIGKILL of the worker running a trial: run again on a fresh worker; killed again, the trial
    fails with WorkerDied and says how; a trial running on the other worker meanwhile finishes."""
    if kind == "ray":
        pytest.importorskip("ray")
    from autoprune.executors import WorkerDied

    executor = ProcessExecutor(workers=2) if kind == "processes" else RayExecutor(workers=2, threads_per_worker=1)
    try:
        survivor = executor.submit(jobs.pid_then_sleep, str(tmp_path / "survivor"), 3.0)
        other = _wait_for_pids(tmp_path / "survivor", 1)[0]
        pids = tmp_path / "once"
        once = executor.submit(jobs.pid_then_sleep, str(pids), 1.0)
        first = _wait_for_pids(pids, 1)[0]
        os.kill(first, signal.SIGKILL)
        second = once.result(timeout=TIMEOUT)
        assert second != first and once.worker_retries == 1  # Ray may reuse the survivor's worker by now
        assert [int(p) for p in pids.read_text().split()] == [first, second]

        pids = tmp_path / "twice"
        twice = executor.submit(jobs.pid_then_sleep, str(pids), 30.0)
        os.kill(_wait_for_pids(pids, 1)[0], signal.SIGKILL)
        os.kill(_wait_for_pids(pids, 2)[1], signal.SIGKILL)
        with pytest.raises(WorkerDied, match="died on each of 2 attempts") as caught:
            twice.result(timeout=TIMEOUT)
        assert twice.worker_retries == 1
        if kind == "processes":  # Ray's message names no signal: it only sees the connection drop
            assert str(caught.value).count("killed by SIGKILL") == 2
        assert survivor.result(timeout=TIMEOUT) == other  # never disturbed, never run again
        assert survivor.worker_retries == 0
        assert executor.submit(jobs.square, 5).result(timeout=TIMEOUT) == 25  # still usable
    finally:
        executor.shutdown(cancel=True)


def test_make_executor_builds_each_kind() -> None:
    assert EXECUTORS == ("inline", "processes", "ray")
    inline = make_executor("inline")
    assert isinstance(inline, InlineExecutor) and inline.capacity == 1
    assert inline.threads_per_worker is None
    with make_executor("processes", workers=2) as pool:
        assert isinstance(pool, ProcessExecutor) and pool.capacity == 2
        assert pool.threads_per_worker == max(1, (os.cpu_count() or 1) // 2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "dask"}, "inline, processes, ray"),
        ({"name": "processes", "workers": 0}, "workers must be"),
        ({"name": "ray", "workers": -2}, "workers must be"),
        ({"name": "processes", "threads_per_worker": 0}, "threads per worker"),
        ({"name": "processes", "ray_address": "auto"}, "only applies"),
    ],
)
def test_make_executor_rejects_bad_choices(kwargs: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        make_executor(**kwargs)


def test_missing_ray_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(UserError, match=r"autoprune\[ray\]"):
        make_executor("ray", workers=1)


def test_unreachable_ray_address_is_a_quick_user_error() -> None:
    pytest.importorskip("ray")
    start = time.monotonic()
    with pytest.raises(UserError, match="ray start --head") as caught:
        RayExecutor(workers=1, address="127.0.0.1:1")
    assert "\n" not in str(caught.value)
    assert time.monotonic() - start < 10


# -- what Ray reserves per trial, and how many trials a cluster holds ---------------------------------
@pytest.mark.parametrize(
    ("offered", "node", "kwargs", "expected"),
    [
        # a CPU cluster, workers not given: one 1-CPU trial per CPU, 1 thread each
        ((8, 0), (4, 0), {}, (8, 1.0, 0.0, 1)),
        # --threads 2: each trial reserves 2 CPUs
        ((8, 0), (4, 0), {"threads": 2}, (4, 2.0, 0.0, 2)),
        # GPUs shared by four trials each: 8 trials, 16 CPUs split evenly among them
        ((16, 2), (8, 1), {"resources": TrialResources(gpus=0.25)}, (8, 2.0, 0.25, 2)),
        # the CPUs bind before the GPUs do
        ((3, 2), (3, 2), {"resources": TrialResources(cpus=1, gpus=0.25)}, (3, 1.0, 0.25, 1)),
        # auto: a GPU per trial where the cluster has GPUs
        ((16, 2), (8, 1), {}, (2, 8.0, 1.0, 8)),
        # workers given: an even share of the CPUs each; a fraction trains with 1 thread
        ((2, 0), (2, 0), {"workers": 2}, (2, 1.0, 0.0, 1)),
        ((2, 0), (2, 0), {"workers": 4, "resources": TrialResources(cpus=0.5)}, (4, 0.5, 0.0, 1)),
        ((16, 0), (16, 0), {"workers": 3, "threads": 2}, (3, 2.0, 0.0, 2)),
    ],
)
def test_trials_per_cluster_and_what_each_reserves(offered, node, kwargs, expected) -> None:
    from autoprune.executors import plan_trials

    args = {"workers": None, "threads": None, "resources": TrialResources(), **kwargs}
    plan = plan_trials(*offered, node, **args)
    assert (plan.workers, plan.cpus, plan.gpus, plan.threads) == expected


@pytest.mark.parametrize(
    ("offered", "node", "resources", "message"),
    [
        ((8, 0), (8, 0), TrialResources(gpus=1), "offers 8 CPUs and 0 GPUs"),
        ((8, 0), (4, 0), TrialResources(cpus=6), "largest node of the Ray cluster has 4 CPUs"),
        ((8, 2), (8, 1), TrialResources(gpus=2), "largest node of the Ray cluster has 8 CPUs and 1 GPUs"),
        ((8, 0), (8, 0), TrialResources(cpus=1.5), "a fraction below 1 or a whole number"),
        ((8, 0), (8, 0), TrialResources(cpus=0), "--trial-cpus must be > 0"),
        ((8, 0), (8, 0), TrialResources(gpus=-1), "--trial-gpus must be >= 0"),
        ((0.5, 0), (0.5, 0), TrialResources(), "not enough for one trial of 1 CPUs"),
    ],
)
def test_a_request_no_node_can_hold_is_a_one_line_error(offered, node, resources, message) -> None:
    from autoprune.executors import plan_trials

    with pytest.raises(UserError, match=message) as caught:
        plan_trials(*offered, node, workers=None, threads=None, resources=resources)
    assert "\n" not in str(caught.value)


def test_trial_gpus_default_from_the_devices() -> None:
    from autoprune.executors import default_trial_resources

    assert default_trial_resources(None, None, "cuda").gpus == 1.0
    assert default_trial_resources(None, None, "cpu", "cuda:0").gpus == 1.0  # reads latency on the GPU
    assert default_trial_resources(None, None, "cpu").gpus == 0.0
    assert default_trial_resources(None, None, "auto").gpus is None  # 1 where the cluster has GPUs
    assert default_trial_resources(0.5, 0.25, "cpu") == TrialResources(0.5, 0.25)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"executor": "processes", "trial_cpus": 1.0}, "'trial_cpus' is what Ray reserves per trial"),
        ({"executor": "ray", "trial_cpus": 1.5}, "'trial_cpus' 1.5: Ray reserves a fraction below 1"),
        ({"executor": "ray", "trial_gpus": 0.5, "device": "cpu"}, "reserves GPUs for trials that train"),
        ({"executor": "ray", "trial_cpus": 0.0}, "'trial_cpus' must be a number > 0"),
    ],
)
def test_bad_trial_resources_are_refused_by_the_settings(values: dict, message: str) -> None:
    from autoprune.settings import SearchSettings

    with pytest.raises(UserError, match=message) as caught:
        SearchSettings(**values)
    assert "\n" not in str(caught.value)


@pytest.mark.ray
def test_ray_tasks_reserve_the_requested_fraction_and_threads_follow(tmp_path) -> None:
    pytest.importorskip("ray")
    executor = RayExecutor(workers=4, resources=TrialResources(cpus=0.5))
    try:
        assert executor.capacity == 4 and executor.threads_per_worker == 1
        assert "each reserves 0.5 CPUs and 0 GPUs" in executor.describe()
        assert executor.submit(jobs.assigned_resources).result(timeout=TIMEOUT) == {"CPU": 0.5}
        assert executor.submit(jobs.thread_count).result(timeout=TIMEOUT) == 1
        # four half-CPU trials run at once on this machine's cores
        futures = [executor.submit(jobs.rendezvous, str(tmp_path), f"job{i}", 4) for i in range(4)]
        assert all(f.result(timeout=TIMEOUT)[1] for f in futures)
    finally:
        executor.shutdown(cancel=True)


def test_the_final_fine_tune_gets_the_threads_of_every_worker(tmp_path):
    """Two process workers of one thread each search; the final fine-tune runs alone afterwards
    and trains with both threads (the second core would otherwise idle through it)."""
    import optuna

    from autoprune.cli import main

    run = tmp_path / "run"
    code = main(["search", "--target", "macs", "--budget", "0.6", "--model", "resnet20:width=4", "--image-size", "16",
                 "--dense-epochs", "1", "--trials", "2", "--fidelity", "kd:2", "--final-steps", "2",
                 "--searcher", "random", "--seed", "0", "--executor", "processes", "--workers", "2",
                 "--threads", "1", "--run-dir", str(run), "--cache-dir", str(tmp_path / "cache")])
    assert code == 0
    trials = optuna.load_study(study_name="run", storage=f"sqlite:///{run / 'study.db'}").get_trials()
    threads = {t.user_attrs.get("fidelity"): t.user_attrs.get("threads") for t in trials if t.state.name == "COMPLETE"}
    assert threads == {"kd:2": 1.0, "final": float(min(2, os.cpu_count() or 1))}
