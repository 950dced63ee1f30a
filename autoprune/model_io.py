"""A slimmed model for deployment: rebuilt from its file alone, or written as torch, ONNX or TorchScript.

A ``model.pt`` (``prune.save_slimmed``) holds the pruning history, the state dict and, under
``meta["architecture"]``, the model spec with ``num_classes``, ``in_channels`` and the input shape.
``load`` rebuilds the dense architecture from that spec, replays the history and loads the
tensors with ``torch.load(weights_only=True)``: nothing in the file is executed. The spec is a
name (``resnet20:width=4``, ``torchvision:resnet18``); a factory spec (``pkg.module:function``)
names code outside autoprune, so ``load`` imports and calls it only with ``trust_factory=True``.

Every export is written to a temporary file, reloaded and compared with the PyTorch model on one
batch, and only then renamed into place, so a failed export leaves whatever was at ``out`` intact.
ONNX goes through torch's TorchScript-based exporter (``dynamo=False``): it needs only the ``onnx``
package, where torch 2.14's default (``dynamo=True``) also needs ``onnxscript`` and took 12-21 s per
ResNet-20 on a 2-core CPU against under 1 s.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autoprune.errors import UserError
from autoprune.prune import load_slimmed, read_slimmed, save_slimmed

FORMATS: dict[str, tuple[str, ...]] = {"torch": (".pt", ".pth"), "onnx": (".onnx",), "torchscript": (".ts", ".torchscript")}
EXTRA = "pip install -e '.[export]' (or pip install 'autoprune[export]')"
OPSET = 17  # read by onnxruntime >= 1.14 and most other runtimes
# ONNX Runtime's kernels differ from PyTorch's in the last bits; a real mismatch is far larger.
RTOL, ATOL = 1e-3, 1e-4


@dataclass(frozen=True)
class Slimmed:
    """A slimmed model with what its torch-format file records.

    ``dense`` is the unpruned architecture the pruning history replays on (its weights do not
    matter: the state dict replaces them all).
    """

    model: nn.Module
    dense: nn.Module
    history: list
    fingerprint: str
    input_shape: tuple[int, int, int]
    meta: dict[str, Any]


@dataclass(frozen=True)
class ExportCheck:
    """How an export was verified: reloaded in its runtime and compared with PyTorch on one batch."""

    path: Path
    format: str
    runtime: str
    inputs: str
    max_abs_diff: float | None
    same_argmax: int | None
    batch: int

    def describe(self) -> str:
        """One line for the console."""
        if self.max_abs_diff is None:
            return f"wrote {self.path} ({self.format}); {self.runtime}"
        return (f"wrote {self.path} ({self.format}); {self.runtime} on {self.inputs}: max abs diff "
                f"{self.max_abs_diff:.3g}, same argmax {self.same_argmax}/{self.batch}")


def architecture(task: Any) -> dict[str, Any]:
    """What ``load`` needs to rebuild ``task``'s dense architecture (stored in a model file's meta),
    and the per-channel ``mean`` and ``std`` its inputs are normalised with, for a deployment."""
    c, h, w = task.input_shape
    return {"model": task.recipe.model, "num_classes": int(task.data.num_classes), "in_channels": int(c),
            "input_shape": [int(c), int(h), int(w)], "mean": [float(v) for v in task.data.mean],
            "std": [float(v) for v in task.data.std]}


def output_format(out: str | Path, fmt: str | None = None) -> str:
    """The format ``out`` is written in: ``fmt`` (its suffix must match), else by suffix.

    Called before any work, so a bad ``--out`` costs nothing; also checks ONNX is installed.
    """
    path = Path(out)
    names = ", ".join(f"{s} ({f})" for f, ss in FORMATS.items() for s in ss)
    if path.is_dir() or str(out).endswith(("/", os.sep)):
        raise UserError(f"--out {out} is a directory; give a file name ending in one of {names}")
    suffix = path.suffix.lower()
    if fmt is None:
        fmt = next((f for f, ss in FORMATS.items() if suffix in ss), None)
        if fmt is None:
            raise UserError(f"cannot tell the format of {out} from its suffix; use one of {names}")
    elif fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    elif suffix not in FORMATS[fmt]:
        raise UserError(f"--out {out}: {fmt} files must end in {' or '.join(FORMATS[fmt])}")
    if path.parent.exists() and not path.parent.is_dir():
        raise UserError(f"--out {out}: {path.parent} is a file, not a directory")
    if fmt == "onnx":
        require_onnx()
    return fmt


def require_onnx() -> None:
    """A one-line error naming the extra when the ``onnx`` package is missing."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise UserError(f"ONNX export needs the onnx package, which is not installed: {EXTRA}") from None


