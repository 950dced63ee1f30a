"""Short fine-tune of a slimmed student with knowledge distillation from the dense teacher.

Logit distillation (Hinton et al.): ``alpha * T^2 * KL(student/T || teacher/T) + (1 - alpha) * CE``.
Optional inner distillation (Aflalo et al., knapsack pruning): after every block, add
``feature_weight * mean((proj(student) - teacher)^2)`` through a learned 1x1 projection where the
student is narrower than the teacher.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from autoprune import meter


@dataclass(frozen=True)
class DistillConfig:
    """Fine-tune settings for every distillation fidelity.

    Attributes:
        lr: initial SGD learning rate (cosine-annealed to zero over the steps).
        batch_size: training batch size.
        temperature: softening temperature of the logits.
        alpha: weight of the distillation term against plain cross-entropy.
        feature_weight: weight of inner (feature) distillation; 0 turns it off.
        weight_decay, momentum: SGD settings.
    """

    lr: float = 0.01
    batch_size: int = 64
    temperature: float = 4.0
    alpha: float = 0.9
    feature_weight: float = 0.0
    weight_decay: float = 5e-4
    momentum: float = 0.9


def block_names(model: nn.Module) -> list[str]:
    """Where inner distillation taps features: the children of every top-level Sequential."""
    names = []
    for name, child in model.named_children():
        if isinstance(child, nn.Sequential):
            names.extend(f"{name}.{sub}" for sub, _ in child.named_children())
    return names


class _FeatureTaps:
    """Forward hooks that keep the latest output of named modules."""

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        modules = dict(model.named_modules())
        self.outputs: dict[str, torch.Tensor] = {}
        self.handles = [modules[n].register_forward_hook(self._keep(n)) for n in names]

    def _keep(self, name: str):
        def hook(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
            self.outputs[name] = output

        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def distill(
    student: nn.Module,
    teacher: nn.Module,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    steps: int,
    config: DistillConfig,
) -> dict[str, float]:
    """Fine-tune ``student`` in place for ``steps`` batches; returns the mean loss of the last 10%."""
    if steps <= 0:
        return {}
    from autoprune.device import autocast

    device = next(student.parameters()).device
    teacher.eval()
    student.train()
    use_features = config.feature_weight > 0
    names = block_names(teacher) if use_features else []
    t_taps = _FeatureTaps(teacher, names) if names else None
    s_taps = _FeatureTaps(student, names) if names else None
    projections = nn.ModuleDict()
    if s_taps is not None and t_taps is not None:
        _make_projections(student, teacher, batches, s_taps, t_taps, projections)
    params = list(student.parameters()) + list(projections.parameters())
    optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay, nesterov=True)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    tail: list[float] = []
    t = config.temperature
    try:
        for step in range(steps):
            with meter.step(device):  # a latency reading on this device waits for the step, not the fine-tune
                x, y = next(batches)  # augmenting the batch is work on the CPU too
                with autocast(device):  # bfloat16 forward passes on CUDA; nothing changes on the CPU
                    with torch.no_grad():
                        t_logits = teacher(x)
                    s_logits = student(x)
                s_logits, t_logits = s_logits.float(), t_logits.float()  # the losses in float32
                kd = F.kl_div(F.log_softmax(s_logits / t, 1), F.softmax(t_logits / t, 1), reduction="batchmean") * t * t
                loss = config.alpha * kd + (1 - config.alpha) * F.cross_entropy(s_logits, y)
                if s_taps is not None and t_taps is not None:
                    loss = loss + config.feature_weight * _feature_loss(s_taps, t_taps, projections)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                if step >= steps - max(1, steps // 10):
                    tail.append(loss.item())
    finally:
        for taps in (s_taps, t_taps):
            if taps is not None:
                taps.remove()
    student.eval()
    return {"train_loss": sum(tail) / len(tail)}


def _make_projections(
    student: nn.Module,
    teacher: nn.Module,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    s_taps: _FeatureTaps,
    t_taps: _FeatureTaps,
    projections: nn.ModuleDict,
) -> None:
    """One probe forward to learn feature widths; a 1x1 projection wherever they differ."""
    x, _ = next(batches)
    with torch.no_grad():
        teacher(x)
        student(x)
    for name, t_out in t_taps.outputs.items():
        s_out = s_taps.outputs.get(name)
        if s_out is not None and s_out.dim() == 4 and s_out.shape[1] != t_out.shape[1]:
            projections[name.replace(".", "_")] = nn.Conv2d(s_out.shape[1], t_out.shape[1], 1, bias=False).to(s_out.device)


def _feature_loss(s_taps: _FeatureTaps, t_taps: _FeatureTaps, projections: nn.ModuleDict) -> torch.Tensor:
    total = torch.zeros((), device=next(iter(t_taps.outputs.values())).device) if t_taps.outputs else torch.zeros(())
    for name, t_out in t_taps.outputs.items():
        s_out = s_taps.outputs.get(name)
        if s_out is None or s_out.dim() != 4 or s_out.shape[2:] != t_out.shape[2:]:
            continue
        key = name.replace(".", "_")
        s_out = s_out.float()  # bfloat16 under CUDA autocast; the projection and the loss in float32
        if key in projections:
            s_out = projections[key](s_out)
        if s_out.shape == t_out.shape:
            total = total + F.mse_loss(s_out, t_out.detach().float())
    return total
