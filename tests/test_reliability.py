"""Reliability: real searches killed at chosen moments then resumed, bad input refused in one line
before any work, hostile files never executed, and two searches sharing one storage.

The kills are real signals to a real ``autoprune search`` subprocess. To land them at an exact
moment (during a trial, between two trials, during the final fine-tune, before the export) the
subprocess runs this file as a script, which wraps the ledger's own calls to send the signal
there; the resumed run is a plain ``autoprune search --resume``.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

pytestmark = pytest.mark.reliability

TRIALS = 3
SEARCH = ["search", "--target", "macs", "--budget", "0.6", "--model", "resnet20:width=4", "--image-size", "16",
          "--dense-epochs", "2", "--trials", str(TRIALS), "--fidelity", "kd:20", "--final-steps", "20",
          "--latency-batch", "2", "--latency-repeats", "3", "--latency-warmup", "1", "--threads", "1",
          "--searcher", "random", "--seed", "3"]


# -- the kill driver (runs in the subprocess) ------------------------------------------------------
def _drive(kill: str, argv: list[str]) -> int:
    """Run the CLI in this process and signal it at the moment ``kill`` names:
    ``during:N`` SIGKILL 0.3 s into the N-th search trial; ``term:N`` the same with SIGTERM;
    ``between:N`` SIGKILL right after the N-th trial is recorded; ``final`` SIGKILL 0.3 s into the
    final fine-tune; ``export`` SIGKILL once the final trial is recorded, before policy.yaml;
    ``swallowed:N`` SIGTERM inside Torch-Pruning's tracing forward of the N-th trial, whose bare
    ``except:`` swallows the KeyboardInterrupt and runs the forward again."""
    import torch_pruning as tp

    from autoprune import cli, finalize
    from autoprune.study import Ledger

    what, _, n = kill.partition(":")
    seen = {"started": 0, "finished": 0}
    annotate, finish, save_policy = Ledger.annotate, Ledger.finish, finalize.save_policy

    def later(sig: int) -> None:
        threading.Timer(0.3, os.kill, (os.getpid(), sig)).start()

    def annotate_hook(self, number, **attrs):
        annotate(self, number, **attrs)
        if "parent_trial" in attrs:
            if what == "final":
                later(signal.SIGKILL)
            return
        seen["started"] += 1
        if what in ("during", "term") and seen["started"] == int(n):
            later(signal.SIGKILL if what == "during" else signal.SIGTERM)

    def finish_hook(self, number, metrics, **kw):
        finish(self, number, metrics, **kw)
        seen["finished"] += 1
        if what == "between" and seen["finished"] == int(n):
            os.kill(os.getpid(), signal.SIGKILL)

    def save_policy_hook(*args, **kw):
        if what == "export":
            os.kill(os.getpid(), signal.SIGKILL)
        return save_policy(*args, **kw)

    trace = tp.DependencyGraph._trace
    armed = {"tracing": False, "fired": False}

    def trace_hook(self, *args, **kw):
        armed["tracing"] = what == "swallowed" and seen["started"] == int(n)
        try:
            return trace(self, *args, **kw)
        finally:
            armed["tracing"] = False

    def forward_hook(module, inputs):
        if armed["tracing"] and not armed["fired"]:
            armed["fired"] = True
            os.kill(os.getpid(), signal.SIGTERM)  # the handler raises here, inside Torch-Pruning's try

    torch.nn.modules.module.register_module_forward_pre_hook(forward_hook)
    tp.DependencyGraph._trace = trace_hook
    Ledger.annotate, Ledger.finish, finalize.save_policy = annotate_hook, finish_hook, save_policy_hook
    return cli.main(argv)


def _write(storage: str, writer: int, count: int, go: Path) -> None:
    """One of two processes recording ``count`` trials in one study at once: each trial's value is
    a function of its params, so a trial that got another process's params is caught."""
    import time

    import numpy as np

    from autoprune.study import Ledger
    from autoprune.testing.toy import ToyProblem

    space = ToyProblem.make().space()
    ledger = Ledger.open(space, storage=storage, study_name="shared", resume=True)
    go.with_name(f"ready{writer}").touch()
    while not go.exists():
        time.sleep(0.01)
    rng = np.random.default_rng(writer)
    for i in range(count):
        policy = space.sample(rng)
        number = ledger.start(policy, searcher=f"writer{writer}", fidelity="kd:1")
        ledger.annotate(number, seed=i)
        ledger.finish(number, {"val_accuracy": _value(space.variable_values(policy))}, constraint=-1.0, rejected=False)


