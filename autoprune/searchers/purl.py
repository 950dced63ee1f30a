"""``purl``: PuRL (Gupta et al. 2020), AMC's episode with a reward at every step.

After each step of an episode the partly pruned network gets a cheap score: a probe trial at
fidelity ``bn`` (adaptive-BN recalibration, then accuracy on the validation split; another with
``--probe-fidelity``), scored
outside the budget and not counted against ``--trials``. The episode ends with its policy's
full-fidelity trial. An episode of a space with T variables costs T - 1 probes and one trial.

Undecided variables. A probe needs a whole network, so during an episode the variables not yet
decided take one shared ratio: the least pruning, the same for all of them, that the estimate
puts within budget (``PruningMDP.fill``). Every probe is then a network at the budget, like the
final one, so its score says how good the decisions so far are given that the budget must still
be met. Left dense, early probes would score high whatever was decided (and their scores would
fall step by step only because pruning accumulates); at their most pruned choice, every probe
would score near chance.

Rewards. Step t's reward is the change in probe score it caused, ``phi_t - phi_{t-1}`` (``phi_-1
= 0``), and the last step's is the trial's reward less the last probe's score. This is
potential-based shaping (Ng et al. 1999): the rewards of an episode sum to its final reward, so
the cheap scores cannot change which policy is best, yet every step has a signal of its own. The
critic bootstraps across steps (discount 1), the baseline applies to the final reward only.
"""

from __future__ import annotations

from autoprune.searchers._base import policy_key
from autoprune.searchers._rl import Episode
from autoprune.searchers.amc import AMCConfig, AMCSearcher
from autoprune.space import Policy
from autoprune.study import COMPLETE, Trial


class PuRLSearcher(AMCSearcher):
    """AMC's agent and action wall, with a probe score after every step (``probe_fidelity``,
    ``--probe-fidelity``: ``bn`` by default, as in PuRL; ``kd:N`` where networks pruned to the
    budget score near chance before any training, as ResNet-20 at half its latency does)."""

    name = "purl"

    def __init__(self, config: AMCConfig | None = None, *, agent: str | None = None, probe_fidelity: str = "bn") -> None:
        super().__init__(config, agent=agent)
        self.probe_fidelity = probe_fidelity

    def _setup(self) -> None:
        super()._setup()
        self._queue: list[Policy] = []  # probes and trials of played episodes, in the order to ask
        self._probes: set[tuple] = set()  # keys of every probe policy (asked, queued or replayed)
        self._scores: dict[tuple, float] = {}  # probe scores told
        self._plans: dict[tuple, list[tuple | None]] = {}  # final policy -> its probe per step (None: none)

    def is_probe(self, policy: Policy) -> bool:
        """A policy with undecided variables filled in, scored at ``probe_fidelity`` outside the budget."""
        return policy_key(policy) in self._probes

    def _wanted(self, key: tuple) -> bool:
        return super()._wanted(key) and key not in self._probes

    def _ask(self, n: int) -> list[Policy]:
        self._train()
        self.mdp.forget_costs()
        self._batch = [policy_key(p) for p in self._queue]
        while len(self._queue) < n:
            episode = self.play_episode()
            if episode is None:
                break
            self._plan(episode)
        out, self._queue = self._queue[:n], self._queue[n:]
        return out

    def _plan(self, episode: Episode) -> None:
        """Queue the episode's probes (one per step but the last) and then its trial."""
        final = policy_key(episode.policy)
        plan: list[tuple | None] = []
        for t in range(self.mdp.steps - 1):
            probe = self.mdp.policy(self.mdp.fill(episode.indices[: t + 1]))
            key = policy_key(probe)
            if key == final or (key not in self._probes and key in self._seen):
                plan.append(None)  # already a full-fidelity trial: no probe score to compare with
                continue
            if key not in self._probes:
                self._probes.add(key)
                self._queue.append(probe)
                self._batch.append(key)
            plan.append(key)
        self._plans[final] = plan
        self._pending[final] = episode
        self._queue.append(episode.policy)
        self._batch.append(final)

    def learns_from(self, trial: Trial) -> bool:
        return super().learns_from(trial) and policy_key(trial.policy) not in self._probes

    def _tell(self, trial: Trial) -> None:
        key = policy_key(trial.policy)
        if key in self._probes or (trial.fidelity == self.probe_fidelity and trial.constraint is None):
            self._probes.add(key)
            if trial.state == COMPLETE and trial.accuracy is not None:
                self._scores[key] = trial.accuracy
            return
        super()._tell(trial)

    def transitions(self, episode: Episode, trial: Trial, reward: float) -> list[tuple[int, float, bool, bool]]:
        """Shaped rewards: each step's change in probe score; the last step's final reward less the
        last probe's score. A step without a probe score (failed, or none) carries the previous."""
        plan = self._plans.pop(policy_key(episode.policy), None)
        if plan is None:  # a policy from the ledger: its probes, where their scores are known
            plan = [policy_key(self.mdp.policy(self.mdp.fill(episode.indices[: t + 1])))
                    for t in range(self.mdp.steps - 1)]
        out, previous = [], 0.0
        for t, key in enumerate(plan):
            phi = self._scores.get(key, previous) if key is not None else previous
            out.append((t, phi - previous, False, False))
            previous = phi
        out.append((self.mdp.steps - 1, reward - previous, True, True))
        return out
