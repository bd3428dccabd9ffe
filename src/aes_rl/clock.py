"""The `device` cost model: what one tick buys, measured on this machine at a run's shapes.

docs/algorithm.md §8. A tick is the time of one actor-gradient step of a training
slot (all W slots' steps run side by side, as the authors' workers do); in that time a
rolling-out slot takes `c_actor / c_env` env steps (its policy's forward pass included) and the
critic takes `c_actor / c_critic` steps. The measured seconds and the rates are stored in the
run's config.json, so a resumed run keeps the clock it started with.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp

from aes_rl import replay, td3
from aes_rl.config import Config

RATE_BOUNDS = (1e-3, 1e3)


def _seconds(fn: Callable, args: tuple, repeats: int = 20) -> float:
    """Median seconds of one call of the jitted `fn` (compiled and warmed up first)."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(cfg: Config, repeats: int = 20) -> dict[str, float]:
    """Seconds of one vmapped env step (W slots, policy included), one vmapped actor step
    (W slots, batch `batch_size` each) and one critic step (with its target update)."""
    from aes_rl import loop

    s = loop.build(cfg)
    w, key = cfg.num_slots, jax.random.key(0)
    k_env, k_actor, k_critic, k_buf = jax.random.split(key, 4)
    flats = jax.vmap(s.actor.init_flat)(jax.random.split(k_actor, w))
    envs = jax.vmap(s.env.reset)(jax.random.split(k_env, w))
    obs_dim, act_dim = s.env.observation_size, s.env.action_size
    n = max(cfg.batch_size, 1024)
    ks = jax.random.split(k_buf, 3)
    data = replay.Transition(
        jax.random.normal(ks[0], (n, obs_dim)),
        jax.random.uniform(ks[1], (n, act_dim), minval=-1.0, maxval=1.0),
        jax.random.normal(ks[2], (n,)),
        jax.random.normal(ks[0], (n, obs_dim)),
        jnp.ones((n,)),
    )
    buffer = replay.add(replay.init(n, obs_dim, act_dim), data, jnp.ones((n,), bool))
    critic = td3.critic_init(k_critic, s.critic)
    hp = s.hp

    @jax.jit
    def env_step(envs, flats):
        actions = jax.vmap(s.actor.apply)(flats, envs.obs)
        return jax.vmap(s.env.step)(envs, actions)

    @jax.jit
    def actor_step(flats, opts, key):
        obs = jax.vmap(lambda k: replay.sample(buffer, k, cfg.batch_size).obs)(
            jax.random.split(key, w)
        )
        step = jax.vmap(
            lambda f, o, b: td3.actor_step(f, o, critic.params, b, hp, s.actor, s.critic)
        )
        return step(flats, opts, obs)

    @jax.jit
    def critic_step(critic, policy, key):
        k_batch, k_noise = jax.random.split(key)
        batch = replay.sample(buffer, k_batch, cfg.batch_size)
        out, _ = td3.critic_step(critic, batch, policy, k_noise, hp, s.actor, s.critic)
        return td3.soft_update_critic(out, cfg.tau)

    opts = jax.vmap(td3.actor_opt_init)(flats)
    return {
        "env_step_s": _seconds(env_step, (envs, flats), repeats),
        "actor_step_s": _seconds(actor_step, (flats, opts, key), repeats),
        "critic_step_s": _seconds(critic_step, (critic, flats[0], key), repeats),
    }


def rates(costs: dict[str, float]) -> tuple[float, float, float]:
    """(env, actor, critic) steps per tick, a tick being one actor step; 3 significant digits,
    within RATE_BOUNDS."""

    def per_tick(seconds: float) -> float:
        value = costs["actor_step_s"] / max(seconds, 1e-12)
        return float(min(max(float(f"{value:.3g}"), RATE_BOUNDS[0]), RATE_BOUNDS[1]))

    return per_tick(costs["env_step_s"]), 1.0, per_tick(costs["critic_step_s"])


def calibrate(cfg: Config, repeats: int = 20) -> tuple[Config, dict[str, float]]:
    """`cfg` with the device cost model's rates, and the measured seconds behind them."""
    costs = measure(cfg, repeats)
    env, actor, critic = rates(costs)
    new = cfg.replace(
        cost_model="device",
        env_steps_per_tick=env,
        actor_steps_per_tick=actor,
        critic_steps_per_tick=critic,
    )
    return new, costs
