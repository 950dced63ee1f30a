"""Search families behind one ask/tell interface, and the name registry used by the CLI."""

from __future__ import annotations

from collections.abc import Callable

from autoprune.errors import UserError
from autoprune.searchers._base import SearchContext, Searcher, policy_key
from autoprune.searchers.baselines import GlobalSearcher, RandomSearcher, UniformSearcher
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
    "portfolio": PortfolioSearcher,
}
DEFAULT_SEARCHER = "tpe"
# Names that take an argument after a colon: ``portfolio:tpe,knapsack``.
_WITH_ARGUMENT: dict[str, Callable[[str], Searcher]] = {
    "portfolio": lambda spec: PortfolioSearcher(PortfolioConfig.from_spec(spec)),
}


def register(name: str, factory: Callable[[], Searcher]) -> None:
    """Make a searcher available by name to the CLI, study recipes and the benchmark."""
    _REGISTRY[name] = factory


def searcher_names() -> list[str]:
    return list(_REGISTRY)


def make_searcher(name: str) -> Searcher:
    base, colon, argument = name.partition(":")
    if colon and base in _WITH_ARGUMENT:  # portfolio:tpe,knapsack
        return _WITH_ARGUMENT[base](argument)
    if name not in _REGISTRY:
        raise UserError(f"unknown searcher {name!r}; choose one of {', '.join(_REGISTRY)}")
    return _REGISTRY[name]()


__all__ = [
    "DEFAULT_SEARCHER",
    "CmaEsSearcher",
    "GPSearcher",
    "GlobalSearcher",
    "GreedyKnapsackSearcher",
    "KnapsackSearcher",
    "NSGA2Searcher",
    "OptunaSearcher",
    "PortfolioConfig",
    "PortfolioSearcher",
    "QMCSearcher",
    "TPESearcher",
    "RandomSearcher",
    "SearchContext",
    "Searcher",
    "UniformSearcher",
    "make_searcher",
    "policy_key",
    "register",
    "searcher_names",
]
