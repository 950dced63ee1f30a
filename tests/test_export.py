"""Exports a deployment can use: a slimmed model rebuilt from its file alone, torch, TorchScript and
ONNX files that compute what PyTorch computes, and ``apply`` fine-tuning what it writes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import autoprune
from autoprune.cli import main, parser
from autoprune.errors import UserError
from autoprune.models import build_model
from autoprune.prune import apply_policy, read_slimmed, save_slimmed
from autoprune.rules import SpaceRules
from autoprune.space import SearchSpace

TINY = "resnet20:width=4"
SHAPE = (1, 8, 8)
ARCH = {"model": TINY, "num_classes": 10, "in_channels": 1, "input_shape": list(SHAPE)}


def _dense() -> torch.nn.Module:
    torch.manual_seed(0)
    dense = build_model(TINY, num_classes=10, in_channels=1).eval()
    for m in dense.modules():  # BN statistics away from (0, 1), so exports must carry them
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return dense


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    """A tiny ResNet slimmed by a random policy, saved with its model spec; and the model itself."""
    dense = _dense()
    example = torch.zeros(1, *SHAPE)
    space = SearchSpace.from_model(dense, example, SpaceRules(round_to=1))
    policy = space.sample(np.random.default_rng(3))
    model, history = apply_policy(dense, space, policy, example)
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in dense.parameters())
    path = tmp_path_factory.mktemp("saved") / "model.pt"
    save_slimmed(path, model, history, fingerprint=space.fingerprint, input_shape=SHAPE, meta={"architecture": ARCH})
    return path, model.eval()


@pytest.fixture(scope="module")
def inputs() -> torch.Tensor:
    return torch.randn(5, *SHAPE, generator=torch.Generator().manual_seed(1))  # not the export's batch size


def _resave(src: Path, dst: Path, meta: dict) -> Path:
    p = read_slimmed(src)
    save_slimmed(dst, _rebuilt(src), p["pruning"], fingerprint=p["fingerprint"], input_shape=SHAPE, meta=meta)
    return dst


def _rebuilt(path: Path) -> torch.nn.Module:
    return autoprune.load(path, dense_model=_dense())


def test_a_fresh_process_without_onnx_loads_the_file_alone_and_names_the_extra(saved, inputs, tmp_path):
    path, model = saved
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.pt").write_bytes(path.read_bytes())
    torch.save(inputs, tmp_path / "x.pt")
    code = ("import sys, torch\n"
            "sys.modules['onnx'] = None  # as if the export extra were not installed\n"
            "import autoprune\n"
            "from autoprune.cli import main\n"
            "m = autoprune.load(sys.argv[1])\n"
            "assert not m.training\n"
            "with torch.no_grad(): torch.save(m(torch.load(sys.argv[2])), sys.argv[3])\n"
            "sys.exit(main(['export', sys.argv[4]]))\n")
    done = subprocess.run([sys.executable, "-c", code, str(path), str(tmp_path / "x.pt"), str(tmp_path / "y.pt"), str(run)],
                          capture_output=True, text=True)
    with torch.no_grad():
        assert torch.equal(torch.load(tmp_path / "y.pt", weights_only=True), model(inputs))
    assert done.returncode == 2, done.stderr
    assert "pip install -e '.[export]'" in done.stderr and "Traceback" not in done.stderr
    assert sorted(p.name for p in run.iterdir()) == ["model.pt"]


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torch_and_torchscript_round_trips(saved, inputs, tmp_path):
    path, model = saved
    with torch.no_grad():
        want = model(inputs)
        check = autoprune.export_model(path, tmp_path / "copy.pt")
        assert check.format == "torch" and check.max_abs_diff == 0.0
        assert torch.equal(autoprune.load(tmp_path / "copy.pt")(inputs), want)
        check = autoprune.export_model(path, tmp_path / "m.ts")
        assert check.format == "torchscript"
        scripted = torch.jit.load(str(tmp_path / "m.ts"))
        assert torch.allclose(scripted(inputs), want, atol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.pt", "m.ts"]  # no temporary files left


def test_onnx_round_trip_in_onnxruntime(saved, inputs, tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    path, model = saved
    out = tmp_path / "m.onnx"
    check = autoprune.export_model(path, out)
    assert check.format == "onnx" and check.max_abs_diff < 1e-4 and check.same_argmax == check.batch
    onnx.checker.check_model(str(out), full_check=True)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": inputs.numpy()})[0]
    with torch.no_grad():
        want = model(inputs).numpy()
    assert got.shape == want.shape  # a batch size other than the export's: the batch axis is dynamic
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)
    assert (got.argmax(1) == want.argmax(1)).all()


def test_factory_spec_is_not_called_unless_trusted(saved, inputs, tmp_path):
    marker = tmp_path / "called"
    (tmp_path / "nets.py").write_text(
        "from pathlib import Path\n"
        "from autoprune.models import build_model\n"
        "def build(num_classes, in_channels):\n"
        f"    Path({str(marker)!r}).touch()\n"
        f"    return build_model({TINY!r}, num_classes=num_classes, in_channels=in_channels)\n")
    path = _resave(saved[0], tmp_path / "f.pt", {"architecture": {**ARCH, "model": f"{tmp_path}/nets.py:build"}})
    with pytest.raises(UserError, match="trust_factory"):
        autoprune.load(path)
    assert not marker.exists()
    with torch.no_grad():
        assert torch.equal(autoprune.load(path, trust_factory=True)(inputs), saved[1](inputs))
    assert marker.exists()


def test_file_without_a_model_spec(saved, inputs, tmp_path):
    path = _resave(saved[0], tmp_path / "old.pt", {"policy": {}})
    with pytest.raises(UserError, match="dense_model"):
        autoprune.load(path)
    with torch.no_grad():
        assert torch.equal(autoprune.load(path, dense_model=_dense())(inputs), saved[1](inputs))


def test_a_refused_format_leaves_the_existing_file(saved, tmp_path):
    out = tmp_path / "keep.onnx"
    out.write_bytes(b"earlier export")
    with pytest.raises(UserError, match="must end in"):
        autoprune.export_model(saved[0], out, "torchscript")
    assert out.read_bytes() == b"earlier export"


# ---- the command line, on digits: a tiny dense model trained once for this module ----

@pytest.fixture(scope="module")
def policy(tmp_path_factory) -> tuple[Path, str]:
    """A policy file for a tiny ResNet on 8x8 digits, and the cache its dense model is trained in."""
    from autoprune.pipeline import default_rules_name
    from autoprune.policy_io import save_policy
    from autoprune.rules import load_rules
    from autoprune.task import TaskRecipe, load_task

    cache = str(tmp_path_factory.mktemp("cache"))
    recipe = TaskRecipe(model=TINY, data="digits", image_size=8, dense_epochs=4)
    task = load_task(TaskRecipe(**{**recipe.to_dict(), "cache_dir": cache}))
    assert task.dense_val_accuracy > 0.8
    rules = load_rules(default_rules_name(TINY))
    space = SearchSpace.from_model(task.model, task.example_inputs(), rules)
    path = tmp_path_factory.mktemp("policy") / "policy.yaml"
    save_policy(path, space.uniform(0.4), space, recipe=recipe.to_dict(), search_space=rules.name,
                granularity="slot", criterion="magnitude")
    return path, cache


def _val_accuracy(model_path: Path) -> float:
    from autoprune.data import load_data
    from autoprune.task import accuracy

    data = load_data("digits", image_size=8, seed=0, progress=False)
    return accuracy(autoprune.load(model_path), data, data.val)


def test_apply_fine_tunes_by_default(policy, tmp_path, capsys):
    path, cache = policy
    args = parser().parse_args(["apply", "--policy", str(path), "--out", "m.pt"])
    assert args.finetune_steps == 600  # the search's final fine-tune, unless asked otherwise
    out = tmp_path / "m.pt"
    assert main(["apply", "--policy", str(path), "--out", str(out), "--cache-dir", cache, "--finetune-steps", "30"]) == 0
    assert "fine-tuned" in capsys.readouterr().err
    assert _val_accuracy(out) > 0.6  # chance is 0.1; un-recalibrated and un-tuned it was 0.1000
    arch = read_slimmed(out)["meta"]["architecture"]
    assert arch["model"] == TINY and arch["input_shape"] == list(SHAPE) and len(arch["mean"]) == len(arch["std"]) == 1
    assert main(["apply", "--policy", str(path), "--out", str(tmp_path / "raw.pt"), "--cache-dir", cache,
                 "--finetune-steps", "0"]) == 0
    assert "not fine-tuned" in capsys.readouterr().err


@pytest.mark.parametrize("out,fmt,message", [
    ("DIR", None, "is a directory"),
    ("m.txt", None, "cannot tell the format"),
    ("m.pt", "onnx", "must end in .onnx"),
])
def test_bad_out_is_one_line_exit_2(policy, tmp_path, capsys, out, fmt, message):
    path, cache = policy
    target = str(tmp_path) if out == "DIR" else str(tmp_path / out)
    command = ["export", "--policy", str(path), "--format", fmt] if fmt else ["apply", "--policy", str(path)]
    assert main([*command, "--out", target, "--cache-dir", cache]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and message in err


def test_apply_to_onnx_and_export_a_run_directory(policy, tmp_path, capsys):
    onnx = pytest.importorskip("onnx")
    path, cache = policy
    assert main(["apply", "--policy", str(path), "--out", str(tmp_path / "m.onnx"), "--cache-dir", cache,
                 "--finetune-steps", "0"]) == 0
    onnx.checker.check_model(str(tmp_path / "m.onnx"))  # an ONNX graph, not a torch file under an .onnx name
    run = tmp_path / "run"
    run.mkdir()
    assert main(["apply", "--policy", str(path), "--out", str(run / "model.pt"), "--cache-dir", cache,
                 "--finetune-steps", "0"]) == 0
    capsys.readouterr()
    assert main(["export", str(run), "--cache-dir", cache]) == 0
    err = capsys.readouterr().err
    assert (run / "model.onnx").is_file() and "validation images" in err and "same argmax 32/32" in err
    assert main(["export", str(run), "--format", "torchscript"]) == 0 and (run / "model.ts").is_file()
    assert main(["export", str(run), "--format", "torch"]) == 2  # would overwrite the run's own model.pt
    assert main(["export", str(tmp_path)]) == 2  # no model.pt there


def test_export_rebuilds_a_run_file_saved_without_its_spec(policy, tmp_path):
    path, cache = policy
    run = tmp_path / "run"
    run.mkdir()
    (run / "policy.yaml").write_text(path.read_text())
    new = tmp_path / "new.pt"
    assert main(["apply", "--policy", str(path), "--out", str(new), "--cache-dir", cache, "--finetune-steps", "0"]) == 0
    _resave(new, run / "model.pt", {"recipe": read_slimmed(new)["meta"]["recipe"]})  # as saved before the spec was
    with pytest.raises(UserError, match="dense_model"):
        autoprune.load(run / "model.pt")
    assert main(["export", str(run), "--out", str(tmp_path / "upgraded.pt"), "--cache-dir", cache]) == 0
    x = torch.randn(3, *SHAPE)
    with torch.no_grad():
        assert torch.equal(autoprune.load(tmp_path / "upgraded.pt")(x), autoprune.load(new)(x))
