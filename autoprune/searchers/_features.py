"""EMO-PMS's default stage scorer: how well a pruned sub-network, briefly fitted, reproduces the
dense network's features from the dense features before it (the paper's cross-network feature
constraint), without a trial.

For one candidate (this sub-network pruned, every other slot dense) on a copy of the dense model:

1. *Where to compare.* The sub-network's modules are those pruning changes (a parameter or
   buffer changes shape). Its comparison points are the changed modules whose output keeps its
   dense shape: the layers that read pruned channels but write full ones (a block's second conv,
   the next stage's first conv and shortcut, the classifier). A stage that removes channels from
   its output is so compared *through the next layer*: the removed channels count by how much
   the dense next layer used them, which comparing the kept channels alone would miss (pruning
   a stage's output would look free) and zero-filling them would count by their raw energy. The
   points are fixed per sub-network, from its most pruned candidate, so every candidate is
   measured at the same places; everything upstream is untouched, so the sub-network reads the
   dense previous stage's features.
2. *Brief fit.* Adaptive BatchNorm (EagleEye) on the changed BN layers, then ``steps`` Adam steps
   on the changed modules' parameters minimising the relative squared error at the comparison
   points on half of ``images`` calibration images (the forward stops at the last point); the
   fitted state counts only if it lowers the error on the other half.
3. *Scores*, on the other half: ``feature``, that relative error (the sub-search's objective);
   ``impairment``, the KL divergence of the network's predictions from the dense ones with this
   fitted sub-network in place, which is on one scale for every stage (the merge adds it up).
"""

from __future__ import annotations

import copy
import gc
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from autoprune.errors import UserError
from autoprune.prune import apply_policy
from autoprune.searchers._base import SearchContext
from autoprune.searchers._stages import StageScore, SubNetwork
from autoprune.space import Policy


class _Stop(Exception):
    """Raised by a hook after the last comparison point: the rest of the forward is not needed."""


@dataclass
class _Reference:
    """One sub-network's comparison points and the dense model's values there."""

    points: list[str]  # module names, in execution order
    fit: torch.Tensor
    held: torch.Tensor
    dense_fit: list[torch.Tensor]
    dense_held: list[torch.Tensor]
    dense_logits: torch.Tensor  # on the held-out half
    dense_fit_logits: torch.Tensor


def _shapes(model: nn.Module) -> dict[str, tuple]:
    return {name: tuple(tuple(t.shape) for t in [*m.parameters(recurse=False), *m.buffers(recurse=False)])
            for name, m in model.named_modules()}


def _run(model: nn.Module, x: torch.Tensor, points: Sequence[str], stop: bool) -> tuple[list, torch.Tensor | None]:
    """The outputs at ``points`` (in the order given) and the logits (None when stopped early)."""
    modules = dict(model.named_modules())
    seen: dict[str, torch.Tensor] = {}
    last = points[-1] if points else None

    def hook(name):
        def capture(module, inputs, output):
            seen[name] = output
            if stop and name == last:
                raise _Stop
        return capture

    handles = [modules[name].register_forward_hook(hook(name)) for name in points]
    try:
        logits = model(x)
    except _Stop:
        logits = None
    finally:
        for h in handles:
            h.remove()
    return [seen[name] for name in points], logits


def _divergence(logits: torch.Tensor, dense_logits: torch.Tensor) -> torch.Tensor:
    """KL(dense || pruned) of the predicted class distributions, averaged over images."""
    return F.kl_div(F.log_softmax(logits, 1), F.log_softmax(dense_logits, 1), log_target=True, reduction="batchmean")


def _relative_error(outputs: Sequence[torch.Tensor], targets: Sequence[torch.Tensor]) -> torch.Tensor:
    errors = [(o - t).pow(2).sum() / t.pow(2).sum().clamp_min(1e-12) for o, t in zip(outputs, targets, strict=True)]
    return torch.stack(errors).mean()


