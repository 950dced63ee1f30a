"""Search families behind one ask/tell interface, and the name registry used by the CLI."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

from autoprune.errors import UserError
from autoprune.searchers._base import SearchContext, Searcher, policy_key
from autoprune.searchers.amc import AMCSearcher
from autoprune.searchers.baselines import GlobalSearcher, RandomSearcher, UniformSearcher
from autoprune.searchers.emo import EmoSearcher
from autoprune.searchers.emo_pms import EmoPmsSearcher
from autoprune.searchers.knapsack import GreedyKnapsackSearcher, KnapsackSearcher
from autoprune.searchers.optuna_samplers import (
    CmaEsSearcher,
    GPSearcher,
    NSGA2Searcher,
    OptunaSearcher,
    QMCSearcher,
    TPESearcher,
)
from autoprune.searchers.portfolio import PortfolioConfig, PortfolioSearcher
from autoprune.searchers.purl import PuRLSearcher

_REGISTRY: dict[str, Callable[[], Searcher]] = {
    "random": RandomSearcher,
    "uniform": UniformSearcher,
    "global": GlobalSearcher,
    "tpe": TPESearcher,
    "nsga2": NSGA2Searcher,
    "gp": GPSearcher,
    "cmaes": CmaEsSearcher,
    "qmc": QMCSearcher,
    "knapsack": KnapsackSearcher,
    "knapsack-greedy": GreedyKnapsackSearcher,
    "emo": EmoSearcher,
    "emo-pms": EmoPmsSearcher,
    "portfolio": PortfolioSearcher,
    "amc": AMCSearcher,
    "purl": PuRLSearcher,
}
DEFAULT_SEARCHER = "tpe"
# Names that take an argument after a colon: ``portfolio:tpe,knapsack``.
_WITH_ARGUMENT: dict[str, Callable[..., Searcher]] = {
    "portfolio": lambda spec, **options: PortfolioSearcher(PortfolioConfig.from_spec(spec), **options),
}


def register(name: str, factory: Callable[[], Searcher]) -> None:
    """Make a searcher available by name to the CLI, study recipes and the benchmark."""
    _REGISTRY[name] = factory


def searcher_names() -> list[str]:
    return list(_REGISTRY)


# The family of each searcher module, for ``autoprune searchers`` (a new module gets one line);
# the baselines' module gives each its own (they are told apart by what they do, not by kind).
_FAMILIES = {
    "optuna_samplers": "Optuna sampler", "knapsack": "knapsack solver", "emo": "evolutionary (pymoo)",
    "emo_pms": "evolutionary (pymoo)",
    "amc": "reinforcement learning", "purl": "reinforcement learning", "portfolio": "portfolio",
}
# The baselines every searcher must beat (docs/searchers.md, ``autoprune bench``).
BASELINES = {"random": "random sampling", "uniform": "uniform ratio", "global": "global ranking"}


class SearcherInfo(NamedTuple):
    """One line of ``autoprune searchers``."""

    name: str
    family: str
    baseline: bool
    summary: str  # first line of the class docstring


def searcher_table() -> list[SearcherInfo]:
    """Every registered searcher: its name, family, whether it is a baseline, and what it does."""
    rows = []
    for name, factory in _REGISTRY.items():
        module = getattr(factory, "__module__", "").rsplit(".", 1)[-1]
        family = BASELINES.get(name) or _FAMILIES.get(module, module or "?")
        doc = (getattr(factory, "__doc__", None) or "").strip().splitlines()
        rows.append(SearcherInfo(name, family, name in BASELINES, doc[0].replace("``", "`") if doc else ""))
    return rows


def multi_objective_problem(name: str) -> str:
    """Why searcher ``name`` cannot search several objectives (``--objectives``); '' when it can."""
    factory = _REGISTRY.get(name.partition(":")[0])
    if factory is None or getattr(factory, "multi_objective", False):
        return ""  # an unknown name is refused by its own check
    able = [n for n, f in _REGISTRY.items() if getattr(f, "multi_objective", False)]
    return f"{name} searches one objective under a budget; with --objectives use one of {', '.join(able)}"


def make_searcher(name: str, **options: Any) -> Searcher:
    """The searcher registered as ``name``, given the ``options`` its factory takes (``agent`` for
    the RL searchers); options it does not take are ignored."""
    base, colon, argument = name.partition(":")
    if colon and base in _WITH_ARGUMENT:  # portfolio:tpe,knapsack
        return _WITH_ARGUMENT[base](argument, **options)
    if name not in _REGISTRY:
        raise UserError(f"unknown searcher {name!r}; choose one of {', '.join(_REGISTRY)}")
    factory = _REGISTRY[name]
    accepted = inspect.signature(factory).parameters
    if getattr(factory, "hands_on_options", False):  # a portfolio hands them on to its members
        return factory(**options)
    return factory(**{k: v for k, v in options.items() if k in accepted})


__all__ = [
    "BASELINES",
    "DEFAULT_SEARCHER",
    "AMCSearcher",
    "CmaEsSearcher",
    "EmoPmsSearcher",
    "GPSearcher",
    "GlobalSearcher",
    "GreedyKnapsackSearcher",
    "KnapsackSearcher",
    "NSGA2Searcher",
    "OptunaSearcher",
    "PortfolioConfig",
    "PortfolioSearcher",
    "PuRLSearcher",
    "QMCSearcher",
    "TPESearcher",
    "RandomSearcher",
    "SearchContext",
    "Searcher",
    "SearcherInfo",
    "UniformSearcher",
    "make_searcher",
    "multi_objective_problem",
    "policy_key",
    "register",
    "searcher_names",
    "searcher_table",
]
