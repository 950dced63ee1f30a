"""Model specs and checkpoints."""

from __future__ import annotations

import textwrap

import pytest
import torch
from torch import nn

from autoprune.errors import UserError
from autoprune.models import BUILTIN, build_model, load_checkpoint
from autoprune.models.cifar_resnet import BasicBlock


def test_builtin_resnets() -> None:
    m = build_model("resnet20:width=4", num_classes=7, in_channels=1)
    assert m(torch.zeros(2, 1, 16, 16)).shape == (2, 7)
    assert m.conv1.out_channels == 4 and m.conv1.in_channels == 1
    blocks = {
        name: sum(
            isinstance(x, BasicBlock)
            for x in build_model(name, num_classes=10, in_channels=3).modules()
        )
        for name in ("resnet20", "resnet32", "resnet56")
    }
    assert blocks == {"resnet20": 9, "resnet32": 15, "resnet56": 27}
    assert BUILTIN == {"resnet20", "resnet32", "resnet56", "mobilenetv2"}


def test_mobilenetv2_cifar_layout() -> None:
    m = build_model("mobilenetv2:width_mult=0.25", num_classes=5, in_channels=3).eval()
    depthwise = [c for c in m.modules() if isinstance(c, nn.Conv2d) and c.groups > 1]
    assert depthwise and all(c.groups == c.in_channels == c.out_channels for c in depthwise)
    assert sum(c.stride == (2, 2) for c in m.modules() if isinstance(c, nn.Conv2d)) == 3
    assert m.features[0][0].stride == (1, 1)
    shapes = []
    m.features[-1].register_forward_hook(lambda mod, i, o: shapes.append(tuple(o.shape)))
    with torch.no_grad():
        assert m(torch.zeros(1, 3, 32, 32)).shape == (1, 5)
    assert shapes[0][2:] == (4, 4)
    full = build_model("mobilenetv2", num_classes=10, in_channels=3)
    assert full.features[0][0].out_channels == 32 and full.classifier.in_features == 1280
    assert sum(getattr(b, "use_residual", False) for b in full.modules()) == 10


def test_mobilenetv2_stem_stride_quarters_the_macs() -> None:
    from autoprune.costs.analytic import count_macs_params

    base = build_model("mobilenetv2:width_mult=0.5", num_classes=10, in_channels=3)
    fast = build_model("mobilenetv2:width_mult=0.5,stem_stride=2", num_classes=10, in_channels=3)
    assert fast.features[0][0].stride == (2, 2)
    macs = [count_macs_params(m, (3, 32, 32))[0] for m in (base, fast)]
    assert 0.2 < macs[1] / macs[0] < 0.3
    with pytest.raises(UserError, match="stem_stride must be 1 or 2"):
        build_model("mobilenetv2:stem_stride=3", num_classes=10, in_channels=3)


@pytest.mark.parametrize(
    "spec,match",
    [
        ("resnet20:depth=8", "no option 'depth'"),
        ("resnet20:width=wide", "must be a number"),
        ("resnet20:width", "key=value"),
        ("vgg16", "unknown model"),
        ("torchvision:no_such_net", "no_such_net"),
        ("no_such_module_xyz:build", "cannot import module"),
        ("os.path:nothing_here", "no attribute"),
    ],
)
def test_bad_specs(spec: str, match: str) -> None:
    with pytest.raises(UserError, match=match):
        build_model(spec, num_classes=10, in_channels=3)


def test_torchvision_models() -> None:
    m = build_model("torchvision:resnet18", num_classes=7, in_channels=3)
    assert m.fc.out_features == 7
    with pytest.raises(UserError, match="3-channel"):
        build_model("torchvision:resnet18", num_classes=7, in_channels=1)


def test_factory_modules(tmp_path, monkeypatch) -> None:
    (tmp_path / "ap_user_nets.py").write_text(
        textwrap.dedent(
            """
            from torch import nn

            def full(num_classes, in_channels):
                return nn.Conv2d(in_channels, num_classes, 1)

            def classes_only(num_classes=3):
                return nn.Linear(2, num_classes)

            def bare():
                return nn.Linear(4, 4)

            def kwargs(**kw):
                return nn.Linear(kw["in_channels"], kw["num_classes"])

            def not_a_module(num_classes):
                return [num_classes]

            def broken():
                raise RuntimeError("boom")
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    full = build_model("ap_user_nets:full", num_classes=6, in_channels=2)
    assert (full.in_channels, full.out_channels) == (2, 6)
    assert build_model("ap_user_nets:classes_only", num_classes=9, in_channels=1).out_features == 9
    assert build_model("ap_user_nets:bare", num_classes=9, in_channels=1).out_features == 4
    assert build_model("ap_user_nets:kwargs", num_classes=5, in_channels=3).in_features == 3
    with pytest.raises(UserError, match="not a torch.nn.Module"):
        build_model("ap_user_nets:not_a_module", num_classes=2, in_channels=1)
    with pytest.raises(UserError, match="boom"):
        build_model("ap_user_nets:broken", num_classes=2, in_channels=1)
    by_path = build_model(f"{tmp_path / 'ap_user_nets.py'}:full", num_classes=4, in_channels=1)
    assert by_path.out_channels == 4
    with pytest.raises(UserError, match="does not exist"):
        build_model(f"{tmp_path / 'missing.py'}:full", num_classes=4, in_channels=1)


def _tiny() -> nn.Module:
    return build_model("resnet20:width=4", num_classes=3, in_channels=1)


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "model", "module_prefix"])
def test_checkpoint_round_trip(tmp_path, wrap: str) -> None:
    source = _tiny()
    sd = source.state_dict()
    blob = {
        "plain": sd,
        "state_dict": {"state_dict": sd, "epoch": 3},
        "model": {"model": sd},
        "module_prefix": {f"module.{k}": v for k, v in sd.items()},
    }[wrap]
    torch.save(blob, tmp_path / "w.pt")
    target = _tiny()
    assert not torch.equal(target.conv1.weight, source.conv1.weight)
    load_checkpoint(target, str(tmp_path / "w.pt"))
    assert all(
        torch.equal(a, b) for a, b in zip(target.state_dict().values(), sd.values(), strict=True)
    )


def test_checkpoint_errors(tmp_path) -> None:
    model = _tiny()
    with pytest.raises(UserError, match="does not exist"):
        load_checkpoint(model, str(tmp_path / "none.pt"))
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage\xff" * 10)
    with pytest.raises(UserError, match="cannot load checkpoint"):
        load_checkpoint(model, str(tmp_path / "junk.pt"))
    torch.save(
        build_model("resnet20:width=8", num_classes=3, in_channels=1).state_dict(),
        tmp_path / "w8.pt",
    )
    with pytest.raises(UserError, match=r"does not match resnet20:width=4: .*shape"):
        load_checkpoint(model, str(tmp_path / "w8.pt"), spec="resnet20:width=4")
    partial = {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}
    torch.save(partial, tmp_path / "partial.pt")
    with pytest.raises(UserError, match="missing key fc.weight"):
        load_checkpoint(model, str(tmp_path / "partial.pt"))
    torch.save(model, tmp_path / "whole.pt")  # a pickled module is not loaded (weights_only)
    with pytest.raises(UserError, match="cannot load checkpoint"):
        load_checkpoint(model, str(tmp_path / "whole.pt"))
    torch.save({"epoch": 3}, tmp_path / "nosd.pt")
    with pytest.raises(UserError, match="no state dict"):
        load_checkpoint(model, str(tmp_path / "nosd.pt"))
