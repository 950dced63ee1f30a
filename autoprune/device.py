"""Where training runs: ``--device auto|cpu|cuda[:N]``, resolved and validated in this one place.

Dense training, every trial's fine-tune and evaluation, and the final fine-tune run on the training
device; pruning, MACs and parameter counts stay on the CPU (Torch-Pruning traces there), and
latency is read on the deploy device of ``CostSettings.device`` (``--latency-device``), which need
not be the same. A worker moves the task's dense model and data to the training device once
(``on_device``, cached per process) and each candidate there for its fine-tune, then back.

What the seed guarantees: on the CPU, the same seed gives bit-identical trials. On CUDA, the same
policies in the same order for a seeded searcher whose choices do not depend on accuracies' last
digits, and accuracies equal within run-to-run noise, not bit-exact: cuDNN picks kernels per
shape, and fine-tunes run in bfloat16 autocast (``autocast``), where BatchNorm and the losses stay
in float32.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Iterator
from typing import Any

import torch

from autoprune.errors import UserError

DEVICES = "auto, cpu, cuda or cuda:N"
_SPEC = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def spec_problem(spec: str) -> str:
    """What is wrong with a device spec ('' when nothing): for settings, before any work."""
    if not _SPEC.match(spec):
        return f"unknown device {spec!r}; use {DEVICES}"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            return f"device {spec!r}: no CUDA device is visible to torch here (torch {torch.__version__}); use cpu or auto"
        index = int(spec.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            return f"device {spec!r}: this machine has {torch.cuda.device_count()} CUDA device(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}"
    return ""


def resolve(spec: str) -> torch.device:
    """``auto``: the first CUDA device when one is visible, else the CPU; otherwise as given."""
    problem = spec_problem(spec)
    if problem:
        raise UserError(problem)
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


def synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work: a CUDA timing without it measures only the launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bfloat16 autocast on CUDA (no loss scaling needed), nothing on the CPU: CPU results stay
    bit-identical to a run without devices."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


_MOVED: dict[tuple[int, str], Any] = {}


def on_device(task: Any, device: torch.device) -> Any:
    """``task`` with its dense model and data on ``device``, built once per process and device."""
    if device.type == "cpu":
        return task
    key = (id(task), str(device))
    if key not in _MOVED:
        data = task.data
        splits = {name: dataclasses.replace(getattr(data, name), images=getattr(data, name).images.to(device),
                                            labels=getattr(data, name).labels.to(device))
                  for name in ("train", "val", "test")}
        import copy

        _MOVED[key] = dataclasses.replace(task, model=copy.deepcopy(task.model).to(device).eval(),
                                          data=dataclasses.replace(data, **splits))
    return _MOVED[key]


@contextlib.contextmanager
def placed(model: torch.nn.Module, device: torch.device) -> Iterator[torch.nn.Module]:
    """``model`` on ``device`` for a block, back on the CPU after it (to be measured and saved)."""
    model.to(device)
    try:
        yield model
    finally:
        model.to("cpu")
