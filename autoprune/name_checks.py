"""What is wrong with a named setting (a searcher, model, data, fidelity, device, ...), in words.

Each check returns '' when the value is fine, else the problem, and imports the registry it
mirrors only when called, so a typo is refused before any data is loaded, model trained or run
directory made. ``autoprune.settings`` applies them to every value that enters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autoprune.errors import UserError

DATA_KINDS = ("digits", "cifar10", "imagefolder")  # autoprune.data.load_data's kinds


def _refusal(parse: Any, value: str) -> str:
    """The UserError ``parse(value)`` raises, as a problem string ('' when it accepts the value)."""
    try:
        parse(value)
    except UserError as exc:
        return str(exc)
    return ""


def _searcher_problem(name: str) -> str:
    from autoprune.searchers import searcher_names
    from autoprune.searchers.portfolio import PortfolioConfig

    base, colon, members = name.partition(":")
    if colon and base == "portfolio":  # portfolio:tpe,knapsack
        return _refusal(PortfolioConfig.from_spec, members)
    if name in searcher_names():
        return ""
    return f"unknown searcher {name!r}; choose one of {', '.join(searcher_names())}, or portfolio:A,B,..."


def _target_problem(target: str) -> str:
    from autoprune.objectives import TARGETS

    return "" if target in TARGETS else f"unknown target {target!r}; choose one of {', '.join(TARGETS)}"


def _objectives_problem(text: str) -> str:
    from autoprune.objectives import parse_objectives

    return _refusal(parse_objectives, text)


def _fidelity_problem(text: str) -> str:
    from autoprune.evaluators import parse_fidelity

    return _refusal(parse_fidelity, text)


def _rungs_problem(text: str) -> str:
    from autoprune.multifidelity import parse_rungs

    try:
        parse_rungs(text)
    except UserError as exc:
        return str(exc).removeprefix(f"--rungs {text!r}: ").removeprefix("--rungs: ")
    return ""


def _model_problem(spec: str) -> str:
    """The spec's kind: a built-in name, ``torchvision:NAME`` or ``module:factory`` whose module
    (or ``.py`` file) can be found; a factory's options are checked when it is built."""
    import importlib.util

    from autoprune.models import BUILTIN, SPECS

    head, _, rest = spec.strip().partition(":")
    if head in BUILTIN or (head == "live" and rest):  # live: a model held by the Python API (autoprune.search)
        return ""
    if head == "torchvision":
        try:
            import torchvision
        except ImportError:
            return "torchvision is not installed; pip install torchvision"
        if rest.strip() not in torchvision.models.list_models():
            return f"torchvision has no model {rest.strip()!r} (see torchvision.models.list_models())"
        return ""
    module, _, attr = spec.strip().rpartition(":")
    if not module.strip() or not attr.strip():
        return f"unknown model {spec!r}; use {SPECS}"
    if module.endswith(".py"):
        return "" if Path(module).expanduser().is_file() else f"model file {module} does not exist"
    try:
        found = importlib.util.find_spec(module.split(".")[0])  # the top-level package: nothing runs
    except (ImportError, ValueError):
        found = None
    return "" if found else f"cannot find module {module!r} of model spec {spec!r}"


def _data_problem(spec: str) -> str:
    kind, sep, arg = spec.partition(":")
    kind = kind.strip().lower()
    if kind == "digits" and not sep:
        return ""
    if kind in DATA_KINDS[1:]:
        return "" if arg.strip() else f"data spec {spec!r} needs a directory: {kind}:DIR"
    if kind == "live" and arg:  # datasets held in memory by the Python API (autoprune.search)
        return ""
    hint = f" (for a directory of images use imagefolder:{spec})" if Path(spec).expanduser().is_dir() else ""
    return f"unknown data spec {spec!r}; use digits, cifar10:DIR or imagefolder:DIR{hint}"


def _space_problem(name: str) -> str:
    from autoprune.rules import SPACES_DIR, load_rules

    if not Path(name).suffix and not Path(name).exists() and not (SPACES_DIR / f"{name}.yaml").is_file():
        names = sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))
        return f"no search space {name!r}: give a YAML file or one of {', '.join(names)}"
    return _refusal(load_rules, name)


def _device_problem(spec: str) -> str:
    from autoprune.device import spec_problem

    return spec_problem(spec)


def _latency_device_problem(spec: str) -> str:
    if spec == "auto":
        return "the deploy device latency is read on is cpu or cuda[:N], not auto"
    return _device_problem(spec)


def _latency_table_problem(path: str) -> str:
    from autoprune.costs.table import load_device_table

    try:
        load_device_table(path)
    except UserError as exc:
        return str(exc).split(": ", 1)[-1]
    return ""


NAME_CHECKS = {
    "device": _device_problem, "latency_device": _latency_device_problem, "latency_table": _latency_table_problem,
    "searcher": _searcher_problem, "target": _target_problem, "objectives": _objectives_problem, "fidelity": _fidelity_problem,
    "probe_fidelity": _fidelity_problem,
    "rungs": _rungs_problem, "model": _model_problem, "data": _data_problem, "space": _space_problem,
}
