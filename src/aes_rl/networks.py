"""Actor and twin critic (docs/algorithm.md §1) and the flat-vector view of an actor.

The ES works on one flat vector per actor; TD3 works on the same vector (Adam over a flat
vector is elementwise, so it equals Adam over the pytree). `ActorSpec` holds the static
structure and converts between the two views with `jax.flatten_util.ravel_pytree`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

ACTIVATIONS = {"tanh": nn.tanh, "relu": nn.relu, "leaky_relu": lambda x: nn.leaky_relu(x, 0.01)}


class MLP(nn.Module):
    hidden: Sequence[int]
    out: int
    activation: str

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = ACTIVATIONS[self.activation]
        for width in self.hidden:
            x = act(nn.Dense(width)(x))
        return nn.Dense(self.out)(x)


class TwinCritic(nn.Module):
    """Q1 and Q2 on concat(obs, act), as in TD3."""

    hidden: Sequence[int]
    activation: str = "leaky_relu"

    @nn.compact
    def __call__(self, obs: jax.Array, act: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = jnp.concatenate([obs, act], axis=-1)
        q1 = MLP(self.hidden, 1, self.activation, name="q1")(x)[..., 0]
        q2 = MLP(self.hidden, 1, self.activation, name="q2")(x)[..., 0]
        return q1, q2


@dataclasses.dataclass(frozen=True)
class ActorSpec:
    """Static structure of an actor: obs -> hidden -> act, `max_action * tanh(.)` output."""

    obs_dim: int
    act_dim: int
    hidden: tuple[int, ...] = (400, 300)
    activation: str = "tanh"
    max_action: float = 1.0

    @property
    def module(self) -> MLP:
        return MLP(self.hidden, self.act_dim, self.activation)

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

    @property
    def module(self) -> TwinCritic:
        return TwinCritic(self.hidden, self.activation)

    def init(self, key: jax.Array):
        return self.module.init(key, jnp.zeros((self.obs_dim,)), jnp.zeros((self.act_dim,)))

    def apply(self, params, obs: jax.Array, act: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self.module.apply(params, obs, act)