def _value(params: dict[str, float]) -> float:
    return sum((k + 1) * params[name] for k, name in enumerate(sorted(params))) / 100


if __name__ == "__main__":
    if sys.argv[1] == "--write":
        _write(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5]))
    else:
        raise SystemExit(_drive(sys.argv[1], sys.argv[2:]))


# -- helpers ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    """A cache holding the dense model every search here uses (trained once, 2 epochs)."""
    from autoprune.task import TaskRecipe, load_task

    where = str(tmp_path_factory.mktemp("cache"))
    load_task(TaskRecipe(model="resnet20:width=4", data="digits", image_size=16, seed=3, cache_dir=where, dense_epochs=2))
    return where


def _killed(argv: list[str], kill: str) -> int:
    """Run ``autoprune <argv>`` in a subprocess that signals itself at ``kill``; its exit status."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, __file__, kill, *argv], env=env, capture_output=True, text=True,
                          timeout=300).returncode


def _trials(run_dir: Path) -> dict[int, optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name=None, storage=f"sqlite:///{run_dir / 'study.db'}")  # the only study
    return {t.number: t for t in study.get_trials()}


def _record(t: optuna.trial.FrozenTrial) -> tuple:
    return t.state, t.values, t.params, t.user_attrs, t.datetime_complete


def _search_scored(trials) -> int:
    return sum(t.state == TrialState.COMPLETE and t.user_attrs["fidelity"] == "kd:20" for t in trials.values())


def _running(trials) -> list[int]:
    return [n for n, t in trials.items() if t.state == TrialState.RUNNING]


def _finals(trials, state: TrialState) -> int:
    return sum(t.state == state and t.user_attrs["fidelity"] == "final" for t in trials.values())


def _resume(run_dir: Path) -> int:
    from autoprune.cli import main

    return main(["search", "--run-dir", str(run_dir), "--resume"])


def _assert_kept(before, after) -> None:
    """Every trial that had finished before the kill is in the study unchanged."""
    for number, trial in before.items():
        if trial.state != TrialState.RUNNING:
            assert _record(after[number]) == _record(trial), number


def _assert_complete(run_dir: Path, after) -> None:
    assert _search_scored(after) == TRIALS  # exactly the budget the run was started with
    assert _finals(after, TrialState.COMPLETE) == 1
    assert not _running(after)
    for name in ("policy.yaml", "model.pt", "summary.json", "report.md"):
        assert (run_dir / name).is_file(), name
    assert json.loads((run_dir / "summary.json").read_text())["final"]["within_budget"]
    assert not list(run_dir.glob(".*.tmp")) and not list(run_dir.glob("*.tmp"))


# -- kills and resume -------------------------------------------------------------------------------
def test_a_signal_swallowed_by_a_dependency_still_stops_the_search(cache, tmp_path):
    """Torch-Pruning's tracing retries the forward on any exception, KeyboardInterrupt included: a
    SIGTERM landing there used to be lost, and the search ran to its end with exit status 0 (seen
    once in CI). It stops the search as any SIGTERM does: status 143, the trial failed."""
    run_dir = tmp_path / "run"
    assert _killed([*SEARCH, "--run-dir", str(run_dir), "--cache-dir", cache], "swallowed:1") == 128 + signal.SIGTERM
    trials = _trials(run_dir)
    assert [(t.state, t.user_attrs["error"]) for t in trials.values()] == [(TrialState.FAIL, "interrupted")]


def test_killed_at_each_moment_then_resumed(cache, tmp_path):
    """One search, stopped five times (SIGTERM during a trial, then SIGKILL during a trial, between
    trials, during the final fine-tune and before the export) and resumed after each: no finished
    trial is lost or changed, and it ends with exactly the trials it was asked for and one model."""
    run_dir = tmp_path / "run"
    resume = ["search", "--run-dir", str(run_dir), "--resume"]

    # 0. SIGTERM during the first trial is handled like Ctrl-C: the trial is failed, not left RUNNING
    assert _killed([*SEARCH, "--run-dir", str(run_dir), "--cache-dir", cache], "term:1") == 128 + signal.SIGTERM
    before = _trials(run_dir)
    assert [(t.state, t.user_attrs["error"]) for t in before.values()] == [(TrialState.FAIL, "interrupted")], "0: SIGTERM"

    # (a signal that a dependency swallows is the same case: see test_a_signal_swallowed_by_a_dependency)
    # 1. resumed, SIGKILLed during its second trial: that trial stays RUNNING in the study
    assert _killed(resume, "during:2") == -signal.SIGKILL
    after = _trials(run_dir)
    _assert_kept(before, after)
    running = _running(after)
    assert len(running) == 1 and _search_scored(after) == 1, "1: killed during a trial"

    # 2. resumed, killed right after its first trial is recorded: the dead run's trial is failed
    before = after
    assert _killed(resume, "between:1") == -signal.SIGKILL
    after = _trials(run_dir)
    _assert_kept(before, after)
    stale = after[running[0]]
    assert stale.state == TrialState.FAIL and "left running by a process that ended" in stale.user_attrs["error"]
    assert _search_scored(after) == 2 and not _running(after), "2: killed between trials"

    # 3. resumed, killed during the final fine-tune: the one missing trial was scored, no more
    before = after
    assert _killed(resume, "final") == -signal.SIGKILL
    after = _trials(run_dir)
    _assert_kept(before, after)
    assert _search_scored(after) == TRIALS and _finals(after, TrialState.RUNNING) == 1, "3: killed in the final"
    assert not (run_dir / "policy.yaml").exists() and len(after) == len(before) + 2

    # 4. resumed at the final step (no new search trial), killed once it is recorded, before the export
    before = after
    assert _killed(resume, "export") == -signal.SIGKILL
    after = _trials(run_dir)
    _assert_kept(before, after)
    assert len(after) == len(before) + 1 and _finals(after, TrialState.COMPLETE) == 1, "4: only the final again"
    assert _finals(after, TrialState.FAIL) == 1 and (run_dir / "model.pt").is_file()
    model = hashlib.sha256((run_dir / "model.pt").read_bytes()).hexdigest()

    # 5. resumed at the export: nothing is trained again, the files are written
    before = after
    assert _resume(run_dir) == 0
    after = _trials(run_dir)
    assert {n: _record(t) for n, t in after.items()} == {n: _record(t) for n, t in before.items()}
    assert hashlib.sha256((run_dir / "model.pt").read_bytes()).hexdigest() == model
    _assert_complete(run_dir, after)
    assert json.loads((run_dir / "summary.json").read_text())["scored"] == TRIALS


# -- bad input: one line, exit 2, before any work, nothing saved changed -------------------------------
@pytest.fixture(scope="module")
def finished(cache, tmp_path_factory) -> Path:
    """A finished run directory that every bad-input case points at, and must leave as it was."""
    from autoprune.cli import main

    run_dir = tmp_path_factory.mktemp("finished") / "run"
    tiny = [a if a not in ("kd:20", "20") else {"kd:20": "kd:3", "20": "3"}[a] for a in SEARCH]
    assert main([*tiny, "--trials", "2", "--run-dir", str(run_dir), "--cache-dir", cache]) == 0
    return run_dir


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


class _Payload:
    """Unpickling this runs ``touch <marker>``: a hostile file must be refused, never executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _corpus(tmp: Path, run_dir: Path) -> dict[str, tuple[list[str], str]]:
    """Case name -> (argv, what the one-line error must say). Files the cases need are made in ``tmp``."""
    def recipe(name: str, text: str) -> str:
        path = tmp / f"{name}.yaml"
        path.write_text(text)
        return str(path)

    marker = tmp / "EXECUTED"
    (tmp / "a_file").write_text("not a directory")
    (tmp / "out_dir").mkdir(exist_ok=True)
    torch.save(_Payload(marker), tmp / "payload.pt")  # torch.save pickles the object whole
    (tmp / "raw.pkl").write_bytes(pickle.dumps(_Payload(marker)))
    one_class = tmp / "one_class"
    for split in ("train", "test"):
        (one_class / split / "cat").mkdir(parents=True, exist_ok=True)
    resume = ["search", "--run-dir", str(run_dir), "--resume"]
    policy = str(run_dir / "policy.yaml")
    return {
        "recipe threads abc": (["search", "--study", recipe("t", "threads: abc\n")], "key 'threads' must be an integer >= 1"),
        "recipe time_limit soon": (["search", "--study", recipe("tl", "time_limit: soon\n")], "key 'time_limit' must be a number > 0"),
        "recipe dense_epochs ten": (["search", "--study", recipe("de", "dense_epochs: ten\n")], "key 'dense_epochs' must be an integer >= 1"),
        "recipe resume yes": (["search", "--study", recipe("r", "resume: 'yes'\n")], "key 'resume' must be true or false"),
        "recipe unknown key": (["search", "--study", recipe("u", "budgte: 0.5\n")], "unknown key 'budgte'"),
        "recipe python tag": (["search", "--study", recipe("py", f"model: !!python/object/apply:os.system ['touch {marker}']\n")], "not valid YAML"),
        "run-dir is a file": (["search", "--run-dir", str(tmp / "a_file")], "is an existing file, not a directory"),
        "run-dir under a file": (["search", "--run-dir", str(tmp / "a_file" / "run")], "is an existing file, not a directory"),
        "new search over a finished run": (["search", "--run-dir", str(run_dir)], "already exists"),
        "resume without a study": (["search", "--run-dir", str(tmp / "nothing_here"), "--resume"], "no study"),
        "resume with another budget": ([*resume, "--budget", "0.4"], "was started with budget '0.6'"),
        "lr -1": ([*resume, "--lr", "-1"], "--lr must be a number > 0"),
        "final-steps -5": ([*resume, "--final-steps", "-5"], "--final-steps must be an integer >= 0"),
        "threads 0": ([*resume, "--threads", "0"], "--threads must be an integer >= 1"),
        "threads -2": ([*resume, "--threads", "-2"], "--threads must be an integer >= 1"),
        "threads abc": ([*resume, "--threads", "abc"], "invalid int value: 'abc'"),
        "latency-batch 0": ([*resume, "--latency-batch", "0"], "--latency-batch must be an integer >= 1"),
        "trials 0": ([*resume, "--trials", "0"], "--trials must be an integer >= 1"),
        "workers 0": ([*resume, "--workers", "0"], "--workers must be an integer >= 1"),
        "time-limit 0": ([*resume, "--time-limit", "0"], "--time-limit must be a number > 0"),
        "image-size 2": ([*resume, "--image-size", "2"], "--image-size must be an integer >= 4"),
        "seed -1": ([*resume, "--seed", "-1"], "--seed must be an integer >= 0"),
        "feature-distill -1": ([*resume, "--feature-distill", "-1"], "--feature-distill must be a number >= 0"),
        "criterion typo": ([*resume, "--criterion", "magnitud"], "--criterion must be one of magnitude, taylor, bn"),
        "executor typo": ([*resume, "--executor", "thread"], "--executor must be one of inline, processes, ray"),
        "trial-cpus without ray": ([*resume, "--trial-cpus", "1"], "--trial-cpus is what Ray reserves per trial"),
        "trial-cpus 1.5": ([*resume, "--executor", "ray", "--trial-cpus", "1.5"], "Ray reserves a fraction below 1"),
        "trial-gpus on the cpu": ([*resume, "--executor", "ray", "--trial-gpus", "0.5", "--device", "cpu"],
                                  "reserves GPUs for trials that train and read latency on the CPU"),
        "garbage storage": (["search", "--run-dir", str(tmp / "s"), "--storage", "nosuchdb://x"], "cannot open Optuna storage"),
        "checkpoint payload (torch.save)": ([*SEARCH, "--run-dir", str(tmp / "c"), "--checkpoint", str(tmp / "payload.pt")], "holds pickled Python objects"),
        "checkpoint payload (raw pickle)": ([*SEARCH, "--run-dir", str(tmp / "c"), "--checkpoint", str(tmp / "raw.pkl")], "holds pickled Python objects"),
        "single-class image folder": ([*SEARCH, "--run-dir", str(tmp / "i"), "--data", f"imagefolder:{one_class}"], "needs at least two"),
        "apply --out is a directory": (["apply", "--policy", policy, "--out", str(tmp / "out_dir")], "is a directory"),
        "apply --out under a file": (["apply", "--policy", policy, "--out", str(tmp / "a_file" / "m.pt")], "is a file, not a directory"),
        "apply policy with a python tag": (["apply", "--policy", recipe("pol", f"format: !!python/object/apply:os.system ['touch {marker}']\n"),
                                            "--out", str(tmp / "m.pt")], "not valid YAML"),
    }


