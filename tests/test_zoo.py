"""Contract over a zoo of architectures: every one is slimmed correctly, or refused / has slots
frozen with a clear message.

For each architecture: build the space, apply seeded random policies, run the slimmed network,
check every slot's kept width and the MACs the policy asks for, save and load with identical
outputs, and compare its output with an independent exact reference: the dense network in which
every removed channel is made to output exactly 0 (its producers' weight rows and biases zeroed,
BatchNorm beta and running mean zeroed, each LayerNorm computed over the kept channels alone), so
the layers that read it get nothing from it. Slots whose channels pass GroupNorm or attention
heads have no such reference: those are pruned in a policy of their own, checked for everything
but exactness. The torchvision zoo is ``slow``:
``OMP_NUM_THREADS=1 pytest -m slow -s tests/test_zoo.py`` prints one ``ZOO`` line per architecture.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from autoprune.costs.analytic import count_macs_params
from autoprune.errors import UserError
from autoprune.graph import build_graph, is_depthwise, root_group
from autoprune.prune import apply_policy, kept_widths, load_slimmed, save_slimmed
from autoprune.rules import SpaceRules
from autoprune.space import SearchSpace

# -- small custom networks ----------------------------------------------------------------------


def _cbr(cin: int, cout: int, k: int = 3, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class ConcatNet(nn.Module):
    """Two branches concatenated along channels, then a conv that reads both."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = _cbr(3, 12)
        self.a, self.b = _cbr(12, 8), _cbr(12, 16, k=1)
        self.mix = _cbr(24, 16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.mix(torch.cat([self.a(x), self.b(x)], dim=1))
        return self.fc(x.mean((2, 3)))


class GroupedNet(nn.Module):
    """Grouped convs (1 < groups < channels) with equal and unequal in/out widths, a residual."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = _cbr(3, 16)
        self.g1 = _cbr(16, 32, groups=4)
        self.g2 = _cbr(32, 32, groups=8)
        self.g3 = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1, groups=2, bias=True), nn.BatchNorm2d(32))
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.g1(self.stem(x))
        x = F.relu(x + self.g3(self.g2(x)))
        return self.fc(x.mean((2, 3)))


class ShuffleNet(nn.Module):
    """A channel shuffle (view, transpose, view) between grouped convs, as in ShuffleNet."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = _cbr(3, 16)
        self.g1 = _cbr(16, 16, k=1, groups=4)
        self.g2 = _cbr(16, 24, k=1, groups=4)
        self.fc = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.g1(self.stem(x))
        b, c, h, w = x.shape
        x = x.view(b, 4, c // 4, h, w).transpose(1, 2).contiguous().view(b, c, h, w)
        return self.fc(self.g2(x).mean((2, 3)))


class SeparableSENet(nn.Module):
    """Depthwise-separable blocks with squeeze-excitation, and a depthwise conv with a channel
    multiplier (groups == in_channels < out_channels)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = _cbr(3, 16)
        self.dw = _cbr(16, 16, groups=16)
        self.pw = _cbr(16, 24, k=1)
        self.se_reduce, self.se_expand = nn.Conv2d(24, 8, 1), nn.Conv2d(8, 24, 1)
        self.mult = _cbr(24, 48, groups=24)
        self.fc = nn.Linear(48, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pw(self.dw(self.stem(x)))
        s = torch.sigmoid(self.se_expand(F.relu(self.se_reduce(x.mean((2, 3), keepdim=True)))))
        return self.fc(self.mult(x * s).mean((2, 3)))


class AttentionNet(nn.Module):
    """A conv stem, then multi-head self-attention over the spatial tokens and an MLP."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = _cbr(3, 32)
        self.attn = nn.MultiheadAttention(32, num_heads=4, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 32))
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.stem(x).flatten(2).transpose(1, 2)
        t = t + self.attn(t, t, t, need_weights=False)[0]
        t = t + self.mlp(t)
        return self.fc(t.mean(1))


class NormScaleNet(nn.Module):
    """ConvNeXt-style: a channel LayerNorm (NHWC), an MLP, a layer-scale parameter, a residual."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.norm = nn.LayerNorm(16)
        self.mlp = nn.Sequential(nn.Linear(16, 48), nn.GELU(), nn.Linear(48, 16))
        self.scale = nn.Parameter(torch.rand(16) + 0.5)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = self.mlp(self.norm(self.dw(x).permute(0, 2, 3, 1))) * self.scale
        return self.fc((x + y.permute(0, 3, 1, 2)).mean((2, 3)))


def tiny_shufflenet_v2() -> nn.Module:
    """torchvision's ShuffleNetV2 (channel split, concat and shuffle) at a few channels."""
    import torchvision

    return torchvision.models.ShuffleNetV2([2, 1, 1], [8, 16, 32, 64, 128], num_classes=10)


CUSTOM = {"shufflenet_v2_tiny": tiny_shufflenet_v2, "norm_scale": NormScaleNet, "concat": ConcatNet, "grouped": GroupedNet, "shuffle": ShuffleNet, "separable_se": SeparableSENet, "attention": AttentionNet}

# -- the independent reference ------------------------------------------------------------------

# Layers through which a removed channel that is exactly 0 stays 0, or is read by weights only;
# LayerNorm is replaced in the reference by a LayerNorm over the kept channels alone.
_SEPARABLE = (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.BatchNorm1d, nn.PReLU, nn.Parameter)


def _channel_mixing(graph, group) -> str | None:
    """A layer in the group whose output for a kept channel depends on removed ones in a way the
    reference does not reproduce (GroupNorm, attention heads, other layers); else None."""
    import torch_pruning as tp

    for item in group.items:
        module = item.dep.target.module
        kind = tp.ops.module2type(module)
        if isinstance(module, _SEPARABLE) or kind in (tp.ops.OPTYPE.CONCAT, tp.ops.OPTYPE.SPLIT, tp.ops.OPTYPE.ELEMENTWISE, tp.ops.OPTYPE.RESHAPE, tp.ops.OPTYPE.SLICE):
            continue
        if isinstance(module, nn.LayerNorm) and len(module.normalized_shape) == 1:
            continue
        return type(module).__name__
    return None


def _silence(module: nn.Module | nn.Parameter, idx: torch.Tensor, param_dims: dict[int, int], undo: list) -> None:
    """Make output channels ``idx`` of ``module`` exactly 0 whatever its input; what they held
    goes to ``undo`` (a copy of those slices only: the dense model is not copied whole)."""
    if isinstance(module, nn.Parameter):
        tensors = [(module.data, param_dims[id(module)])]
    elif isinstance(module, (nn.Conv2d, nn.Linear)):
        tensors = [(module.weight.data, 0)] + ([(module.bias.data, 0)] if module.bias is not None else [])
    elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)):  # (0 - 0) / sqrt(var + eps) * gamma + 0 == 0
        tensors = [(module.bias.data, 0), (module.running_mean, 0)]
    else:
        return
    for t, dim in tensors:
        undo.append((t, dim, idx, t.index_select(dim, idx).clone()))
        t.index_fill_(dim, idx, 0.0)


