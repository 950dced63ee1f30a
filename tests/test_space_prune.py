"""Search space from Torch-Pruning groups, physical pruning, save/load of slimmed models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from autoprune.errors import UserError
from autoprune.models.cifar_resnet import resnet20
from autoprune.prune import apply_policy, kept_widths, load_slimmed, save_slimmed
from autoprune.rules import SpaceRules, load_rules
from autoprune.space import Policy, SearchSpace


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    return resnet20(in_channels=1, width=8).eval()


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.randn(1, 1, 16, 16)


def test_slots_are_dependency_groups(model, x):
    space = SearchSpace.from_model(model, x, SpaceRules(round_to=2))
    assert len(space.slots) == 12  # resnet20 with 1x1 shortcuts: 12 groups
    assert space.slots[0].name == "conv1"  # in module order
    assert "fc" not in space.slot_names  # the classifier is never pruned
    assert {s.channels for s in space.slots} == {8, 16, 32}


def test_frozen_and_stage_granularity(model, x):
    rules = SpaceRules(frozen=("layer1.*",), granularity="stage")
    space = SearchSpace.from_model(model, x, rules)
    assert not any(n.startswith("layer1.") for n in space.slot_names)
    assert len(space.variables) < len(space.slots)
    policy = space.policy({v.name: 0.5 for v in space.variables})
    assert set(policy.as_dict()) == set(space.slot_names)


def test_encode_decode_roundtrip(model, x):
    space = SearchSpace.from_model(model, x)
    rng = np.random.default_rng(1)
    for _ in range(5):
        p = space.sample(rng)
        assert space.decode(space.encode(p)) == p


@pytest.mark.parametrize("criterion", ["magnitude", "taylor", "bn"])
def test_apply_removes_channels_and_saves(model, x, tmp_path, criterion):
    space = SearchSpace.from_model(model, x, SpaceRules(round_to=2))
    policy = space.uniform(0.5)
    batch = (torch.randn(4, 1, 16, 16), torch.randint(0, 10, (4,)))
    slim, history = apply_policy(model, space, policy, x, criterion=criterion, batch=batch)
    assert kept_widths(slim, space) == space.kept_widths(policy)
    assert sum(p.numel() for p in slim.parameters()) < sum(p.numel() for p in model.parameters())
    assert all(m.weight.shape[0] == 8 for n, m in model.named_modules() if n == "conv1")  # dense untouched
    path = tmp_path / "slim.pt"
    save_slimmed(path, slim, history, fingerprint=space.fingerprint, input_shape=(1, 16, 16))
    loaded = load_slimmed(path, model)
    inp = torch.randn(3, 1, 16, 16)
    torch.testing.assert_close(loaded(inp), slim.eval()(inp))


def test_policy_for_other_architecture_refused(model, x):
    space = SearchSpace.from_model(model, x)
    foreign = Policy.from_dict("0123456789abcdef", {"conv1": 0.5})
    with pytest.raises(UserError, match="another architecture"):
        apply_policy(model, space, foreign, x)


def test_load_refuses_garbage(tmp_path, model):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(UserError, match="not a readable"):
        load_slimmed(bad, model)


def test_kept_width_rounding():
    from autoprune.space import Slot

    s = Slot("a", 16, (0.0, 0.5, 0.8), round_to=4)
    assert [s.kept(r) for r in (0.0, 0.5, 0.8)] == [16, 8, 4]
    assert Slot("b", 6, (0.9,), round_to=8).kept(0.9) == 6  # never below one block nor above width


def test_rules_files_and_bad_keys(tmp_path):
    rules = load_rules("cifar_resnet")
    assert rules.round_to == 4 and rules.ratios[-1] == pytest.approx(0.8)
    bad = tmp_path / "bad.yaml"
    bad.write_text("ratios: [0.0, 0.5]\nround_too: 4\n")
    with pytest.raises(UserError, match="round_too"):
        load_rules(bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("ratios: [0.0, 0.5\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_rules(broken)
    with pytest.raises(UserError, match="does not exist"):
        load_rules(tmp_path / "missing.yaml")


def test_inner_rules_keep_every_residual_width(model, x):
    space = SearchSpace.from_model(model, x, load_rules("cifar_resnet_inner"))
    assert space.slot_names == tuple(f"layer{s}.{b}.conv1" for s in (1, 2, 3) for b in range(3))
    assert set(space.frozen) == {"conv1", "layer2.0.shortcut.0", "layer3.0.shortcut.0"}
    slim, _ = apply_policy(model, space, space.policy({v.name: 0.5 for v in space.variables}), x)
    convs = dict(slim.named_modules())
    blocks = [f"layer{s}.{b}" for s in (1, 2, 3) for b in range(3)]
    assert [convs[f"{b}.conv1"].out_channels for b in blocks] == [4] * 3 + [8] * 3 + [16] * 3
    assert [convs[f"{b}.conv2"].out_channels for b in blocks] == [8] * 3 + [16] * 3 + [32] * 3


def test_model_without_prunable_group():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    with pytest.raises(UserError, match="no prunable group"):
        SearchSpace.from_model(model, torch.randn(1, 4))


def test_grouped_slot_widths_are_multiples_of_the_groups():
    from autoprune.space import Slot

    s = Slot("g", 32, (0.0, 0.3, 0.5), round_to=1, groups=4)
    assert [s.kept(r) for r in (0.0, 0.3, 0.5)] == [32, 24, 16]
    assert Slot("g", 32, (0.3,), round_to=8, groups=4).kept(0.3) == 24  # lcm(8, 4) == 8
    assert Slot("g", 16, (0.5,), round_to=8, groups=16).kept(0.5) == 16  # one channel per group


class _GroupedBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 16, 3, padding=1)
        self.b = nn.Conv2d(16, 16, 3, padding=1, groups=4)
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.b(torch.relu(self.a(x))).mean((2, 3)))


def test_grouped_conv_pruned_by_positions_in_every_group():
    model, x = _GroupedBlock().eval(), torch.randn(1, 3, 8, 8)
    space = SearchSpace.from_model(model, x, SpaceRules(ratios=(0.0, 0.3, 0.5)))
    assert {s.name: s.groups for s in space.slots} == {"a": 4, "b": 4}
    slim, history = apply_policy(model, space, space.uniform(0.5), x)
    assert (slim.b.in_channels, slim.b.out_channels, slim.b.groups) == (8, 8, 4)
    removed = next(idxs for name, _, idxs in history if name == "a")
    positions = [sorted(i % 4 for i in removed if i // 4 == g) for g in range(4)]
    assert all(p == positions[0] for p in positions) and len(positions[0]) == 2


class _BadForward(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise ValueError("this model cannot run")


def test_untraceable_model_is_a_one_line_user_error():
    with pytest.raises(UserError, match="_BadForward fails its forward pass") as info:
        SearchSpace.from_model(_BadForward(), torch.randn(1, 3, 8, 8))
    assert "\n" not in str(info.value) and "this model cannot run" in str(info.value)


class _Hidden(nn.Module):
    """A slot whose width the forward pass hard-codes (as torchvision's ViT does with hidden_dim)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.head = nn.Conv2d(3, 8, 1), nn.Linear(8, 4)
        self.scale = nn.Parameter(torch.ones(8, 1, 1))  # outside any layer: Torch-Pruning warns

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = (self.conv(x) * self.scale).reshape(x.shape[0], 8, -1)
        return self.head(y.mean(2))


def test_breaking_slot_frozen_with_one_warning_and_refused_when_forced(recwarn):
    x = torch.randn(1, 3, 4, 4)
    for _ in range(3):
        with pytest.raises(UserError, match="no prunable group"):
            SearchSpace.from_model(_Hidden(), x)
    said = [str(w.message) for w in recwarn.list]
    assert sum("parameters outside standard layers (scale)" in m for m in said) == 1
    assert sum("'conv': the pruned model's forward pass fails" in m for m in said) == 1
    from autoprune.space import Slot

    model = _Hidden()
    forced = SearchSpace([Slot("conv", 8, (0.0, 0.5))], "f")
    with pytest.raises(UserError, match="forward pass fails .*freeze the slot") as info:
        apply_policy(model, forced, forced.uniform(0.5).__class__("f", (("conv", 0.5),)), x)
    assert "\n" not in str(info.value)


def test_runaway_index_mapping_frozen_with_why(monkeypatch):
    """Torch-Pruning's flatten mapping multiplies a group's index list by its stride at every
    pass (Swin's attention walks it again and again: over 16 GB for one swin_t group); past
    graph.EXPANSION_LIMIT indices the group is frozen, said why, instead of exhausting memory."""
    from autoprune import graph

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.Flatten(),
                        nn.Linear(8 * 4 * 4, 16), nn.ReLU(), nn.Linear(16, 10)).eval()
    x = torch.randn(1, 1, 4, 4)
    assert "2" in SearchSpace.from_model(net, x).slot_names  # 8 x 16 indices: within the limit
    monkeypatch.setattr(graph, "EXPANSION_LIMIT", 100)
    with pytest.warns(UserWarning, match="grows without bound"):
        space = SearchSpace.from_model(net, x)
    assert "grows without bound" in space.frozen_reasons["2"]
    assert {"0", "4"} <= set(space.slot_names)


