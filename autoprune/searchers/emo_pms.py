"""``emo-pms``: EMO-PMS (Shang et al. 2023), divide-and-conquer evolutionary multi-objective pruning.

1. *Divide* the network into sub-networks: the space's stages, or runs of consecutive slots
   where the stages divide nothing (``_stages.divide``).
2. *Conquer* each with its own NSGA-II on pymoo (ask/tell, integer genes, seeded through pymoo's
   random state), objectives (feature error, cost share), every other sub-network dense. No trial
   is spent here: a pluggable stage scorer rates candidates, by default how well the pruned
   stage, briefly fitted, reproduces the dense features from the dense previous stage's features
   (``_features.FeatureReconstruction``, the paper's cross-network feature constraint).
3. *Merge* the stages' points into whole-network policies ranked by summed impairment, keeping
   those the estimate puts within the budget (``_stages.merge``), and hand them out through
   ``ask`` best first: they are the trials this searcher spends, at the run's full fidelity.
   With ``--objectives`` (a front, not one budget) the merged candidates are instead spread along
   the merged front of impairment against estimated cost (``_stages.merge_front``), and the
   whole-network ``emo`` that follows searches the front.

When the merged candidates run out before the trial budget (a small space, a tight budget, a
resume with more trials), whole-network ``emo`` continues, seeded with every trial so far (its
first generation starts from the best of them). The sub-searches run at the first ``ask`` and
depend only on the seed, so a resumed run rebuilds the same ranking and skips what the ledger
holds; trials of other searchers (a portfolio, a resume) are taken like any other.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from typing import Any

from autoprune.errors import UserError
from autoprune.searchers._base import Searcher, policy_key
from autoprune.searchers._pymoo import ALGORITHMS
from autoprune.searchers._stages import (
    Archive,
    Merged,
    StageScorer,
    divide,
    merge,
    merge_front,
    sub_search,
)
from autoprune.searchers.emo import EmoSearcher
from autoprune.searchers.portfolio import _QuietEstimate
from autoprune.space import Policy
from autoprune.study import Trial


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class EmoPmsSearcher(Searcher):
    """EMO-PMS: per-stage NSGA-II sub-searches scored by feature reconstruction, fronts merged by impairment.

    Args:
        scorer: the stage scorer, ``(ctx, sub-network, policies) -> scores`` (a ``StageScore``
            or a float each, lower is better); None: ``FeatureReconstruction()`` on the dense
            model and the calibration images.
        pop_size: individuals per sub-search generation.
        generations: generations per sub-search (a sub-network with at most ``2 * pop_size``
            candidates is enumerated instead).
        candidates: merged candidates to hand out; None: half the run's trial budget (10 without
            one), leaving the other half to whole-network ``emo`` seeded with their results.
        run: variables per sub-network where the stages divide nothing.
        algorithm: what continues after the merged candidates (``emo``'s ``nsga2`` or ``nsga3``).
        log: where the sub-searches report progress (stderr by default).
    """

    name = "emo-pms"
    multi_objective = True  # --objectives: merged candidates spread along the front, then emo's front search

    def __init__(self, scorer: StageScorer | None = None, pop_size: int = 16, generations: int = 8,
                 candidates: int | None = None, run: int = 4, algorithm: str = "nsga2",
                 log: Callable[[str], None] | None = None) -> None:
        super().__init__()
        for option, value, least in (("pop_size", pop_size, 4), ("generations", generations, 1), ("run", run, 1)):
            if not isinstance(value, int) or value < least:
                raise UserError(f"emo-pms {option} must be an integer >= {least}, got {value!r}")
        if candidates is not None and (not isinstance(candidates, int) or candidates < 1):
            raise UserError(f"emo-pms candidates must be an integer >= 1 or None, got {candidates!r}")
        if algorithm not in ALGORITHMS:
            raise UserError(f"unknown emo-pms algorithm {algorithm!r}; choose one of {', '.join(ALGORITHMS)}")
        if scorer is not None and not callable(scorer):
            raise UserError(f"emo-pms scorer must be callable (ctx, sub-network, policies), got {scorer!r}")
        self.scorer, self.pop_size, self.generations = scorer, pop_size, generations
        self.candidates, self.run, self.algorithm = candidates, run, algorithm
        self.log = log or _stderr

    def _setup(self) -> None:
        self.archives: list[Archive] | None = None
        self.merged: list[Merged] = []
        self._next = 0  # the next merged candidate to hand out
        self._rank: dict[tuple, int] = {}
        self._emo: EmoSearcher | None = None
        self.sub_evaluations = 0  # stage-scorer calls, all sub-searches together
        # Kept widths of every policy asked or told -> its trial once told (None while it runs),
        # and the emo children with those widths waiting for it: policies whose ratios round to
        # the same widths are one network, measured once.
        self._networks: dict[tuple, Trial | None] = {}
        self._twins: dict[tuple, list[Policy]] = {}

    # -- steps 1-3: divide, sub-search, merge ------------------------------------------------------

    def _prepare(self) -> None:
        if self.archives is not None:
            return
        ctx = self.context
        scorer = self.scorer
        if scorer is None and (ctx.model is None or ctx.calibration is None):
            # A problem without data (the toy): no features to score stages by, so no merge.
            self.archives, self.merged = [], []
            self.log("emo-pms: no model or calibration images to score sub-networks; whole-network emo instead")
            return
        if scorer is None:
            from autoprune.searchers._features import FeatureReconstruction

            scorer = self.scorer = FeatureReconstruction()
        box = ctx.feasible_box()
        lower = box if box is not None else [0] * len(ctx.space.variables)
        self.archives = []
        for index, subnet in enumerate(divide(ctx.space, self.run)):
            started = time.perf_counter()
            archive = sub_search(ctx, subnet, scorer, lower=[lower[i] for i in subnet.variables],
                                 pop_size=self.pop_size, generations=self.generations, seed=ctx.seed + 7919 * index)
            self.archives.append(archive)
            self.sub_evaluations += len(archive.points)
            how = f"{archive.generations} generations" if archive.generations else "enumerated"
            self.log(f"emo-pms: sub-network {subnet.name} ({len(subnet.variables)} variables): "
                     f"{len(archive.points)} candidates scored, {how}, {time.perf_counter() - started:.1f} s")
        k = self.candidates or max(1, (ctx.trials or 20) // 2)
        self.merged = (merge_front if ctx.objectives else merge)(ctx, self.archives, k)
        self._rank = {policy_key(m.policy): i for i, m in enumerate(self.merged)}
        where = "spread along the merged front" if ctx.objectives else "within the budget"
        self.log(f"emo-pms: {len(self.merged)} merged candidates {where} (of {k} wanted)")

    # -- ask/tell ----------------------------------------------------------------------------------

    def _ask(self, n: int) -> list[Policy]:
        self._prepare()
        out: list[Policy] = []
        while len(out) < n and self._next < len(self.merged):
            policy = self.merged[self._next].policy
            self._next += 1
            if self.is_new(policy) and self._network(policy) not in self._networks:
                self._networks[self._network(policy)] = None
                out.append(policy)
        if len(out) < n:
            out += self._continue(n - len(out))
        return out

    def _network(self, policy: Policy) -> tuple:
        return tuple(sorted(self.context.space.kept_widths(policy).items()))

    def _continue(self, n: int) -> list[Policy]:
        """Whole-network ``emo``, seeded with every trial told so far; a child whose kept widths
        equal a measured trial's is told that trial's result instead of becoming a trial."""
        if self._emo is None:
            ctx = self.context
            if getattr(ctx.estimate, "observe", None) is not None:  # this searcher feeds it already
                ctx = dataclasses.replace(ctx, estimate=_QuietEstimate(ctx.estimate))
            self._emo = EmoSearcher(self.algorithm)
            self._emo.setup(ctx)
            for trial in self.told:
                self._emo.tell(trial)
            if self.merged:
                self.log(f"emo-pms: merged candidates used up; whole-network emo continues from {len(self.told)} trials")
        out: list[Policy] = []
        for _ in range(self.max_twin_rounds):
            proposals = self._emo.ask(n - len(out))
            for policy in proposals:
                network = self._network(policy)
                if not self.is_new(policy):
                    continue  # still running: emo gets its result when it is told
                if network not in self._networks:
                    self._networks[network] = None
                    out.append(policy)
                elif (twin := self._networks[network]) is not None:  # the same network, measured
                    self._emo.tell(dataclasses.replace(twin, policy=policy))
                else:
                    self._twins.setdefault(network, []).append(policy)
            if len(out) == n or not proposals:
                break
        return out

    # Rounds of emo proposals per ask whose every child is a twin of a measured network.
    max_twin_rounds = 50

    def _tell(self, trial: Trial) -> None:
        network = self._network(trial.policy)
        self._networks[network] = trial  # a failed one too: its twins would fail alike
        if self._emo is not None:
            self._emo.tell(trial)
            for twin in self._twins.pop(network, []):
                self._emo.tell(dataclasses.replace(trial, policy=twin))

    def trial_attrs(self, policy: Policy) -> dict[str, Any]:
        """The merged candidate's rank and predicted impairment, for reading the ledger."""
        rank = self._rank.get(policy_key(policy))
        if rank is None:
            return {"emo_pms_step": "emo"} if self._emo is not None else {}
        return {"emo_pms_step": "merged", "emo_pms_rank": rank, "emo_pms_impairment": self.merged[rank].impairment}