def _layer_norm_over_kept(removed: torch.Tensor):
    """A forward hook: the LayerNorm's output as if the removed channels did not exist (0 there)."""

    def hook(m: nn.LayerNorm, inputs: tuple, out: torch.Tensor) -> torch.Tensor:
        x = inputs[0]
        dim = 1 if type(m).__name__ == "LayerNorm2d" else x.dim() - 1  # torchvision's is NCHW
        keep = torch.tensor(sorted(set(range(x.shape[dim])) - set(removed.tolist())), dtype=torch.long)
        w = m.weight[keep] if m.weight is not None else None
        b = m.bias[keep] if m.bias is not None else None
        y = F.layer_norm(x.index_select(dim, keep).movedim(dim, -1), (len(keep),), w, b, m.eps).movedim(-1, dim)
        return torch.zeros_like(out).index_copy_(dim, keep, y)

    return hook


def zeroed_output(graph, history: list, x: torch.Tensor) -> torch.Tensor:
    """Output of ``graph.model`` (the dense model) with every channel the history removed made to
    output exactly 0; its weights are restored afterwards."""
    ref = graph.model.eval()
    modules = dict(ref.named_modules())
    param_dims = {id(u.parameters): u.pruning_dim for u in graph.unwrapped_parameters}
    hooks, undo = [], []
    try:
        with torch.no_grad():
            for name, is_out, idxs in history:
                assert is_out, "autoprune only prunes output channels of slot roots"
                for item in root_group(graph, modules[name], list(idxs)).items:
                    target = item.dep.target.module
                    idx = torch.tensor([int(i) for i in item.idxs], dtype=torch.long)
                    if isinstance(target, nn.LayerNorm):
                        hooks.append(target.register_forward_hook(_layer_norm_over_kept(idx)))
                    elif graph.is_out_channel_pruning_fn(item.dep.handler):
                        _silence(target, idx, param_dims, undo)
            return ref(x)
    finally:
        for h in hooks:
            h.remove()
        with torch.no_grad():
            for t, dim, idx, old in reversed(undo):
                t.index_copy_(dim, idx, old)


