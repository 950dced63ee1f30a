"""The stable-baselines3 side of the RL searchers: the episode as a gymnasium env, the agent, its
replay buffer and reward baseline, saved to and loaded from the run directory.

Imported only when ``amc``/``purl`` is set up (stable-baselines3 takes seconds to import).
SB3's ``learn()`` owns its loop, so it is never called: the searcher plays episodes through the
env with the agent's actor (``model.predict``), adds the transitions to ``model.replay_buffer``
once the runner has told the trial, and calls ``model.train`` itself (see ``docs/searchers.md``).
"""

from __future__ import annotations

import contextlib
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import DDPG, SAC, TD3
from stable_baselines3.common.logger import Logger

from autoprune.searchers._rl import FEATURES, PruningMDP

AGENTS = ("ddpg", "td3", "sac")


class PruningEnv(gym.Env):
    """One step per variable: the action is the keep ratio in [-1, 1], the observation AMC's state.

    The reward is always 0 here: it is the trial's score, which only the runner knows, and which
    the searcher adds to the transitions when the trial is told.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, mdp: PruningMDP) -> None:
        super().__init__()
        self.mdp = mdp
        self.observation_space = gym.spaces.Box(0.0, 1.0, (len(FEATURES),), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), dtype=np.float32)
        self.decided: list[int] = []

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.decided = []
        return self.mdp.observation(self.decided), {}

    def step(self, action):
        index = self.mdp.act(self.decided, float(np.asarray(action).reshape(-1)[0]))
        effective = self.mdp.to_action(len(self.decided), index)
        self.decided.append(index)
        done = len(self.decided) == self.mdp.steps
        return self.mdp.observation(self.decided), 0.0, done, False, {"index": index, "action": effective}


class _PerNetworkRates:
    """AMC's separate learning rates for the actor and the critic (SB3 has one schedule for all)."""

    rates: dict[str, float]

    def _update_learning_rate(self, optimizers) -> None:
        actor = self.actor.optimizer  # type: ignore[attr-defined]
        for optimizer in optimizers if isinstance(optimizers, list) else [optimizers]:
            for group in optimizer.param_groups:
                group["lr"] = self.rates["actor"] if optimizer is actor else self.rates["critic"]


class AMCDDPG(_PerNetworkRates, DDPG):
    pass


class AMCTD3(_PerNetworkRates, TD3):
    pass


class AMCSAC(_PerNetworkRates, SAC):
    pass


CLASSES = {"ddpg": AMCDDPG, "td3": AMCTD3, "sac": AMCSAC}


@dataclass(frozen=True)
class AgentConfig:
    """The agent's hyper-parameters, always taken from ``AMCConfig`` (whose defaults are AMC's,
    scaled to the trial budget and documented there), so none is defaulted twice."""

    kind: str
    hidden: int
    actor_lr: float
    critic_lr: float
    tau: float
    gamma: float
    buffer_size: int


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run with the global RNGs SB3 draws from (torch, numpy, random) seeded, one torch thread,
    and restore them after, so the agent is reproducible without disturbing anyone else."""
    state = torch.get_rng_state(), np.random.get_state(), random.getstate(), torch.get_num_threads()
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_rng_state(state[0])
        np.random.set_state(state[1])
        random.setstate(state[2])
        torch.set_num_threads(state[3])


class Agent:
    """An SB3 off-policy model used without ``learn()``: act, add transitions, train, save.

    Rewards are stored raw beside the buffer and written into it, less the current moving-average
    baseline where marked, just before each ``train`` (AMC subtracts the baseline at update time).
    """

    def __init__(self, model, raw: np.ndarray, marked: np.ndarray, seed: int) -> None:
        self.model, self.raw, self.marked, self.seed = model, raw, marked, seed
        model.set_logger(Logger(folder=None, output_formats=[]))

    @classmethod
    def create(cls, config: AgentConfig, env: PruningEnv, seed: int) -> Agent:
        if config.kind not in CLASSES:
            raise ValueError(f"agent must be one of {AGENTS}, got {config.kind!r}")
        kwargs: dict[str, Any] = {}
        if config.kind == "td3":
            kwargs = {"policy_delay": 2}
        with seeded(seed):
            model = CLASSES[config.kind](
                "MlpPolicy", env, learning_rate=config.critic_lr, buffer_size=config.buffer_size, learning_starts=0,
                tau=config.tau, gamma=config.gamma, device="cpu", seed=None, verbose=0,
                policy_kwargs={"net_arch": [config.hidden, config.hidden]}, **kwargs,
            )
        model.rates = {"actor": config.actor_lr, "critic": config.critic_lr}
        size = config.buffer_size
        return cls(model, np.zeros(size), np.zeros(size, dtype=bool), seed)

    @property
    def steps(self) -> int:
        """Transitions the agent was given, over its whole life (resumes included)."""
        return int(self.model.num_timesteps)

    @property
    def updates(self) -> int:
        return int(self.model._n_updates)

    def act(self, obs: np.ndarray, deterministic: bool, seed: int) -> float:
        with seeded(seed):
            action, _ = self.model.predict(obs, deterministic=deterministic)
        return float(np.asarray(action).reshape(-1)[0])

    def add(self, obs: np.ndarray, next_obs: np.ndarray, action: float, reward: float, done: bool, marked: bool) -> None:
        buffer = self.model.replay_buffer
        self.raw[buffer.pos], self.marked[buffer.pos] = reward, marked
        buffer.add(obs[None], next_obs[None], np.array([[action]], dtype=np.float32), np.array([reward]),
                   np.array([done]), [{}])
        self.model.num_timesteps += 1

    def train(self, gradient_steps: int, batch_size: int, baseline: float) -> None:
        buffer = self.model.replay_buffer
        filled = buffer.buffer_size if buffer.full else buffer.pos
        if gradient_steps <= 0 or filled == 0:
            return
        buffer.rewards[:filled, 0] = self.raw[:filled] - baseline * self.marked[:filled]
        with seeded(self.seed * 7_919 + self.updates):
            self.model.train(gradient_steps=gradient_steps, batch_size=batch_size)

    # -- persistence -------------------------------------------------------------------------------
    def save(self, folder: Path, extra: dict[str, Any]) -> None:
        """The model (weights, optimisers, step counts), the buffer, and the searcher's ``extra``."""
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save(folder / "agent.zip")
        self.model.save_replay_buffer(folder / "replay.pkl")
        state = {**extra, "seed": self.seed, "raw_rewards": self.raw.tolist(), "marked": self.marked.tolist()}
        tmp = folder / "state.json.tmp"
        tmp.write_text(json.dumps(state))
        tmp.replace(folder / "state.json")  # the state names what the two files above hold

    @classmethod
    def load(cls, folder: Path, kind: str, env: PruningEnv) -> tuple[Agent, dict[str, Any]]:
        state = json.loads((folder / "state.json").read_text())
        model = CLASSES[kind].load(folder / "agent.zip", env=env, device="cpu")
        model.load_replay_buffer(folder / "replay.pkl")
        agent = cls(model, np.array(state.pop("raw_rewards"), dtype=float),
                    np.array(state.pop("marked"), dtype=bool), int(state.pop("seed")))
        return agent, state
