"""Actor and twin critic (docs/algorithm.md §1) and the flat-vector view of an actor.

The ES works on one flat vector per actor; TD3 works on the same vector (Adam over a flat
vector is elementwise, so it equals Adam over the pytree). `ActorSpec` holds the static
structure and converts between the two views with `jax.flatten_util.ravel_pytree`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

ACTIVATIONS = {"tanh": nn.tanh, "relu": nn.relu, "leaky_relu": lambda x: nn.leaky_relu(x, 0.01)}
# How a layer's weights and biases start (docs/algorithm.md §1):
# - "torch": PyTorch's default `nn.Linear`, the authors' networks: weights and biases both
#   U(-1/sqrt(fan_in), 1/sqrt(fan_in)), so std 1/sqrt(3 fan_in);
# - "flax": flax's `nn.Dense` default: weights lecun_normal (truncated normal, std
#   1/sqrt(fan_in), sqrt(3) = 1.73x torch's), biases zero.
INITS = ("torch", "flax")


def _uniform(bound: float) -> Callable:
    def init(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def dense(width: int, fan_in: int, weight_init: str) -> nn.Dense:
    """A dense layer of `width` outputs on `fan_in` inputs, initialised by `weight_init`
    (INITS)."""
    if weight_init == "flax":
        return nn.Dense(width)
    if weight_init == "torch":
        bound = 1.0 / math.sqrt(fan_in)
        return nn.Dense(width, kernel_init=_uniform(bound), bias_init=_uniform(bound))
    raise ValueError(f"weight_init: must be one of {INITS}, got {weight_init!r}")


class MLP(nn.Module):
    hidden: Sequence[int]
    out: int
    activation: str
    weight_init: str = "torch"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = ACTIVATIONS[self.activation]
        for width in self.hidden:
            x = act(dense(width, x.shape[-1], self.weight_init)(x))
        return dense(self.out, x.shape[-1], self.weight_init)(x)


class TwinCritic(nn.Module):
    """Q1 and Q2 on concat(obs, act), as in TD3."""

    hidden: Sequence[int]
    activation: str = "leaky_relu"
    weight_init: str = "torch"

    @nn.compact
    def __call__(self, obs: jax.Array, act: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = jnp.concatenate([obs, act], axis=-1)
        q1 = MLP(self.hidden, 1, self.activation, self.weight_init, name="q1")(x)[..., 0]
        q2 = MLP(self.hidden, 1, self.activation, self.weight_init, name="q2")(x)[..., 0]
        return q1, q2


@dataclasses.dataclass(frozen=True)
class ActorSpec:
    """Static structure of an actor: obs -> hidden -> act, `max_action * tanh(.)` output."""

    obs_dim: int
    act_dim: int
    hidden: tuple[int, ...] = (400, 300)
    activation: str = "tanh"
    max_action: float = 1.0
    weight_init: str = "torch"  # INITS

    @property
    def module(self) -> MLP:
        return MLP(self.hidden, self.act_dim, self.activation, self.weight_init)

    def init_tree(self, key: jax.Array):
        return self.module.init(key, jnp.zeros((self.obs_dim,)))

    def init_flat(self, key: jax.Array) -> jax.Array:
        """A freshly initialised actor as one flat f32 vector [d]."""
        return ravel_pytree(self.init_tree(key))[0]

    @property
    def unravel(self) -> Callable[[jax.Array], dict]:
        template = jax.eval_shape(self.init_tree, jax.random.key(0))
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), template)
        return ravel_pytree(zeros)[1]

    @property
    def num_params(self) -> int:
        template = jax.eval_shape(self.init_tree, jax.random.key(0))
        return sum(int(jnp.prod(jnp.array(s.shape))) for s in jax.tree.leaves(template))

    def apply(self, flat: jax.Array, obs: jax.Array) -> jax.Array:
        """Deterministic action of the actor given by the flat vector `flat` [d]."""
        return self.apply_layers(self.layers(flat), obs)

    def layers(self, flat: jax.Array) -> dict:
        """The actor `flat` [d] as its layers (flax's parameter tree), for a loop that acts
        many times with one actor: made before the loop, its kernels are arrays of their own,
        which the compiler can lay out for the loop's products once. Read from the flat vector
        inside the loop, they are slices of it, and on a GPU every step copied all of them into
        the layout its products read (docs/algorithm.md §10)."""
        return self.unravel(flat)

    def apply_layers(self, layers: dict, obs: jax.Array) -> jax.Array:
        """Deterministic action of the actor given by its `layers` (`layers(flat)`)."""
        return self.max_action * jnp.tanh(self.module.apply(layers, obs))


@dataclasses.dataclass(frozen=True)
class CriticSpec:
    obs_dim: int
    act_dim: int
    hidden: tuple[int, ...] = (400, 300)
    activation: str = "leaky_relu"
    weight_init: str = "torch"  # INITS

    @property
    def module(self) -> TwinCritic:
        return TwinCritic(self.hidden, self.activation, self.weight_init)

    def init(self, key: jax.Array):
        return self.module.init(key, jnp.zeros((self.obs_dim,)), jnp.zeros((self.act_dim,)))

    def apply(self, params, obs: jax.Array, act: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self.module.apply(params, obs, act)