CASE_NAMES = [
    "recipe threads abc", "recipe time_limit soon", "recipe dense_epochs ten", "recipe resume yes", "recipe unknown key",
    "recipe python tag", "run-dir is a file", "run-dir under a file", "new search over a finished run",
    "resume without a study", "resume with another budget", "lr -1", "final-steps -5", "threads 0", "threads -2",
    "threads abc", "latency-batch 0", "trials 0", "workers 0", "time-limit 0", "image-size 2", "seed -1",
    "feature-distill -1", "criterion typo", "executor typo", "trial-cpus without ray", "trial-cpus 1.5",
    "trial-gpus on the cpu", "garbage storage", "checkpoint payload (torch.save)",
    "checkpoint payload (raw pickle)", "single-class image folder", "apply --out is a directory",
    "apply --out under a file", "apply policy with a python tag",
]


@pytest.mark.parametrize("case", CASE_NAMES)
def test_bad_input_is_one_line_exit_2_and_changes_nothing(case, finished, cache, tmp_path, capsys):
    from autoprune.cli import main

    argv, message = _corpus(tmp_path, finished)[case]
    if argv[0] == "search" and "--cache-dir" not in argv and "--resume" not in argv:
        argv = [*argv, "--cache-dir", cache]
    saved = _digest(finished)
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error:"), err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "EXECUTED").exists()  # no payload ran
    assert _digest(finished) == saved  # nothing already saved changed
    for fresh in ("c", "i", "s", "nothing_here"):
        assert not (tmp_path / fresh).exists()  # refused before anything was written


