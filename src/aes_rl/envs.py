"""The environment layer: Brax envs and tiny pure-JAX probe envs behind one thin interface.

docs/algorithm.md §1 and §7. Everything the training loop needs from an environment is
`reset(key) -> State` and `step(state, action) -> State` with Brax's `State` record, plus three
facts after a step:

- `state.obs` is the TRUE next observation (we never auto-reset: Brax's `AutoResetWrapper`
  overwrites it with the reset observation and always resets to the same initial state);
- `state.info["terminated"]` is 1.0 only on a true termination (the body fell);
- `state.info["truncated"]` is 1.0 when the time limit ended the episode without termination.

`state.done` is their union. A new episode always starts with `reset(fresh_key)`, so every
fitness evaluation draws its own initial state. Keeping this layer thin (one wrapper, one
factory) is deliberate: another physics backend (MuJoCo Playground) only needs a `make_env`
branch returning an object with the same `reset`/`step`/`observation_size`/`action_size`.
"""

from __future__ import annotations

import contextlib
import io

import jax
import jax.numpy as jnp

# Brax imports MuJoCo's MJX, which prints "Failed to import warp" when the optional GPU
# package is absent; that line is noise for every user of this CPU/GPU-JAX framework.
with contextlib.redirect_stdout(io.StringIO()):
    from brax.envs import base as brax_base

State = brax_base.State

BRAX_ENVS = ("halfcheetah", "hopper", "walker2d", "ant", "humanoid", "swimmer")
PROBE_ENVS = ("probe", "countdown")
ENV_NAMES = BRAX_ENVS + PROBE_ENVS
BACKENDS = ("generalized", "positional", "spring", "mjx")
# Backends each Brax env exists on (swimmer's fluid model is generalized-only).
_BACKENDS_OF = {name: BACKENDS for name in BRAX_ENVS} | {"swimmer": ("generalized",)}


def _strong(tree):
    """Make weakly typed leaves strong, so `jit(step)` does not compile twice."""

    def strong(x):
        if isinstance(x, (bool, int, float)):  # Python scalars (hopper's reward_healthy)
            x = jnp.asarray(x)
        if not hasattr(x, "astype") or jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return x
        return x.astype(x.dtype)

    return jax.tree.map(strong, tree)


# Brax envs whose step maps an action in [-1, 1] onto the actuators' control range, with that
# range's bound: humanoid's is 0.4, as in Gym's Humanoid-v2, whose actions the authors' actor
# emits directly (max_action 0.4, TD3's noise in those units). The others take [-1, 1] as is.
_CTRL_SCALED = {"humanoid": 0.4}


class TimeLimit(brax_base.Wrapper):
    """Counts steps and separates true termination from time-limit truncation.

    Actions are in the env's own units, [-max_action, max_action] (docs/algorithm.md §7): for
    a Brax env that rescales [-1, 1] onto its control range, the wrapper divides by the range's
    bound first, so the policy acts in control units as the authors' MuJoCo actors do."""

    def __init__(self, env: brax_base.Env, episode_length: int, max_action: float = 1.0):
        super().__init__(env)
        self.episode_length = int(episode_length)
        self.max_action = float(max_action)

    def reset(self, rng: jax.Array) -> State:
        state = self.env.reset(rng)
        zero = jnp.zeros((), jnp.float32)
        info = dict(state.info, steps=jnp.zeros((), jnp.int32), terminated=zero, truncated=zero)
        return _strong(state.replace(info=info, done=zero, reward=zero))

    def step(self, state: State, action: jax.Array) -> State:
        if self.max_action != 1.0:
            action = action / self.max_action
        nstate = self.env.step(state, action)
        steps = state.info["steps"] + 1
        terminated = nstate.done.astype(jnp.float32)
        truncated = jnp.where(steps >= self.episode_length, 1.0 - terminated, 0.0)
        info = dict(nstate.info, steps=steps, terminated=terminated, truncated=truncated)
        done = jnp.maximum(terminated, truncated)
        nstate = nstate.replace(info=info, done=done, reward=nstate.reward.astype(jnp.float32))
        return _strong(nstate)  # hopper's metrics["reward_healthy"] is a Python float


def make_env(name: str, backend: str = "spring", episode_length: int = 1000, **kwargs) -> TimeLimit:
    """Build an environment by name; probe envs ignore `backend`.

    Raises a one-line ValueError naming the allowed values for unknown names or backends.
    """
    if name not in ENV_NAMES:
        raise ValueError(f"env: unknown environment {name!r}; allowed: {', '.join(ENV_NAMES)}")
    if not isinstance(episode_length, int) or episode_length <= 0:
        raise ValueError(f"episode_length: must be a positive int, got {episode_length!r}")
    if name in PROBE_ENVS:
        return TimeLimit(_PROBES[name](**kwargs), episode_length)
    allowed = _BACKENDS_OF[name]
    if backend not in allowed:
        raise ValueError(
            f"backend: {backend!r} is not available for {name}; allowed: {', '.join(allowed)}"
        )
    from brax import envs as brax_envs  # imported lazily: Brax's import is slow

    with _devices_of_this_process():
        env = brax_envs.get_environment(name, backend=backend, **kwargs)
    if name in _CTRL_SCALED:
        ctrl = env.sys.actuator.ctrl_range
        bound = _CTRL_SCALED[name]
        if not (abs(ctrl[:, 1] - bound).max() < 1e-6 and abs(ctrl[:, 0] + bound).max() < 1e-6):
            raise RuntimeError(f"{name}: expected a control range of +-{bound} in this Brax")
    return TimeLimit(env, episode_length, _CTRL_SCALED.get(name, 1.0))


