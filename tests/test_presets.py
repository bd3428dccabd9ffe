"""The Brax presets of P (docs/findings.md, "Presets"): a quarter of the authors' values."""

import dataclasses

import pytest

from aes_rl import algorithms
from aes_rl.config import (
    AUTHORS_MEAN_PARAM,
    BRAX_P_FACTOR,
    FIELDS,
    MEAN_PARAM,
    preset,
    preset_default_text,
)
from aes_rl.envs import BRAX_ENVS


def test_the_authors_values_are_kept_as_they_are():
    assert AUTHORS_MEAN_PARAM == {
        "halfcheetah": 2000.0,
        "hopper": 600.0,
        "walker2d": 800.0,
        "ant": 960.0,
        "humanoid": 960.0,
        "swimmer": 48.0,
    }


@pytest.mark.parametrize("env", [e for e in BRAX_ENVS if e != "hopper"])
def test_every_brax_env_but_hopper_gets_a_quarter_of_the_authors_p(env):
    assert BRAX_P_FACTOR == 0.25
    assert preset(env).mean_param == 0.25 * AUTHORS_MEAN_PARAM[env]


def test_the_measured_values_and_the_override():
    assert preset("walker2d").mean_param == 200.0  # measured: docs/findings.md
    assert preset("hopper").mean_param == 50.0  # measured below the quarter (150)
    assert preset("hopper").mean_param < 0.25 * AUTHORS_MEAN_PARAM["hopper"]
    assert preset("walker2d", mean_param=800.0).mean_param == 800.0  # the authors' regime
    assert "walker2d 800" in FIELDS["mean_param"].help  # --help says what the authors used


def test_an_algorithms_preset_is_its_registry_records_and_the_env_declarations_come_over_it():
    mine = dataclasses.replace(
        algorithms.get("aes-rl"), name="my-aes", preset=lambda env: dict(rho=0.3, buffer_size=7000)
    )
    algorithms.register(mine)
    try:
        assert preset("hopper", "my-aes").rho == 0.3
        assert preset("hopper", "my-aes").buffer_size == 7000
        assert preset("probe", "my-aes").buffer_size == 20_000  # the test env's declared size
        assert preset("walker2d", "my-aes").mean_param == 200.0  # declared per env
    finally:
        algorithms.unregister("my-aes")


def test_the_help_lists_p_per_env_from_its_declaration():
    assert FIELDS["mean_param"].per_env == MEAN_PARAM
    assert preset_default_text("mean_param").startswith("halfcheetah 500, hopper 50, walker2d 200")