def test_the_mirrored_choices_match_their_registries():
    from autoprune.executors import EXECUTORS
    from autoprune.prune import CRITERIA
    from autoprune.settings import CHOICES

    assert CHOICES["executor"] == EXECUTORS and set(CHOICES["criterion"]) == set(CRITERIA)


def test_settings_refuse_bad_values_from_python_too():
    from autoprune.errors import UserError
    from autoprune.settings import SearchSettings

    with pytest.raises(UserError, match="'lr' must be a number > 0, got -1"):
        SearchSettings(lr=-1)
    assert SearchSettings(lr=1).lr == 1.0 and isinstance(SearchSettings(lr=1).lr, float)


def test_saved_settings_name_their_files_absolutely(tmp_path, monkeypatch):
    # settings.yaml is what --resume reads: a resume from another working directory must find the
    # checkpoint, data, space file and cache the run was started with (a latency table likewise)
    from autoprune.pipeline import portable_settings
    from autoprune.settings import SearchSettings

    monkeypatch.chdir(tmp_path)
    (tmp_path / "space.yaml").write_text("ratios: [0.0, 0.5]\n")
    (tmp_path / "w.pt").write_bytes(b"")  # settings check that the files exist, not what they hold
    given = SearchSettings(checkpoint="w.pt", data="imagefolder:imgs", space="space.yaml", cache_dir="c")
    saved = portable_settings(given)
    assert saved.checkpoint == str(tmp_path / "w.pt")
    assert saved.data == f"imagefolder:{tmp_path / 'imgs'}" and saved.space == str(tmp_path / "space.yaml")
    assert saved.cache_dir == str(tmp_path / "c")
    builtin = portable_settings(SearchSettings(space="cifar_resnet"))  # a name in search_spaces/ stays a name
    assert builtin.space == "cifar_resnet" and builtin.data == "digits" and builtin.checkpoint is None