def _dense_from(arch: Any, path: Path, trust_factory: bool) -> nn.Module:
    from autoprune.models import BUILTIN, build_model

    if not isinstance(arch, Mapping):
        raise UserError(
            f"{path} was saved without its model spec (by an older autoprune): rebuild the dense model and call "
            "autoprune.load(path, dense_model=model), or re-save it with `autoprune export RUN_DIR --format torch --out NEW.pt`"
        )
    spec, classes, channels = arch.get("model"), arch.get("num_classes"), arch.get("in_channels")
    if not isinstance(spec, str) or not all(isinstance(v, int) and v > 0 for v in (classes, channels)):
        raise UserError(f"{path}: malformed model spec {dict(arch)!r}")
    head = spec.partition(":")[0].strip()
    if head == "live":
        raise UserError(f"{path} was pruned from a live model ({spec}, given to autoprune.search as an nn.Module), "
                        "which no spec rebuilds: load it with autoprune.load(path, dense_model=your_dense_model)")
    if head not in BUILTIN and head != "torchvision" and not trust_factory:
        raise UserError(
            f"{path} names the model factory {spec!r}, code outside autoprune; load it with "
            "autoprune.load(path, trust_factory=True) if you trust that code, or pass dense_model="
        )
    return build_model(spec, num_classes=classes, in_channels=channels)


def read(path: str | Path, *, dense_model: nn.Module | None = None, trust_factory: bool = False) -> Slimmed:
    """A slimmed-model file rebuilt with everything it records (see ``load``)."""
    path = Path(path)
    payload = read_slimmed(path)
    meta = dict(payload.get("meta") or {})
    dense = dense_model if dense_model is not None else _dense_from(meta.get("architecture"), path, trust_factory)
    with torch.enable_grad():  # Torch-Pruning traces with autograd; a caller may be under no_grad
        model = load_slimmed(path, dense).eval()
    shape = tuple(int(v) for v in payload["input_shape"])
    return Slimmed(model, dense, [list(h) for h in payload["pruning"]], str(payload["fingerprint"]), shape, meta)


def load(path: str | Path, *, dense_model: nn.Module | None = None, trust_factory: bool = False) -> nn.Module:
    """The slimmed model in ``path`` (a ``model.pt`` of a run, or of ``autoprune apply``), in eval mode.

    Needs nothing but the file: the architecture is rebuilt from the spec it records, loaded with
    ``weights_only=True``. Pass ``dense_model`` (the unpruned architecture) for files saved
    without a spec, and ``trust_factory=True`` to let a ``pkg.module:function`` spec be imported.
    """
    return read(path, dense_model=dense_model, trust_factory=trust_factory).model


def _random_inputs(shape: tuple[int, ...], n: int = 8) -> torch.Tensor:
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(0))


def _compare(path: Path, fmt: str, runtime: str, inputs: torch.Tensor, what: str, want: torch.Tensor,
             got: torch.Tensor) -> ExportCheck:
    diff = float((got - want).abs().max()) if got.numel() else 0.0
    same = int((got.argmax(1) == want.argmax(1)).sum())
    if got.shape != want.shape or not torch.allclose(got, want, rtol=RTOL, atol=ATOL):
        raise UserError(f"{fmt} export of {path.name} does not reproduce the PyTorch model in {runtime} "
                        f"(max abs diff {diff:.3g}); nothing was written")
    return ExportCheck(path, fmt, runtime, what, diff, same, len(inputs))