@contextlib.contextmanager
def _devices_of_this_process():
    """Brax builds its physics model with MJX's `put_model`, which places it on
    `jax.devices()[0]`. In a run over several processes (`aes_rl.hosts`) that is process 0's
    device: the other processes' copies would hold nothing they can read, and their compiled
    chunks could not embed the model. While an env is built on such a run, `jax.devices()`
    answers this process's own devices (one process: nothing changes)."""
    if jax.process_count() == 1:
        yield
        return
    original = jax.devices
    jax.devices = jax.local_devices
    try:
        yield
    finally:
        jax.devices = original


class ProbeEnv(brax_base.Env):
    """Contextual bandit with a known optimal policy: a* = 0.5 * obs[:act_dim].

    obs ~ U(-1, 1)^obs_dim is redrawn every step independently of the action; reward is
    `-mean((a - a*)^2)`. Never terminates (only truncation). The optimal return is 0, a uniform
    random policy scores about -(1/3 + 1/12) per step.

    Test hooks for the non-finite guard: `nan_prob` makes a whole episode's rewards NaN with
    that probability (drawn at reset); `reward_scale` multiplies the reward (1e38 overflows).
    """

    def __init__(
        self, obs_dim: int = 3, act_dim: int = 2, nan_prob: float = 0.0, reward_scale: float = 1.0
    ):
        if not (isinstance(obs_dim, int) and isinstance(act_dim, int) and 1 <= act_dim <= obs_dim):
            raise ValueError(
                f"obs_dim/act_dim: need 1 <= act_dim <= obs_dim, got {obs_dim}, {act_dim}"
            )
        if not 0.0 <= nan_prob <= 1.0:
            raise ValueError(f"nan_prob: must be in [0, 1], got {nan_prob}")
        self._obs_dim, self._act_dim = obs_dim, act_dim
        self.nan_prob, self.reward_scale = float(nan_prob), float(reward_scale)

    def _obs(self, key: jax.Array) -> jax.Array:
        return jax.random.uniform(key, (self._obs_dim,), jnp.float32, -1.0, 1.0)

    def reset(self, rng: jax.Array) -> State:
        key, sub, k_nan = jax.random.split(rng, 3)
        zero = jnp.zeros((), jnp.float32)
        # nan_prob > 0: a test hook, a whole episode of NaN rewards with that probability.
        poison = jnp.where(jax.random.uniform(k_nan) < self.nan_prob, jnp.nan, 0.0)
        return State(None, self._obs(sub), zero, zero, {}, {"key": key, "poison": poison})

    def step(self, state: State, action: jax.Array) -> State:
        best = 0.5 * state.obs[: self._act_dim]
        reward = -self.reward_scale * jnp.mean((action - best) ** 2) + state.info["poison"]
        key, sub = jax.random.split(state.info["key"])
        info = dict(state.info, key=key)
        return state.replace(obs=self._obs(sub), reward=reward, done=jnp.zeros(()), info=info)

    @property
    def observation_size(self) -> int:
        return self._obs_dim

    @property
    def action_size(self) -> int:
        return self._act_dim

    @property
    def backend(self) -> str:
        return "probe"


class CountdownEnv(ProbeEnv):
    """The probe bandit, but each episode TERMINATES after a length drawn at reset.

    The length is uniform in [min_length, max_length] (inclusive) from the reset key, so tests
    of the asynchronous loop know exactly when every episode ends. The last observation entry
    is the fraction of the episode left (1 after reset, 0 at the final step).
    """

    def __init__(
        self,
        min_length: int = 5,
        max_length: int = 5,
        obs_dim: int = 3,
        act_dim: int = 2,
        nan_prob: float = 0.0,
        reward_scale: float = 1.0,
    ):
        if not 1 <= min_length <= max_length:
            raise ValueError(
                f"min_length/max_length: need 1 <= min <= max, got {min_length}, {max_length}"
            )
        super().__init__(obs_dim, act_dim, nan_prob, reward_scale)
        self.min_length, self.max_length = min_length, max_length

    def reset(self, rng: jax.Array) -> State:
        key, sub = jax.random.split(rng)
        state = super().reset(key)
        length = jax.random.randint(sub, (), self.min_length, self.max_length + 1)
        obs = state.obs.at[-1].set(1.0)
        return state.replace(obs=obs, info=dict(state.info, left=length, length=length))

    def step(self, state: State, action: jax.Array) -> State:
        nstate = super().step(state, action)
        left = state.info["left"] - 1
        obs = nstate.obs.at[-1].set(left / nstate.info["length"])
        done = (left <= 0).astype(jnp.float32)
        return nstate.replace(obs=obs, done=done, info=dict(nstate.info, left=left))


_PROBES = {"probe": ProbeEnv, "countdown": CountdownEnv}
