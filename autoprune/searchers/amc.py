"""``amc``: AMC (He et al., ECCV 2018) on stable-baselines3, inside the runner's ask/tell loop.

An episode visits the space's variables in network order; at each step a DDPG agent (``--agent
td3|sac`` for the others) picks a keep ratio from AMC's state (``_rl.PruningMDP``), clipped so the
policy meets the budget by the cost estimate. The finished policy is one trial; its score is the
reward of every step of the episode (discount 1, a moving-average baseline). Episodes are played
in ``ask`` (they need no result until their end), learnt from in ``tell`` and trained on at the
next ``ask``: the runner stays the only owner of the loop, no thread waits on a trial, and with
``--workers N`` ``ask(N)`` plays N episodes from the same actor with their own noise.

Defaults are AMC's, scaled to the trial budget (``AMCConfig``); the agent, its replay buffer and
its baseline are saved under ``<run dir>/agent`` after every tell, and ``--resume`` continues them.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autoprune.errors import UserError
from autoprune.searchers._base import Searcher, policy_key
from autoprune.searchers._rl import Episode, PruningMDP
from autoprune.space import Policy
from autoprune.study import COMPLETE, REJECTED, Trial

DEFAULT_EPISODES = 40  # planned episodes when the context does not say how many trials the run has
AGENTS = ("ddpg", "td3", "sac")


@dataclass(frozen=True)
class AMCConfig:
    """AMC's hyper-parameters, scaled from the paper's 100 warm-up + 800 episodes to the budget.

    Attributes:
        agent: ``ddpg`` (AMC), ``td3`` or ``sac`` (SAC explores by its own entropy, without noise).
        hidden: units of the actor's and critic's two hidden layers (AMC: 300).
        actor_lr, critic_lr: AMC's are 1e-4 and 1e-3 over ~800 x T updates; a budget of tens of
            episodes allows about a hundred times fewer, so the actor's rate is the critic's
            (on the toy problem, 5 seeds at 40 trials: mean gap 0.0096 against 0.0130 with 1e-4).
        tau: target-network averaging (AMC: 0.01).
        batch_size: AMC's 64.
        replay_episodes: the buffer holds this many episodes (AMC: 100 x the number of layers).
        warmup_share: share of the planned episodes played with random actions before the first
            update (AMC: 100 of 900; here a quarter, at least 3 episodes, so a budget of tens of
            trials still gives the critic a few dozen transitions of random play).
        noise_start, noise_end: exploration noise, a normal truncated to the keep range, with
            ``sigma = noise_start * decay**k`` after k learning episodes (AMC: 0.5 * 0.95**k, which
            reaches 0.05 after 45 episodes); the decay is chosen so that sigma reaches
            ``noise_end`` when the planned episodes end.
        updates_per_step: gradient steps per transition learnt (AMC: 1 per transition after the
            warm-up, over ~800 episodes; with tens of episodes more updates per episode are needed,
            and each costs milliseconds against seconds to score a trial).
        baseline_alpha: weight of a new reward in the moving-average baseline (AMC's 0.5, there of
            each update's batch mean; here of each episode's reward). It is subtracted from the
            stored rewards at every update, as in AMC, not when they are stored.
        episodes: planned episodes (default: the run's ``--trials``, else ``DEFAULT_EPISODES``).
        reward: ``error`` (AMC's R_err, the accuracy under the hard budget) or ``flops``
            (R_FLOPs = -error * log(cost), AMC's reward without a hard budget).
        retries: redraws (with doubled noise) of an episode that repeats a known policy, before a
            random new policy from the feasible box is proposed in its place.
    """

    agent: str = "ddpg"
    hidden: int = 300
    actor_lr: float = 1e-3
    critic_lr: float = 1e-3
    tau: float = 0.01
    batch_size: int = 64
    replay_episodes: int = 100
    warmup_share: float = 0.25
    noise_start: float = 0.5
    noise_end: float = 0.05
    updates_per_step: int = 4
    baseline_alpha: float = 0.5
    episodes: int | None = None
    reward: str = "error"
    retries: int = 10


def _agent_module():
    try:
        return importlib.import_module("autoprune.searchers._rl_agent")
    except ImportError as exc:
        raise UserError(f"the RL searchers need stable-baselines3 ({exc.name} is missing): pip install -e '.[rl]'") from None


class AMCSearcher(Searcher):
    """AMC's DDPG over per-variable keep ratios, with the budget met by the action wall."""

    name = "amc"
    gamma = 1.0

    def __init__(self, config: AMCConfig | None = None, *, agent: str | None = None) -> None:
        super().__init__()
        config = config or AMCConfig()
        if agent is not None:
            config = AMCConfig(**{**asdict(config), "agent": agent})
        if config.agent not in AGENTS:
            raise UserError(f"unknown --agent {config.agent!r}; choose one of {', '.join(AGENTS)}")
        if config.reward not in ("error", "flops"):
            raise UserError(f"unknown AMC reward {config.reward!r}; choose error or flops")
        self.config = config

    # -- set-up and persistence ----------------------------------------------------------------------
    def _setup(self) -> None:
        rl = _agent_module()
        ctx, cfg = self.context, self.config
        self.mdp = PruningMDP(ctx)
        self.env = rl.PruningEnv(self.mdp)
        self.folder = Path(ctx.run_dir) / "agent" if ctx.run_dir is not None else None
        self._pending: dict[tuple, Episode] = {}
        self._batch: list[tuple] = []
        state: dict[str, Any] = {}
        if self.folder is not None and (self.folder / "state.json").is_file():
            self.agent, state = rl.Agent.load(self.folder, cfg.agent, self.env)
            if state.get("fingerprint") != ctx.space.fingerprint or state.get("agent") != cfg.agent:
                raise UserError(f"{self.folder} holds a {state.get('agent')} agent for another space or agent; "
                                f"resume with --agent {state.get('agent')} or use a new --run-dir")
        else:
            buffer = cfg.replay_episodes * self.mdp.steps
            agent_cfg = rl.AgentConfig(cfg.agent, cfg.hidden, cfg.actor_lr, cfg.critic_lr, cfg.tau, self.gamma, buffer)
            self.agent = rl.Agent.create(agent_cfg, self.env, ctx.seed)
        self.learned: set[int] = set(state.get("learned", []))  # ledger trials the agent has learnt from
        self.episodes = int(state.get("episodes", 0))  # episodes learnt from
        self.played = int(state.get("played", 0))  # episodes played (each draws its own noise)
        self.owed = int(state.get("owed", 0))  # gradient steps due at the next ask
        self.baseline = state.get("baseline")
        self.rewards: list[float] = list(state.get("rewards", []))
        # the run's trials; where they are fewer than the episodes already learnt (a resumed run
        # asked for that many more), those plus the episodes
        trials = ctx.trials if ctx.trials is None or ctx.trials > self.episodes else self.episodes + ctx.trials
        self.planned = cfg.episodes or trials or DEFAULT_EPISODES
        self.warmup = int(state.get("warmup") or max(3, round(cfg.warmup_share * self.planned)))
        self.decay = (cfg.noise_end / cfg.noise_start) ** (1.0 / max(1, self.planned - self.warmup))

    def _save(self) -> None:
        if self.folder is None:
            return
        self.agent.save(self.folder, {
            "agent": self.config.agent, "fingerprint": self.context.space.fingerprint, "learned": sorted(self.learned),
            "episodes": self.episodes, "warmup": self.warmup, "played": self.played, "owed": self.owed, "baseline": self.baseline,
            "rewards": self.rewards, "config": asdict(self.config),
        })

    # -- playing ---------------------------------------------------------------------------------------
    @property
    def warming_up(self) -> bool:
        """Still in AMC's random warm-up episodes (a portfolio judges a member only after them)."""
        return getattr(self, "warmup", 0) > getattr(self, "episodes", 0)

    def noise(self) -> float:
        """The exploration noise of the next learning episode."""
        return self.config.noise_start * self.decay ** max(0, self.episodes - self.warmup)

    def _play(self, rng: np.random.Generator, scale: float) -> Episode:
        if self.episodes < self.warmup:  # AMC's warm-up: uniform random actions
            return self.mdp.play(lambda t, obs: float(rng.uniform(-1.0, 1.0)))
        sac = self.config.agent == "sac"
        sigma = 2.0 * self.noise() * scale  # the keep range spans 2 in action units
        seed = int(rng.integers(2**31))

        def choose(t: int, obs: np.ndarray) -> float:
            mean = self.agent.act(obs, deterministic=not sac, seed=seed + t)
            return mean if sac and scale == 1.0 else truncated_normal(rng, mean, sigma, -1.0, 1.0)

        return self.mdp.play(choose)

    def _wanted(self, key: tuple) -> bool:
        return key not in self._pending and key not in self._batch and key not in self._seen

    def play_episode(self) -> Episode | None:
        """A new episode whose policy is new (retried with more noise, then a random feasible draw)."""
        rng = np.random.default_rng([self.context.seed, self.played])
        self.played += 1
        for attempt in range(self.config.retries):
            episode = self._play(rng, 2.0**attempt)
            if self._wanted(policy_key(episode.policy)):
                return episode
        draws = self.context.sample_within_budget(rng, 1, lambda p: self._wanted(policy_key(p)), 2_000)
        return self.mdp.replay(self.context.space.encode(draws[0])) if draws else None

    def _train(self) -> None:
        if self.owed and self.episodes >= self.warmup:
            self.agent.train(self.owed, self.config.batch_size, self.baseline or 0.0)
            self.owed = 0
            self._save()

    def _ask(self, n: int) -> list[Policy]:
        self._train()
        self.mdp.forget_costs()  # a tracking estimate has moved since the last ask
        self._batch = []
        out = []
        for _ in range(n):
            episode = self.play_episode()
            if episode is None:
                break
            key = policy_key(episode.policy)
            self._pending[key] = episode
            self._batch.append(key)
            out.append(episode.policy)
        return out

    # -- learning ----------------------------------------------------------------------------------------
    def reward(self, trial: Trial) -> float:
        """AMC's reward of a finished episode; a policy measured over budget gets the worst so far."""
        if trial.state == REJECTED or trial.accuracy is None:
            return min(self.rewards, default=0.0)
        if self.config.reward == "flops":
            cost = float(trial.metrics.get(self.context.metric, self.context.limit))
            return -(1.0 - trial.accuracy) * math.log(max(cost, 1e-12))
        return trial.accuracy

    def transitions(self, episode: Episode, trial: Trial, reward: float) -> list[tuple[int, float, bool, bool]]:
        """(step, raw reward, done, baseline applies) per step: AMC gives the episode's reward to
        every step and ends each transition there (the target is the reward itself: with discount
        1 and no reward before the end, the return of every step is the episode's reward)."""
        return [(t, reward, True, True) for t in range(self.mdp.steps)]

    def learns_from(self, trial: Trial) -> bool:
        """An episode reward needs a scored or rejected trial judged against the budget (a probe,
        scored outside the budget, is not an episode)."""
        return trial.state in (COMPLETE, REJECTED) and trial.constraint is not None

    def _tell(self, trial: Trial) -> None:
        key = policy_key(trial.policy)
        episode = self._pending.pop(key, None)
        if trial.number in self.learned or not self.learns_from(trial):
            return
        if episode is None:  # the ledger's or another searcher's policy: learn from it too
            episode = self.mdp.replay(self.context.space.encode(trial.policy))
        reward = self.reward(trial)
        for t, raw, done, marked in self.transitions(episode, trial, reward):
            self.agent.add(episode.observations[t], episode.observations[t + 1], float(episode.actions[t]), raw, done,
                           marked)
        if self.episodes >= self.warmup:  # AMC updates from the first episode after the warm-up on
            self.owed += self.config.updates_per_step * self.mdp.steps
        self.rewards.append(reward)
        a = self.config.baseline_alpha
        self.baseline = reward if self.baseline is None else self.baseline + a * (reward - self.baseline)
        self.learned.add(trial.number)
        self.episodes += 1
        self._save()


def truncated_normal(rng: np.random.Generator, mean: float, sigma: float, low: float, high: float) -> float:
    """A draw of N(mean, sigma) truncated to [low, high] (by rejection; the mean is inside)."""
    mean = float(np.clip(mean, low, high))
    if sigma <= 0:
        return mean
    for _ in range(100):
        x = rng.normal(mean, sigma)
        if low <= x <= high:
            return float(x)
    return float(rng.uniform(low, high))
