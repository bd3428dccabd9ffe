"""Layer initialisation (docs/algorithm.md §1): the authors' PyTorch default against flax's.

Closed forms for a layer with fan_in inputs:
- torch (nn.Linear's default, kaiming_uniform with a = sqrt(5)): weights and biases
  U(-b, b) with b = 1/sqrt(fan_in), so std b/sqrt(3) and max |w| <= b;
- flax (nn.Dense's default): weights lecun_normal, a normal truncated at 2 std and rescaled
  to std 1/sqrt(fan_in); biases exactly 0.
"""

import math

import jax
import numpy as np
import pytest

from aes_rl.config import Config, preset
from aes_rl.networks import ActorSpec, CriticSpec, dense


def _layers(tree):
    """(kernel, bias) of each dense layer, in order."""
    params = tree["params"]
    return [
        (params[k]["kernel"], params[k]["bias"])
        for k in sorted(params, key=lambda k: int(k.split("_")[1]))
    ]


@pytest.mark.parametrize("fan_in,width", [(11, 400), (400, 300)])
def test_torch_init_matches_pytorch_linear_closed_form(fan_in, width):
    spec = ActorSpec(fan_in, 3, (width,), weight_init="torch")
    (kernel, bias), _ = _layers(spec.init_tree(jax.random.key(0)))
    kernel, bias = np.asarray(kernel), np.asarray(bias)
    bound = 1.0 / math.sqrt(fan_in)
    assert np.abs(kernel).max() <= bound and np.abs(bias).max() <= bound
    # fan_in * width >= 4400 draws: the sample std of U(-b, b) is within 3% of b/sqrt(3)
    assert kernel.std() == pytest.approx(bound / math.sqrt(3), rel=0.03)
    assert np.abs(kernel).max() > 0.98 * bound  # it fills the interval (not a narrower law)
    assert np.abs(bias).max() > 0.5 * bound and bias.std() > 0  # biases are drawn, not zero


def test_flax_init_is_lecun_normal_with_zero_biases():
    fan_in, width = 400, 300
    spec = ActorSpec(fan_in, 3, (width,), weight_init="flax")
    (kernel, bias), _ = _layers(spec.init_tree(jax.random.key(0)))
    assert np.asarray(kernel).std() == pytest.approx(1.0 / math.sqrt(fan_in), rel=0.03)
    assert not np.any(np.asarray(bias))


def test_flax_std_is_sqrt3_times_torch():
    fan_in = 300
    stds = {}
    for init in ("torch", "flax"):
        (kernel, _), _ = _layers(
            ActorSpec(fan_in, 3, (400,), weight_init=init).init_tree(jax.random.key(1))
        )
        stds[init] = float(np.asarray(kernel).std())
    assert stds["flax"] / stds["torch"] == pytest.approx(math.sqrt(3), rel=0.04)


def test_every_layer_and_the_critic_use_the_chosen_init():
    spec = ActorSpec(17, 6, (32, 32), weight_init="torch")
    for kernel, bias in _layers(spec.init_tree(jax.random.key(2))):
        bound = 1.0 / math.sqrt(kernel.shape[0])  # each layer's own fan_in: 17, 32, 32
        assert np.abs(np.asarray(kernel)).max() <= bound and np.any(np.asarray(bias))
    critic = CriticSpec(17, 6, (32, 32), weight_init="torch").init(jax.random.key(3))
    q1 = critic["params"]["q1"]
    assert np.abs(np.asarray(q1["Dense_0"]["kernel"])).max() <= 1 / math.sqrt(17 + 6)
    assert np.any(np.asarray(q1["Dense_2"]["bias"]))  # the output layer's bias too


def test_default_is_the_authors_and_old_records_read_as_flax():
    assert Config().weight_init == "torch"
    assert preset("hopper").weight_init == "torch"
    stored = preset("probe").to_dict()
    del stored["weight_init"]  # a config.json written before the field existed
    assert Config.from_dict(stored).weight_init == "flax"


def test_unknown_init_is_refused_in_one_line():
    with pytest.raises(ValueError, match="weight_init.*torch, flax"):
        preset("probe", weight_init="xavier")
    with pytest.raises(ValueError, match="weight_init"):
        dense(3, 2, "xavier")
