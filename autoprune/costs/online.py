"""A cheap cost estimate that follows what the trials actually measure.

The latency lookup table is profiled and calibrated once per device, but the latency a search
measures drifts with the load on the machine and with what the table leaves out. Searchers
screen proposals with the estimate before any trial is spent; an estimate that reads low lets
through policies that are then built, measured and rejected over budget (most of the default
run's proposals were, before this). Every measured trial is an observation of the estimate's
error, so the estimate is rescaled by the median ratio measured / estimated of recent trials.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Callable

from autoprune.space import Policy


class TrackedEstimate:
    """``raw(policy) * factor``, where ``factor`` is the median of recent measured/raw ratios.

    The factor stays 1 until ``min_observations`` trials were measured, and while it is within
    ``tolerance`` of 1 (a noise band, so a well-calibrated table is used as it is). Only the last
    ``window`` observations count, so the estimate follows the machine's current state.
    """

    def __init__(
        self,
        raw: Callable[[Policy], float | None],
        *,
        min_observations: int = 3,
        window: int = 20,
        tolerance: float = 0.03,
    ) -> None:
        self.raw = raw
        self.min_observations = min_observations
        self.tolerance = tolerance
        self._ratios: deque[float] = deque(maxlen=window)

    def __call__(self, policy: Policy) -> float | None:
        value = self.raw(policy)
        return None if value is None else value * self.factor

    @property
    def factor(self) -> float:
        if len(self._ratios) < self.min_observations:
            return 1.0
        factor = statistics.median(self._ratios)
        return 1.0 if abs(factor - 1.0) <= self.tolerance else factor

    @property
    def observations(self) -> int:
        return len(self._ratios)

    def observe(self, policy: Policy, measured: float) -> None:
        """Record one trial's measured cost of ``policy``."""
        estimated = self.raw(policy)
        if estimated is not None and estimated > 0 and measured > 0:
            self._ratios.append(float(measured) / float(estimated))
