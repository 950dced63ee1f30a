"""A cheap cost estimate that follows what the trials actually measure.

The latency lookup table is profiled and calibrated once per device, but the latency a search
measures drifts with the load on the machine and with what the table leaves out. Searchers
screen proposals with the estimate before any trial is spent; an estimate that reads low lets
through policies that are then built, measured and rejected over budget (most of the default
run's proposals were, before this). Every measured trial is an observation of the estimate's
error, so the estimate is rescaled by the median ratio measured / estimated of recent trials.

The median is not enough when the table's error varies from policy to policy: a searcher that
screens thousands of draws keeps exactly the ones the table under-states most, so most of what
it proposes near the budget measures over it (random search on ResNet-20 at 0.3 of dense latency
had 148 of 153 proposals rejected). Given the limit, the estimate also learns a margin from the
outcomes of the proposals it let through: each one rejected over budget raises it, each one
within budget lowers it, so it settles where about ``target_rejection`` of proposals are
rejected (a quantile tracker in the sense of stochastic approximation).
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Callable

from autoprune.space import Policy


class TrackedEstimate:
    """``raw(policy) * factor``: the median of recent measured/raw ratios, times a learnt margin.

    The median part stays 1 until ``min_observations`` trials were measured, and while it is within
    ``tolerance`` of 1 (a noise band, so a well-calibrated table is used as it is). Only the last
    ``window`` observations count, so the estimate follows the machine's current state. The margin
    (only with ``limit``) starts at 1, grows by ``step * (1 - target_rejection)`` in log space for
    each observation over ``limit`` and shrinks by ``step * target_rejection`` for each within it,
    never below 1 nor above ``max_margin``.
    """

    def __init__(
        self,
        raw: Callable[[Policy], float | None],
        *,
        min_observations: int = 3,
        window: int = 20,
        tolerance: float = 0.03,
        limit: float | None = None,
        target_rejection: float = 0.2,
        step: float = 0.1,
        max_margin: float = 2.0,
    ) -> None:
        self.raw = raw
        self.min_observations = min_observations
        self.tolerance = tolerance
        self.limit = limit
        self.target_rejection = target_rejection
        self.step = step
        self.max_log_margin = math.log(max_margin)
        self._ratios: deque[float] = deque(maxlen=window)
        self._log_margin = 0.0

    def __call__(self, policy: Policy) -> float | None:
        value = self.raw(policy)
        return None if value is None else value * self.factor

    def loose(self, policy: Policy) -> float | None:
        """The estimate without the margin: for bounds on where feasible policies can lie."""
        value = self.raw(policy)
        return None if value is None else value * self.median_factor

    @property
    def factor(self) -> float:
        return self.median_factor * self.margin

    @property
    def median_factor(self) -> float:
        if len(self._ratios) < self.min_observations:
            return 1.0
        factor = statistics.median(self._ratios)
        return 1.0 if abs(factor - 1.0) <= self.tolerance else factor

    @property
    def margin(self) -> float:
        return math.exp(self._log_margin)

    @property
    def observations(self) -> int:
        return len(self._ratios)

    def observe(self, policy: Policy, measured: float) -> None:
        """Record one trial's measured cost of ``policy``."""
        estimated = self.raw(policy)
        if estimated is None or estimated <= 0 or measured <= 0:
            return
        self._ratios.append(float(measured) / float(estimated))
        if self.limit is not None:
            over = float(measured) > self.limit
            change = self.step * ((1.0 - self.target_rejection) if over else -self.target_rejection)
            self._log_margin = min(max(self._log_margin + change, 0.0), self.max_log_margin)