def _write_torchscript(s: Slimmed, tmp: Path, inputs: torch.Tensor) -> torch.nn.Module:
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit")  # deprecated in 2.14, still works
            traced = torch.jit.trace(s.model, inputs, check_trace=False)
            torch.jit.save(traced, str(tmp))
            return torch.jit.load(str(tmp), map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - a model the tracer cannot follow
        first = (str(exc).strip().splitlines() or [""])[0]
        raise UserError(f"TorchScript export failed ({type(exc).__name__}: {first}); export --format onnx instead") from exc


def _write_onnx(s: Slimmed, tmp: Path, inputs: torch.Tensor) -> str:
    import onnx

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)  # the legacy exporter, see the docstring
            torch.onnx.export(s.model, (inputs,), str(tmp), dynamo=False, opset_version=OPSET,
                              input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
        onnx.checker.check_model(str(tmp), full_check=True)
    except Exception as exc:  # noqa: BLE001 - an unsupported operator or an invalid graph
        first = (str(exc).strip().splitlines() or [""])[0]
        raise UserError(f"ONNX export failed ({type(exc).__name__}: {first}); export --format torchscript instead") from exc
    return f"onnx {onnx.__version__} checker passed"


def write(s: Slimmed, out: str | Path, fmt: str | None = None, *, inputs: torch.Tensor | None = None,
          inputs_label: str | None = None) -> ExportCheck:
    """Write ``s`` to ``out`` in ``fmt`` (default: by suffix), verified on ``inputs`` before it is renamed into place.

    ``inputs`` default to 8 seeded random images; real ones make the argmax comparison meaningful.
    """
    fmt = output_format(out, fmt)
    out = Path(out)
    if inputs is None:
        inputs, inputs_label = _random_inputs(s.input_shape), "8 random inputs"
    label = inputs_label or f"{len(inputs)} inputs"
    s.model.eval()
    with torch.no_grad():
        want = s.model(inputs)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        if fmt == "torch":
            save_slimmed(tmp, s.model, s.history, fingerprint=s.fingerprint, input_shape=s.input_shape, meta=s.meta)
            with torch.enable_grad():
                reloaded = load_slimmed(tmp, s.dense).eval()
            with torch.no_grad():
                check = _compare(out, fmt, "reloaded", inputs, label, want, reloaded(inputs))
        elif fmt == "torchscript":
            reloaded = _write_torchscript(s, tmp, inputs)
            with torch.no_grad():
                check = _compare(out, fmt, "reloaded with torch.jit.load", inputs, label, want, reloaded(inputs))
        else:
            checked = _write_onnx(s, tmp, inputs)
            check = _run_onnx(tmp, out, checked, inputs, label, want)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return check


def _run_onnx(tmp: Path, out: Path, checked: str, inputs: torch.Tensor, label: str, want: torch.Tensor) -> ExportCheck:
    try:
        import onnxruntime as ort
    except ImportError:
        return ExportCheck(out, "onnx", f"{checked}; onnxruntime not installed, so not run ({EXTRA})", label, None, None, len(inputs))

    session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: inputs.numpy()})[0]
    return _compare(out, "onnx", f"{checked}; onnxruntime {ort.__version__}", inputs, label, want, torch.from_numpy(got))


def export_model(path: str | Path, out: str | Path, fmt: str | None = None, *, inputs: torch.Tensor | None = None,
                 trust_factory: bool = False) -> ExportCheck:
    """Convert the slimmed-model file ``path`` to ``out`` (``torch``, ``onnx`` or ``torchscript``; default by suffix).

    Returns how the written file was verified (see ``ExportCheck``).
    """
    fmt = output_format(out, fmt)
    return write(read(path, trust_factory=trust_factory), out, fmt, inputs=inputs)
