"""Model specs: built-in CIFAR networks, ``torchvision:NAME`` and ``package.module:function``.

Examples: ``resnet20``, ``resnet56:width=32``, ``mobilenetv2:width_mult=0.5``,
``torchvision:resnet18``, ``mypkg.nets:build`` (called with ``num_classes`` and ``in_channels``
when it accepts them), ``./nets.py:build``.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import pickle
import sys
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autoprune.errors import UserError

BUILTIN = {"resnet20", "resnet32", "resnet56", "mobilenetv2"}
SPECS = "resnet20, resnet32, resnet56, mobilenetv2 (name:key=value,...), torchvision:NAME or package.module:function"


def _resnet(depth: int) -> Callable[..., nn.Module]:
    def build(num_classes: int = 10, in_channels: int = 3, width: int = 16) -> nn.Module:
        from autoprune.models.cifar_resnet import CifarResNet

        return CifarResNet(depth, num_classes, width, in_channels)

    return build


def _mobilenetv2(
    num_classes: int = 10,
    in_channels: int = 3,
    width_mult: float = 1.0,
    last_channel: int = 1280,
    dropout: float = 0.0,
    stem_stride: int = 1,
) -> nn.Module:
    from autoprune.models.mobilenet import mobilenetv2

    return mobilenetv2(num_classes, in_channels, width_mult, last_channel, dropout, stem_stride)


_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "resnet20": _resnet(20),
    "resnet32": _resnet(32),
    "resnet56": _resnet(56),
    "mobilenetv2": _mobilenetv2,
}


def _parse_kwargs(spec: str, text: str) -> dict[str, int | float]:
    out: dict[str, int | float] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key.isidentifier():
            raise UserError(f"model spec {spec!r}: expected key=value options, got {item!r}")
        try:
            out[key] = int(value)
        except ValueError:
            try:
                out[key] = float(value)
            except ValueError:
                raise UserError(
                    f"model spec {spec!r}: option {key} must be a number, got {value!r}"
                ) from None
    return out


def _builtin(spec: str, name: str, options: str, num_classes: int, in_channels: int) -> nn.Module:
    builder = _BUILDERS[name]
    kwargs = _parse_kwargs(spec, options)
    allowed = [
        p for p in inspect.signature(builder).parameters if p not in ("num_classes", "in_channels")
    ]
    for key in kwargs:
        if key not in allowed:
            raise UserError(f"model {name} has no option {key!r}; options: {', '.join(allowed)}")
    try:
        return builder(num_classes=num_classes, in_channels=in_channels, **kwargs)
    except (ValueError, TypeError) as e:
        raise UserError(f"cannot build model {spec!r}: {e}") from None


def _torchvision(spec: str, name: str, num_classes: int, in_channels: int) -> nn.Module:
    if in_channels != 3:
        raise UserError(
            f"{spec} takes 3-channel images but the data has {in_channels} channel(s); "
            "use a built-in model (e.g. resnet20) or your own factory"
        )
    try:
        import torchvision
    except ImportError:
        raise UserError("torchvision is not installed; pip install torchvision") from None
    if not name:
        raise UserError("model spec 'torchvision:' needs a model name, e.g. torchvision:resnet18")
    try:
        return torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    except ValueError as e:
        raise UserError(f"cannot build {spec}: {e}") from None
    except TypeError as e:
        raise UserError(f"cannot build {spec} with num_classes={num_classes}: {e}") from None


def _import_module(spec: str, module_name: str) -> Any:
    if module_name.endswith(".py"):
        path = Path(module_name).expanduser()
        if not path.is_file():
            raise UserError(f"model spec {spec!r}: file {module_name} does not exist")
        mod_name = "autoprune_user_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
        if mod_name in sys.modules:
            return sys.modules[mod_name]
        loader_spec = importlib.util.spec_from_file_location(mod_name, path)
        if loader_spec is None or loader_spec.loader is None:
            raise UserError(f"model spec {spec!r}: cannot import {module_name}")
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[mod_name] = module
        try:
            loader_spec.loader.exec_module(module)
        except Exception as e:
            del sys.modules[mod_name]
            raise UserError(
                f"model spec {spec!r}: importing {module_name} failed: {type(e).__name__}: {e}"
            ) from None
        return module
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise UserError(
            f"model spec {spec!r}: cannot import module {module_name!r} ({e})"
        ) from None
    except Exception as e:
        raise UserError(
            f"model spec {spec!r}: importing {module_name} failed: {type(e).__name__}: {e}"
        ) from None


def _factory(
    spec: str, module_name: str, attr: str, num_classes: int, in_channels: int
) -> nn.Module:
    if not module_name or not attr:
        raise UserError(f"unknown model {spec!r}; use {SPECS}")
    obj: Any = _import_module(spec, module_name)
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UserError(f"model spec {spec!r}: {module_name} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise UserError(f"model spec {spec!r}: {attr} is not callable")
    kwargs: dict[str, int] = {}
    try:
        params = inspect.signature(obj).parameters
        var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        for key, value in (("num_classes", num_classes), ("in_channels", in_channels)):
            if var_kw or key in params:
                kwargs[key] = value
    except (TypeError, ValueError):  # builtins without a signature: call with no arguments
        pass
    try:
        model = obj(**kwargs)
    except Exception as e:
        raise UserError(f"model factory {spec} raised {type(e).__name__}: {e}") from None
    if not isinstance(model, nn.Module):
        raise UserError(
            f"model factory {spec} returned {type(model).__name__}, not a torch.nn.Module"
        )
    return model


def build_model(spec: str, *, num_classes: int, in_channels: int) -> nn.Module:
    """Build a freshly initialised model from ``spec`` (see the module docstring)."""
    spec = spec.strip()
    head, sep, rest = spec.partition(":")
    if head in BUILTIN:
        return _builtin(spec, head, rest, num_classes, in_channels)
    if head == "torchvision":
        return _torchvision(spec, rest.strip(), num_classes, in_channels)
    if not sep:
        raise UserError(f"unknown model {spec!r}; use {SPECS}")
    module_name, _, attr = spec.rpartition(":")
    return _factory(spec, module_name.strip(), attr.strip(), num_classes, in_channels)


def _state_dict_of(obj: Any) -> Mapping[str, Any] | None:
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, Mapping):
                return inner
        if obj and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
            return obj
    return None


def load_checkpoint(model: nn.Module, path: str | Path, *, spec: str | None = None) -> None:
    """Load weights from ``path`` into ``model`` (``weights_only=True``; strict keys and shapes).

    Accepts a plain state dict, ``{"state_dict": sd}`` or ``{"model": sd}``; a ``module.`` prefix
    (DataParallel) is stripped. Any problem is a one-line UserError.
    """
    path = Path(path).expanduser()
    what = spec or type(model).__name__
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol before refusing
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" not in str(e).lower():
            raise UserError(f"cannot load checkpoint {path}: not a torch.save file ({str(e).splitlines()[0]})") from None
        raise UserError(
            f"cannot load checkpoint {path}: it holds pickled Python objects, not only tensors, and "
            "autoprune never runs code from a file (save a state dict: torch.save(model.state_dict(), path))"
        ) from None
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise UserError(
            f"cannot load checkpoint {path} (a state dict saved with torch.save is expected; "
            f"whole pickled models are not loaded): {type(e).__name__}: {first}"
        ) from None
    sd = _state_dict_of(obj)
    if sd is None:
        raise UserError(
            f"checkpoint {path} holds no state dict (expected a state dict, "
            "{'state_dict': ...} or {'model': ...})"
        )
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    wrong = [
        f"{k} has shape {tuple(sd[k].shape)}, the model {tuple(own[k].shape)}"
        for k in own
        if k in sd and isinstance(sd[k], torch.Tensor) and sd[k].shape != own[k].shape
    ]
    for problems, label in ((missing, "missing key"), (unexpected, "unexpected key"), (wrong, "")):
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            detail = f"{label} {problems[0]}" if label else problems[0]
            raise UserError(f"checkpoint {path} does not match {what}: {detail}{more}")
    model.load_state_dict(sd, strict=True)