# -- a search whose trials keep failing stops, with the error -----------------------------------------
BROKEN_NET = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, num_classes=10, in_channels=1):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1))
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x):
        if self.training and not torch.is_grad_enabled():
            raise RuntimeError("boom: this network cannot be recalibrated")
        return self.fc(self.features(x).flatten(1))


def build(num_classes=10, in_channels=1):
    return Net(num_classes, in_channels)
"""


def test_trials_failing_with_one_error_stop_the_search(cache, tmp_path, monkeypatch, capsys):
    from autoprune.cli import main

    (tmp_path / "brokennet.py").write_text(BROKEN_NET)
    monkeypatch.syspath_prepend(str(tmp_path))
    import brokennet

    torch.save(brokennet.build().state_dict(), tmp_path / "w.pt")
    run_dir = tmp_path / "run"
    argv = [*SEARCH, "--model", "brokennet:build", "--checkpoint", str(tmp_path / "w.pt"), "--trials", "5",
            "--val-limit", "100", "--run-dir", str(run_dir), "--cache-dir", cache]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "warning: the validation split has 100 images" in err  # data checked on load
    assert "3 trials in a row failed with RuntimeError: boom" in err and "Traceback" not in err
    trials = _trials(run_dir)
    assert [t.state for t in trials.values()] == [TrialState.FAIL] * 3  # stopped at 3, not 20 x --trials
    assert all("boom" in t.user_attrs["error"] for t in trials.values())
    assert not (run_dir / "policy.yaml").exists()


# -- two searches writing one storage at once ---------------------------------------------------------
@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_two_processes_sharing_one_storage_lose_no_trial(kind, tmp_path):
    from autoprune.study import Ledger
    from autoprune.testing.toy import ToyProblem

    storage = str(tmp_path / "shared.journal") if kind == "journal" else f"sqlite:///{tmp_path / 'shared.db'}"
    space = ToyProblem.make().space()
    Ledger.open(space, storage=storage, study_name="shared", resume=False)
    go, count = tmp_path / "go", 20
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    writers = [subprocess.Popen([sys.executable, __file__, "--write", storage, str(w), str(count), str(go)], env=env)
               for w in (1, 2)]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready{w}").exists() for w in (1, 2)):
        assert time.monotonic() < deadline and all(p.poll() is None for p in writers)
        time.sleep(0.05)
    go.touch()
    assert [p.wait(timeout=120) for p in writers] == [0, 0]

    ledger = Ledger.open(space, storage=storage, study_name="shared", resume=True)
    frozen = ledger.study.get_trials()
    assert sorted(t.number for t in frozen) == list(range(2 * count))  # none lost, no number twice
    assert all(t.state == TrialState.COMPLETE for t in frozen)
    records = {t.number: t for t in ledger.trials()}
    for t in frozen:  # each trial holds the params (and policy) its own writer recorded a value for
        assert t.value == pytest.approx(_value(t.params)), t.number
        assert space.variable_values(records[t.number].policy) == pytest.approx(t.params), t.number
    by_writer = {w: sorted(t.user_attrs["seed"] for t in frozen if t.user_attrs["searcher"] == f"writer{w}") for w in (1, 2)}
    assert by_writer == {1: list(range(count)), 2: list(range(count))}


def test_an_export_over_the_budget_is_an_exit_status_of_its_own(finished):
    from autoprune.errors import EXIT_OVER_BUDGET
    from autoprune.summary import over_budget

    summary = json.loads((finished / "summary.json").read_text())
    assert summary["final"]["within_budget"] and over_budget(summary) is None
    summary["final"].update(within_budget=False, verified_cost=summary["limit"] * 1.1)
    message = over_budget(summary)
    assert EXIT_OVER_BUDGET == 3 and "OVER the budget" in message and "exit status 3" in message


def test_data_of_one_class_is_refused(tmp_path):
    from PIL import Image

    from autoprune.data import load_data
    from autoprune.errors import UserError

    for split, cls in (("train", "a"), ("train", "a"), ("test", "a")):
        (tmp_path / split / cls).mkdir(parents=True, exist_ok=True)
    (tmp_path / "train" / "b").mkdir()  # a second class folder, but empty
    for i in range(3):
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(tmp_path / "train" / "a" / f"{i}.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "test" / "a" / "0.png")
    with pytest.raises(UserError, match="all of one class"):
        load_data(f"imagefolder:{tmp_path}", cache_dir=tmp_path / "cache", progress=False)


# -- workers killed mid-trial ---------------------------------------------------------------------------
class _Deadly:
    """Runs each trial through ``jobs.die_then_run``: the worker of trial N SIGKILLs itself on the
    first ``deaths[N]`` attempts (counted on disk, so the next worker knows), then scores it."""

    def __init__(self, inner, problem, marks: Path, deaths: dict[int, int]) -> None:
        self.inner, self.problem, self.marks, self.deaths = inner, problem, marks, deaths
        self.capacity = inner.capacity

    def submit(self, fn, recipe, request):
        from autoprune.testing import jobs

        deaths = self.deaths.get(request.number, 0)
        return self.inner.submit(jobs.die_then_run, str(self.marks), str(request.number), deaths,
                                 jobs.toy_trial, self.problem, request)


@pytest.mark.parametrize("kind", ["processes", pytest.param("ray", marks=pytest.mark.ray)])
def test_a_search_whose_workers_die_mid_trial_completes_and_loses_no_other_trial(kind, tmp_path):
    """Trial 1's worker dies on both attempts: failed, with the reason. Trial 2's dies once: run
    again and scored. Every other trial, running beside them on the other worker, is kept."""
    from autoprune.costs import CostSettings
    from autoprune.executors import ProcessExecutor, RayExecutor
    from autoprune.rules import SpaceRules
    from autoprune.runner import LoopConfig, run_loop
    from autoprune.searchers import make_searcher
    from autoprune.study import Ledger, to_trial
    from autoprune.testing.toy import ToyProblem
    from autoprune.trial import ScoringConfig, TrialRequest

    if kind == "ray":
        pytest.importorskip("ray")
    problem = ToyProblem.make()
    space = problem.space()
    ledger = Ledger.open(space, storage=str(tmp_path / "study.journal"), study_name="s", resume=False)
    searcher = make_searcher("random")
    searcher.setup(problem.context(0))
    template = TrialRequest(number=-1, policy=space.dense(), seed=0, fidelity="kd:1", target="macs",
                            limit=problem.budget, rules=SpaceRules(), cost=CostSettings((1, 8, 8)), scoring=ScoringConfig())
    inner = ProcessExecutor(workers=2) if kind == "processes" else RayExecutor(workers=2, threads_per_worker=1)
    try:
        result = run_loop(None, template, searcher, ledger, _Deadly(inner, problem, tmp_path / "marks", {1: 2, 2: 1}),
                          LoopConfig(trials=5, batch=2))
    finally:
        inner.shutdown(cancel=True)
    trials = {t.number: t for t in ledger.study.get_trials()}
    assert result.stopped == "trials" and sum(t.scored for t in result.trials) == 5
    failed = [n for n, t in trials.items() if t.state == TrialState.FAIL]
    assert failed == [1], "only the trial whose worker died twice may fail"
    attrs = trials[1].user_attrs
    assert attrs["reason"].startswith("failed: WorkerDied: the worker process running this trial died on each of 2")
    assert attrs["worker_retries"] == 1
    if kind == "processes":
        assert attrs["error"].count("killed by SIGKILL") == 2
    assert trials[2].state in (TrialState.COMPLETE, TrialState.PRUNED) and trials[2].user_attrs["worker_retries"] == 1
    assert trials[2].user_attrs["macs"] == pytest.approx(problem.cost(to_trial(trials[2], space.fingerprint).policy))
    assert all("worker_retries" not in t.user_attrs for n, t in trials.items() if n not in (1, 2))
    assert not any(t.state == TrialState.RUNNING for t in trials.values())
    assert len(list((tmp_path / "marks").glob("1.*"))) == 2 and len(list((tmp_path / "marks").glob("2.*"))) == 2


def test_resume_leaves_the_running_trials_of_a_live_search_alone(tmp_path):
    """A second search opening a shared study must not fail the trial a live search is running."""
    from autoprune.study import Ledger
    from autoprune.testing.toy import ToyProblem

    space = ToyProblem.make().space()
    storage = str(tmp_path / "shared.journal")
    live = Ledger.open(space, storage=storage, study_name="s", resume=False)
    number = live.start(space.dense(), searcher="random", fidelity="kd:1")
    other = Ledger.open(space, storage=storage, study_name="s", resume=True)
    assert other.stale == [] and other.study.trials[number].state == TrialState.RUNNING
    live.finish(number, {"val_accuracy": 0.5}, constraint=-0.1, rejected=False)
    assert other.study.get_trials()[number].state == TrialState.COMPLETE
