"""pymoo pieces shared by the evolutionary searchers (``emo``, ``emo-pms``): integer genes, an
algorithm the runner (not pymoo) stops, and telling a population its results.

Genes are choice indices (ordered from no pruning to the most); SBX crossover and polynomial
mutation work on floats and round back (``RoundingRepair``), as pymoo recommends for integers.
Every operator draws from the random state pymoo seeds in ``setup``, so runs repeat exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

ALGORITHMS = ("nsga2", "nsga3")


def integer_problem(xl: np.ndarray | int, xu: np.ndarray, n_obj: int, n_ieq_constr: int = 0) -> Any:
    """A pymoo problem over integer genes in ``[xl, xu]`` that is never evaluated by pymoo itself:
    results come back through ``tell_population``."""
    from pymoo.core.problem import Problem

    xl = np.broadcast_to(np.asarray(xl, dtype=float), (len(xu),)).copy()
    return Problem(n_var=len(xu), n_obj=n_obj, n_ieq_constr=n_ieq_constr, xl=xl,
                   xu=np.asarray(xu, dtype=float), vtype=int)


def row_repair(fix: Callable[[np.ndarray], np.ndarray]) -> Any:
    """A pymoo ``Repair`` that applies ``fix`` to each individual's (rounded) integer genes; pymoo
    applies it to the first population and to every generation's offspring."""
    from pymoo.core.repair import Repair

    class RowRepair(Repair):
        def _do(self, problem, X, **kwargs):
            return np.array([fix(np.round(np.asarray(x, dtype=float))) for x in X], dtype=float)

    return RowRepair()


def make_algorithm(name: str, pop_size: int, n_obj: int, sampling: Any, repair: Any = None) -> Any:
    """NSGA-II or NSGA-III with integer-rounded SBX and PM, duplicates eliminated, and ``repair``
    (a pymoo ``Repair``) applied to every new individual when given."""
    from pymoo.operators.crossover.sbx import SBX
    from pymoo.operators.mutation.pm import PM
    from pymoo.operators.repair.rounding import RoundingRepair

    operators = dict(
        sampling=sampling,
        crossover=SBX(prob=0.9, eta=15, vtype=float, repair=RoundingRepair()),
        mutation=PM(eta=20, vtype=float, repair=RoundingRepair()),
        eliminate_duplicates=True,
        repair=repair,
    )
    if name == "nsga2":
        from pymoo.algorithms.moo.nsga2 import NSGA2

        return NSGA2(pop_size=pop_size, **operators)
    from pymoo.algorithms.moo.nsga3 import NSGA3
    from pymoo.util.ref_dirs import get_reference_directions

    ref_dirs = get_reference_directions("das-dennis", n_obj, n_partitions=pop_size - 1 if n_obj > 1 else 1)
    return NSGA3(ref_dirs=ref_dirs, pop_size=pop_size, **operators)


def start(algorithm: Any, problem: Any, seed: int) -> Any:
    """``algorithm`` set up on ``problem`` with ``seed``; whoever drives it decides when it ends."""
    from pymoo.termination.max_gen import MaximumGenerationTermination

    algorithm.setup(problem, termination=MaximumGenerationTermination(10**9), seed=seed, verbose=False)
    return algorithm


def tell_population(algorithm: Any, pop: Any, F: np.ndarray, G: np.ndarray | None = None) -> None:
    """Give the individuals of ``pop`` (from ``algorithm.ask()``) their objectives ``F`` and
    constraints ``G`` (``<= 0`` feasible), and let the algorithm select the next generation."""
    from pymoo.core.evaluator import Evaluator
    from pymoo.problems.static import StaticProblem

    values = {"F": np.asarray(F, dtype=float)}
    if G is not None:
        values["G"] = np.asarray(G, dtype=float)
    Evaluator().eval(StaticProblem(algorithm.problem, **values), pop)
    algorithm.tell(infills=pop)