class _Concat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem, self.a, self.b = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 4, 1), nn.Conv2d(8, 6, 1)
        self.mix, self.fc = nn.Conv2d(10, 8, 3, padding=1), nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x).relu()
        return self.fc(self.mix(torch.cat([self.a(x), self.b(x)], dim=1)).mean((2, 3)))


def test_concat_of_unknown_widths_frozen_not_refused(monkeypatch):
    """Where Torch-Pruning cannot infer a concat's input widths it sums a None and the whole
    graph build fails (Swin-S's patch merging); the groups through that concat are frozen."""
    from torch_pruning.dependency import shape_infer

    torch.manual_seed(0)
    net, x = _Concat().eval(), torch.randn(1, 1, 8, 8)
    monkeypatch.setattr(shape_infer, "infer_channels_between", lambda *_: None)
    with pytest.warns(UserWarning, match="slot\\(s\\) frozen"):
        space = SearchSpace.from_model(net, x)
    assert set(space.slot_names) == {"stem", "mix"}  # 'a' and 'b' meet in the concat: one group
    (why,) = space.frozen_reasons.values()
    assert "concat" in why and "_ConcatOp" in why


def test_breaking_slot_probe_leaves_the_model_as_it_was():
    """The probe prunes the model itself (no copy) and undoes it: same tensors, widths, mode."""
    from autoprune.breakage import breaking_slots
    from autoprune.space import Slot

    model, x = _Hidden().train(), torch.randn(1, 3, 4, 4)
    tensors = {k: v for k, v in model.state_dict(keep_vars=True).items()}
    widths = [(m.in_channels, m.out_channels) for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert "conv" in breaking_slots(model, x, [Slot("conv", 8, (0.0, 0.5))])
    assert all(v is tensors[k] for k, v in model.state_dict(keep_vars=True).items())
    assert widths == [(m.in_channels, m.out_channels) for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert model.training