# -- MACs the policy asks for -------------------------------------------------------------------


def layer_macs(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    """MACs of every conv and linear layer on ``x``, counted from their shapes."""
    out: dict[str, int] = {}
    names = {m: n for n, m in model.named_modules()}

    def hook(m: nn.Module, _inp: tuple, y: torch.Tensor) -> None:
        if isinstance(m, nn.Conv2d):
            per = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
        else:
            per = m.in_features
        out[names[m]] = out.get(names[m], 0) + y.numel() * per

    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model.eval()(x)
    for h in hs:
        h.remove()
    return out


def asked_macs(graph, space: SearchSpace, policy, dense_macs: dict[str, int]) -> int:
    """Conv/linear MACs of the dense network (``graph.model``) scaled by the fraction of each
    layer's input and output channels the policy keeps (a depthwise conv scales with its outputs)."""
    modules = dict(graph.model.named_modules())
    names = {m: n for n, m in modules.items()}
    removed: dict[tuple[str, bool], float] = {}
    kept = space.kept_widths(policy)
    for slot in space.slots:
        group = root_group(graph, modules[slot.name], list(range(slot.channels)))
        for item in group.items:
            m = item.dep.target.module
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                key = (names[m], graph.is_out_channel_pruning_fn(item.dep.handler))
                removed[key] = removed.get(key, 0.0) + (slot.channels - kept[slot.name]) * len(item.idxs) / slot.channels
    total = 0.0
    for name, macs in dense_macs.items():
        m = modules[name]
        n_in, n_out = (m.in_channels, m.out_channels) if isinstance(m, nn.Conv2d) else (m.in_features, m.out_features)
        f_out = 1 - removed.get((name, True), 0.0) / n_out
        f_in = 1.0 if is_depthwise(m) else 1 - removed.get((name, False), 0.0) / n_in
        total += macs * f_in * f_out
    return round(total)


# -- the contract -------------------------------------------------------------------------------


@dataclass
class Outcome:
    slots: int
    frozen: dict[str, str]
    exact_slots: int

    def describe(self) -> str:
        frozen = f", {len(self.frozen)} frozen ({'; '.join(f'{k}: {v}' for k, v in self.frozen.items())})" if self.frozen else ""
        return f"pass: {self.slots} slots, {self.exact_slots} checked against the exact reference{frozen}"


def randomize_bn(model: nn.Module, seed: int) -> nn.Module:
    """Non-trivial BN statistics and affine terms, so a removed channel's BN bias matters."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            if m.affine:
                m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.data.copy_(torch.randn(n, generator=g) * 0.2)
    return model.eval()


def check_contract(model: nn.Module, x: torch.Tensor, tmp_path, rules: SpaceRules | None = None, seeds: int = 2) -> Outcome:
    """Every check of the module docstring on one architecture; raises on any failure."""
    model = randomize_bn(model, 0)
    rules = rules or SpaceRules(round_to=1, ratios=(0.0, 0.25, 0.5, 0.75))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        space = SearchSpace.from_model(model, x, rules)
    graph = build_graph(model, x)  # the dense model itself: the reference restores what it zeroes
    modules = dict(graph.model.named_modules())
    mixing = {s.name for s in space.slots if _channel_mixing(graph, root_group(graph, modules[s.name], list(range(s.channels))))}
    probe = torch.randn(2, *x.shape[1:], generator=torch.Generator().manual_seed(1))
    dense_out = model(probe)
    dense_layers = layer_macs(model, x)
    dense_macs, _ = count_macs_params(model, tuple(x.shape[1:]))
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        full = space.sample(rng)
        exact = space.policy({**{v.name: 0.0 for v in space.variables}, **{k: r for k, r in full.as_dict().items() if k not in mixing}})
        for policy, check_exact in ((exact, True), (full, False)):
            if not check_exact and not mixing:
                continue
            slim, history = apply_policy(model, space, policy, x)
            slim.eval()
            assert kept_widths(slim, space) == space.kept_widths(policy)
            with torch.no_grad():
                out = slim(probe)
            assert out.shape == dense_out.shape and torch.isfinite(out).all()
            assert sum(layer_macs(slim, x).values()) == asked_macs(graph, space, policy, dense_layers)
            measured, _ = count_macs_params(slim, tuple(x.shape[1:]))
            assert measured <= dense_macs
            if check_exact:
                ref = zeroed_output(graph, history, probe)
                scale = float(ref.abs().max()) + 1e-6
                torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4 * scale)
            path = tmp_path / f"slim{seed}{int(check_exact)}.pt"
            save_slimmed(path, slim, history, fingerprint=space.fingerprint, input_shape=tuple(x.shape[1:]))
            with torch.no_grad():
                torch.testing.assert_close(load_slimmed(path, model).eval()(probe), out, rtol=0, atol=0)
            path.unlink()
            del slim  # before the next policy's copy: the largest members need every GB
    torch.testing.assert_close(model(probe), dense_out, rtol=0, atol=0)  # the reference restored all it zeroed
    return Outcome(len(space.slots), space.frozen_reasons, len(space.slots) - len(mixing))


def outcome_of(model: nn.Module, x: torch.Tensor, tmp_path, seeds: int = 2) -> str:
    """'pass ...' or 'refused: <message>' (a UserError's one-line message)."""
    try:
        return check_contract(model, x, tmp_path, seeds=seeds).describe()
    except UserError as exc:
        message = str(exc)
        assert message and "\n" not in message and "Traceback" not in message
        return f"refused: {message}"


@pytest.mark.parametrize("name", sorted(CUSTOM))
def test_custom_zoo(name, tmp_path):
    torch.manual_seed(0)
    outcome = outcome_of(CUSTOM[name]().eval(), torch.randn(1, 3, 16, 16), tmp_path)
    print(f"ZOO {name}: {outcome}")
    assert outcome.startswith("pass")  # prunable, not refused; the shuffled channels frozen, the rest pruned
    assert name not in ("shuffle", "shufflenet_v2_tiny") or ("frozen" in outcome and "reshape" in outcome)


# -- torchvision --------------------------------------------------------------------------------

# Smallest inputs each architecture accepts (64 px elsewhere); ViTs are built for that size.
_SIZE = {"inception_v3": 80, "maxvit_t": 224, "vit_h_14": 56}
_FAST = ("regnet_x_400mf",)  # the grouped-conv crash of issue 19, in the default suite


def _torchvision_names() -> list[str]:
    try:
        import torchvision
    except ImportError:
        return []
    return torchvision.models.list_models(module=torchvision.models)


def _torchvision_case(name: str) -> tuple[nn.Module, torch.Tensor]:
    import torchvision

    size = _SIZE.get(name, 32 if name in _FAST else 64)
    kwargs = {"image_size": size} if name.startswith("vit_") else {"input_size": (size, size)} if name == "maxvit_t" else {}
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None, num_classes=10, **kwargs).eval()
    return model, torch.randn(1, 3, size, size)


@pytest.mark.parametrize("name", [pytest.param(n, marks=() if n in _FAST else pytest.mark.slow) for n in _torchvision_names()])
def test_torchvision_zoo(name, tmp_path):
    model, x = _torchvision_case(name)
    outcome = outcome_of(model, x, tmp_path, seeds=2 if name in _FAST else 1)
    print(f"ZOO torchvision:{name}: {outcome}")
    if name in _FAST:
        assert outcome.startswith("pass")