class FeatureReconstruction:
    """The default EMO-PMS stage scorer (see the module docstring).

    Args:
        steps: Adam steps of the brief fit (0: adaptive BN only).
        images: calibration images, half to fit on and half to score on.
        lr: the fit's learning rate.
    """

    def __init__(self, steps: int = 3, images: int = 64, lr: float = 1e-3) -> None:
        if steps < 0 or images < 2 or not lr > 0:
            raise UserError(f"emo-pms feature scorer: needs steps >= 0, images >= 2 and lr > 0 "
                            f"(got steps={steps}, images={images}, lr={lr})")
        self.steps, self.images, self.lr = steps, images, lr
        self._references: dict[tuple, _Reference] = {}

    def __call__(self, ctx: SearchContext, subnet: SubNetwork, policies: Sequence[Policy]) -> list[StageScore]:
        if ctx.model is None or ctx.example_inputs is None or ctx.calibration is None:
            raise UserError("emo-pms's feature scorer needs the dense model and calibration images; "
                            "pass a stage scorer for problems without data")
        scores = [self.score(ctx, subnet, p) for p in policies]
        gc.collect()  # the candidates' dependency graphs, once per batch (``apply_policy(collect=False)``)
        return scores

    def _changed(self, ctx: SearchContext, model: nn.Module) -> set[str]:
        dense = _shapes(ctx.model)
        return {name for name, shapes in _shapes(model).items() if shapes and shapes != dense.get(name)}

    def reference(self, ctx: SearchContext, subnet: SubNetwork) -> _Reference:
        key = (id(ctx.model), subnet)
        if key in self._references:
            return self._references[key]
        space = ctx.space
        most = subnet.policy(space, space.upper_bounds()[list(subnet.variables)])
        pruned, _ = apply_policy(ctx.model, space, most, ctx.example_inputs)
        changed = self._changed(ctx, pruned)
        dense = copy.deepcopy(ctx.model).eval()
        names = list(dict(dense.named_modules()))
        with torch.no_grad():
            # execution order and output shapes of the changed modules, dense and pruned
            dense_out, _ = _run(dense, ctx.example_inputs, sorted(changed, key=names.index), stop=False)
            pruned_out, _ = _run(pruned.eval(), ctx.example_inputs, sorted(changed, key=names.index), stop=False)
        order = sorted(changed, key=names.index)
        points = [n for n, d, p in zip(order, dense_out, pruned_out, strict=True) if d.shape == p.shape]
        device = next(ctx.model.parameters()).device
        images = ctx.calibration(self.images).to(device)
        half = max(1, len(images) // 2)
        fit, held = images[:half], images[half:] if len(images) > half else images[:half]
        with torch.no_grad():
            dense_fit, fit_logits = _run(dense, fit, points, stop=False)
            dense_held, logits = _run(dense, held, points, stop=False)
        reference = _Reference(points, fit, held, dense_fit, dense_held, logits, fit_logits)
        self._references[key] = reference
        return reference

    def score(self, ctx: SearchContext, subnet: SubNetwork, policy: Policy) -> StageScore:
        ref = self.reference(ctx, subnet)
        if all(r == 0.0 for r in policy.as_dict().values()):
            return StageScore(0.0, 0.0)
        model, _ = apply_policy(ctx.model, ctx.space, policy, ctx.example_inputs, collect=False)
        changed = self._changed(ctx, model)
        modules = dict(model.named_modules())
        model.eval().requires_grad_(False)
        # adaptive BN on the changed BatchNorm layers: their inputs are no longer the dense ones
        norms = [modules[n] for n in changed if isinstance(modules[n], nn.modules.batchnorm._BatchNorm)]
        for bn in norms:
            bn.reset_running_stats()
            bn.momentum = None  # a cumulative average over the calibration pass
            bn.train()
        with torch.no_grad():
            _run(model, ref.fit, ref.points, stop=True)
        for bn in norms:
            bn.eval()
        before = self._held_out(model, ref)
        params = [p for n in sorted(changed) for p in modules[n].parameters(recurse=False)]
        if not params or not self.steps:
            return before
        for p in params:
            p.requires_grad_(True)
        optimizer = torch.optim.Adam(params, lr=self.lr)
        for _ in range(self.steps):
            optimizer.zero_grad(set_to_none=True)
            outputs, logits = _run(model, ref.fit, ref.points, stop=bool(ref.points))
            loss = _relative_error(outputs, ref.dense_fit) if ref.points else _divergence(logits, ref.dense_fit_logits)
            loss.backward()
            optimizer.step()
        after = self._held_out(model, ref)
        # Early stopping on the held-out half: a candidate already close to the dense features
        # can only lose from Adam's first steps, which move every parameter by about ``lr``.
        return after if after.feature <= before.feature else before

    @staticmethod
    def _held_out(model: nn.Module, ref: _Reference) -> StageScore:
        with torch.no_grad():
            outputs, logits = _run(model, ref.held, ref.points, stop=False)
            kl = max(0.0, float(_divergence(logits, ref.dense_logits)))
            feature = float(_relative_error(outputs, ref.dense_held)) if ref.points else kl
        return StageScore(feature, kl)
