"""``--device`` and ``--latency-device``: validated before any work; on CUDA (tests marked
``gpu``) a search trains there, reads latency there with synchronisation, and exports a model that
runs on the CPU."""

from __future__ import annotations

import json

import pytest
import torch

from autoprune.cli import main
from autoprune.costs import CostSettings
from autoprune.device import resolve, spec_problem
from autoprune.errors import UserError

TINY = ["--model", "resnet20:width=4", "--image-size", "16", "--dense-epochs", "2", "--trials", "3",
        "--fidelity", "kd:20", "--final-steps", "20", "--latency-batch", "2", "--seed", "1"]
NO_CUDA = not torch.cuda.is_available()


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "cpu:0", "CUDA"])
def test_an_unknown_device_is_refused_in_one_line(spec):
    assert "unknown device" in spec_problem(spec)
    with pytest.raises(UserError, match="unknown device"):
        resolve(spec)


@pytest.mark.skipif(not NO_CUDA, reason="checks the refusal on a machine without CUDA")
def test_cuda_without_a_device_is_refused_before_any_work(tmp_path, capsys):
    assert resolve("auto") == torch.device("cpu")
    for flag in ("--device", "--latency-device"):
        code = main(["search", "--target", "macs", "--budget", "0.5", flag, "cuda", "--run-dir", str(tmp_path / "r")])
        err = capsys.readouterr().err
        assert code == 2 and "no CUDA device is visible" in err and "Traceback" not in err
        assert not (tmp_path / "r").exists()
    assert main(["search", "--latency-device", "auto", "--run-dir", str(tmp_path / "r")]) == 2
    assert "not auto" in capsys.readouterr().err


def test_the_latency_device_is_said_where_readings_are_described():
    assert CostSettings((3, 32, 32), device="cpu").describe().endswith("median of 30")
    assert CostSettings((3, 32, 32), device="cuda:0").describe().endswith("median of 30 on cuda:0")


@pytest.mark.gpu
def test_a_search_trains_on_cuda_and_reads_latency_there(tmp_path):
    from autoprune import load

    run = tmp_path / "run"
    code = main(["search", "--target", "latency", "--budget", "0.7", *TINY, "--device", "cuda", "--latency-device",
                 "cuda", "--run-dir", str(run), "--cache-dir", str(tmp_path / "cache")])
    assert code in (0, 3)  # 3: the export measured over budget (GPU latency of a tiny net is noisy)
    summary = json.loads((run / "summary.json").read_text())
    assert "on cuda" in summary["cost_settings"]
    assert summary["final"]["val_accuracy"] > 0.3  # trained, not at chance (0.1)
    model = load(run / "model.pt")  # written from the CPU: loads and runs there
    assert next(model.parameters()).device.type == "cpu"
    with torch.no_grad():
        assert model(torch.zeros(2, 1, 16, 16)).shape == (2, 10)


@pytest.mark.gpu
def test_cuda_fine_tunes_keep_the_teacher_and_data_on_the_device_once():
    from autoprune.device import on_device
    from autoprune.task import TaskRecipe, load_task

    task = load_task(TaskRecipe(model="resnet20:width=4", image_size=16, dense_epochs=1, seed=2))
    moved = on_device(task, torch.device("cuda"))
    assert moved is on_device(task, torch.device("cuda"))  # cached: moved once per worker
    assert moved.data.train.images.is_cuda and next(moved.model.parameters()).is_cuda
    assert next(task.model.parameters()).device.type == "cpu"  # the task itself stays on the CPU
