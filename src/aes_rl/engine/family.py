"""The contract between the engine and a family of algorithms, and the `Setup` a program is
built from.

A `Family` is a record of pure functions the tick calls; every one of them is traced into the
tick. Its defaults are those of a family whose slots run ES members against a shared critic
(`engine.learn`): a family names only what it does differently. Its functions exchange named
records (`Draw`, `Ended`, `Learner`, in `engine.state`), not positional tuples. The engine
imports no family and no registry: `aes_rl.algorithms` (above both) pairs an algorithm with
its family, and `aes_rl.program` builds the `Setup` from the registry.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

from aes_rl import td3
from aes_rl.config import Config
from aes_rl.engine import learn
from aes_rl.engine.state import HParams, Rate
from aes_rl.envs import TimeLimit
from aes_rl.networks import ActorSpec, CriticSpec


class AlgorithmOptions(Protocol):
    """What the engine reads of a registry entry (`aes_rl.algorithms.Algorithm`)."""

    name: str
    actor_stage: bool
    chained: bool

    def strategy(self, cfg: Config, h: HParams) -> Any: ...

    def serial_critic(self, cfg: Config) -> bool: ...


@dataclasses.dataclass(frozen=True)
class Family:
    """A family of algorithms on the slot engine. `s` is the bound `Setup`.

    Required: how the first jobs are handed out (`start`), how free slots draw jobs (`draw`),
    the critic's target (`critic_target`) and what ended jobs do (`end_jobs`). The defaults
    are the ES families' (an ES over actors, a shared critic trained by a critic worker)."""

    name: str
    # (s, state, key) -> state with the first jobs handed out
    start: Callable
    # (s, state, free [W], key) -> (state, Draw)
    draw: Callable
    # (s, state, critic steps this tick) -> (policy, critic steps allowed); with a critic
    # worker: the steps a new job may start in (the job then runs to its end)
    critic_target: Callable
    # (s, state, done [W], k_phase, k_tell, k_jobs) -> (state, Ended)
    end_jobs: Callable
    staggered: bool = False  # stagger the slots' first episodes (cfg.stagger)
    joint_update: bool = False  # one env step and one joint update per tick (rates are 1)
    # (s, key, mu0) -> Learner
    init_learner: Callable = learn.shared_critic_learner
    # (s, mu0, key) -> the strategy's state (None: no ES)
    init_es: Callable = lambda s, mu0, key: None
    # (s, state, key) -> state after this tick's actor steps
    train_actors: Callable = learn.train_actors
    # (s, state) -> the actors as `act` reads them, made once a tick
    acting: Callable = learn.slot_layers
    # (s, state, acting, key, uniform random actions) -> every slot's action
    act: Callable = learn.slot_actions
    # (s) -> True: the critic is a worker that trains in jobs (`CriticJob`)
    critic_worker: Callable = lambda s: True
    # (s, learner, batch, policy, key) -> learner
    critic_update: Callable = learn.shared_critic_update
    # (s, slots, critic steps taken) -> slots
    after_critic: Callable = lambda s, slots, n: slots
    # (s, state) -> the policy the run reports (ES mean; td3: its actor)
    mean: Callable = learn.es_mean
    # (s, state) -> [3] bool: ES state, critic, actors finite (`FINITE_PARTS`)
    finite_parts: Callable = learn.es_finite_parts
    # (s, state) -> mean ES variance (0 without an ES)
    var: Callable = learn.es_var


@dataclasses.dataclass(frozen=True)
class Setup:
    """What a program is built from: the structure (env, networks, rates, the algorithm's
    options and family), and once bound to a row's traced hyper-parameters (`bind`), its
    strategy and TD3 numbers."""

    cfg: Config  # structure only: traced fields are None (`Config.structure`)
    env: TimeLimit
    actor: ActorSpec
    critic: CriticSpec
    algorithm: AlgorithmOptions
    family: Family
    h: HParams | None = None  # set by `bind`
    strategy: Any = None  # the family's strategy (None without an ES); set by `bind`
    # Rows run side by side under vmap: a tick's env steps take the all-slots path, since
    # under vmap a branch on a row's predicate runs both of its sides (`envstep.step_envs`).
    batched: bool = False

    def bind(self, h: HParams) -> Setup:
        """This setup for one row: its strategy and numbers built from traced values."""
        return dataclasses.replace(self, h=h, strategy=self.algorithm.strategy(self.cfg, h))

    @property
    def hp(self) -> td3.TD3HParams:
        h = self.h
        return td3.TD3HParams(
            h.gamma, h.tau, h.policy_noise, h.noise_clip, h.critic_lr, h.actor_lr, h.expl_noise
        )

    @property
    def env_rate(self) -> Rate:
        return Rate(1, 1) if self.family.joint_update else Rate.of(self.cfg.env_steps_per_tick)

    @property
    def actor_rate(self) -> Rate:
        return Rate.of(self.cfg.actor_steps_per_tick)

    @property
    def critic_rate(self) -> Rate:
        if self.family.joint_update:
            return Rate(1, 1)
        return Rate.of(self.cfg.critic_steps_per_tick)

    @property
    def serial_critic(self) -> bool:
        """The critic trains in a slot, member by member (cem-rl; p-cem-rl by default)."""
        return self.algorithm.serial_critic(self.cfg)
