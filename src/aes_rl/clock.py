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


# The Config fields the measured kernels depend on: configurations equal in these time the
# same computation, so they share one calibration (`signature`).
MEASURED_FIELDS = ("env", "backend", "env_kwargs", "num_slots", "actor_hidden", "critic_hidden",
                   "batch_size")


def signature(cfg: Config) -> str:
    """What the device clock measures, as text: equal for configurations that time the same
    computation (an AES-RL and a P-CEM-RL run on the same env, W, nets and batch)."""
    return " ".join(f"{name}={getattr(cfg, name)!r}" for name in MEASURED_FIELDS)


def _kernels(cfg: Config) -> dict[str, tuple[Callable, tuple]]:
    """The three jitted kernels a tick is made of, with their arguments: a vmapped env step
    (W slots, policy included), a vmapped actor step (W slots, batch `batch_size` each) and one
    critic step (with its target update)."""
    from aes_rl import program

    s = program.build(cfg)
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
        "env_step_s": (env_step, (envs, flats)),
        "actor_step_s": (actor_step, (flats, opts, key)),
        "critic_step_s": (critic_step, (critic, flats[0], key)),
    }


def measure_all(cfgs: list[Config], repeats: int = 20, rounds: int = 5) -> list[dict[str, float]]:
    """`measure` for several configurations at once: each distinct computation (`signature`)
    is compiled and measured once, and the measurements of all of them are interleaved over
    `rounds` rounds (each kernel `repeats` calls in all), so that a change of the machine's
    load during the calibration moves every configuration's figures alike, not one of them.
    Returns one dict per config, the same dict (equal figures) for configs of one signature."""
    if repeats < 1 or rounds < 1:
        raise ValueError(f"clock: repeats and rounds must be >= 1, got {repeats} and {rounds}")
    first: dict[str, Config] = {}  # one config per distinct computation, in order
    for c in cfgs:
        first.setdefault(signature(c), c)
    sigs = list(first)
    kernels = {sig: _kernels(c) for sig, c in first.items()}
    for named in kernels.values():  # compile and warm every kernel before any timing
        for fn, args in named.values():
            jax.block_until_ready(fn(*args))
    times: dict[str, dict[str, list[float]]] = {sig: {n: [] for n in kernels[sig]}
                                                for sig in sigs}
    per_round = [repeats // rounds + (i < repeats % rounds) for i in range(rounds)]
    for count in per_round:
        for sig in sigs:
            for name, (fn, args) in kernels[sig].items():
                for _ in range(count):
                    t0 = time.perf_counter()
                    jax.block_until_ready(fn(*args))
                    times[sig][name].append(time.perf_counter() - t0)
    costs = {sig: {n: statistics.median(t) for n, t in times[sig].items()} for sig in sigs}
    return [costs[signature(c)] for c in cfgs]


def measure(cfg: Config, repeats: int = 20) -> dict[str, float]:
    """Median seconds of one vmapped env step (W slots, policy included), one vmapped actor
    step (W slots, batch `batch_size` each) and one critic step (with its target update)."""
    return measure_all([cfg], repeats, rounds=1)[0]


def rates(costs: dict[str, float]) -> tuple[float, float, float]:
    """(env, actor, critic) steps per tick, a tick being one actor step; 3 significant digits,
    within RATE_BOUNDS."""

    def per_tick(seconds: float) -> float:
        value = costs["actor_step_s"] / max(seconds, 1e-12)
        return float(min(max(float(f"{value:.3g}"), RATE_BOUNDS[0]), RATE_BOUNDS[1]))

    return per_tick(costs["env_step_s"]), 1.0, per_tick(costs["critic_step_s"])


def with_rates(cfg: Config, costs: dict[str, float]) -> Config:
    """`cfg` on the device clock whose measured seconds are `costs`."""
    env, actor, critic = rates(costs)
    return cfg.replace(
        cost_model="device",
        env_steps_per_tick=env,
        actor_steps_per_tick=actor,
        critic_steps_per_tick=critic,
    )


def calibrate(cfg: Config, repeats: int = 20) -> tuple[Config, dict[str, float]]:
    """`cfg` with the device cost model's rates, and the measured seconds behind them."""
    costs = measure(cfg, repeats)
    return with_rates(cfg, costs), costs
