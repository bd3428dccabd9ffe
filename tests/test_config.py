"""Configuration validation: every field, its range, finiteness and its relations, checked
before anything is built or written (property-based, with hypothesis)."""

import dataclasses
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aes_rl import algorithms, config, engine, program, run
from aes_rl.config import ALGOS, FIELDS, HYPER, INT_MAX, STRUCTURAL, Config, preset
from aes_rl.envs import ENV_NAMES

FIELD_NAMES = [f.name for f in dataclasses.fields(Config) if f.name != "env_kwargs"]
KINDS = {f.name: f.type for f in dataclasses.fields(Config)}
# Cross-field messages name one of the fields involved first.
RELATED = {
    "batch_size": {"buffer_size"},
    "buffer_size": {"batch_size"},
    "var_init": {"var_min"},
    "rl_members": {"pop_size"},
    "pop_size": {"rl_members", "n_parents"},
    "n_parents": {"n_parents"},  # <= pop_size / acem_ring
    "acem_ring": {"n_parents"},
    "algo": {"n_mean_evals", "num_slots", "batch_size"},
    "env": {"backend", "mean_param", "env_kwargs"},
    "backend": {"backend"},
    "num_slots": {"num_slots"},
    "env_steps_per_tick": {"cost_model"},
    "actor_steps_per_tick": {"cost_model"},
    "critic_steps_per_tick": {"cost_model"},
    "cost_model": {"cost_model"},
    "parallel_critic": {"parallel_critic"},
}
PROBE = dict(
    actor_hidden=(8,),
    critic_hidden=(8,),
    buffer_size=500,
    batch_size=16,
    warmup_steps=50,
    episode_length=10,
)

ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["aes-rl", "probe", "spring", "baseline-relative", "fixed", "cem"]),
    st.tuples(st.integers(-3, 70)),
    st.lists(st.integers(-3, 70), max_size=3).map(tuple),
)


def in_range(name):
    """Values inside a field's declared range (kind and bounds from the FIELDS table)."""
    spec, kind = FIELDS[name], KINDS[name]
    if spec.choices is not None:
        return st.sampled_from(spec.choices)
    if kind == "bool":
        return st.booleans()
    if kind == "int":
        return st.integers(int(spec.low), min(int(spec.high), 64))
    if kind.startswith("tuple"):
        return st.lists(st.integers(1, 32), min_size=1, max_size=3).map(tuple)
    if kind == "float":
        low, high = spec.low, min(spec.high, 1e4)
        return st.floats(low, high, exclude_min=spec.low_open, exclude_max=spec.high_open)
    return st.just(getattr(Config(), name))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(ALGOS), st.sampled_from(FIELD_NAMES), ANY_VALUE)
def test_any_value_of_any_field_is_accepted_and_builds_or_is_refused_in_one_line(algo, name, value):
    base = preset("probe", algo, **PROBE)
    try:
        cfg = base.replace(**{name: value})
    except ValueError as err:
        message = str(err)
        assert "\n" not in message
        field = message.split(":")[0]
        assert field == name or field in RELATED.get(name, ()), (name, value, message)
        return
    assert getattr(cfg, name) == value
    # accepted means usable: the loop's pieces (env, nets, strategy with its params) build
    program.build(cfg)
    assert Config.from_dict(cfg.to_dict()) == cfg


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(ALGOS), st.data())
def test_values_inside_the_declared_ranges_are_accepted(algo, data):
    changes = {}
    for name in data.draw(st.lists(st.sampled_from(FIELD_NAMES), max_size=6, unique=True)):
        if name not in (
            "algo",
            "env",
            "backend",
            "num_slots",
            "pop_size",
            "rl_members",
            "batch_size",
            "buffer_size",
            "var_min",
            "var_init",
            "n_mean_evals",
            "cost_model",  # 'paper' fixes the rates drawn beside it
            "parallel_critic",  # p-cem-rl only
            "n_parents",  # <= the population or ring: drawn below within it
            "acem_ring",
        ):
            changes[name] = data.draw(in_range(name))
    if data.draw(st.booleans()):
        changes["acem_ring"] = data.draw(st.integers(1, 20))
        changes["n_parents"] = data.draw(st.integers(0, min(changes["acem_ring"], 10)))
    cfg = preset("probe", algo, **dict(PROBE, **changes))
    assert all(getattr(cfg, k) == v for k, v in changes.items())
    assert program.build(cfg).cfg == cfg.structure()
    assert engine.HParams.of(cfg).warmup_steps == cfg.warmup_steps


@pytest.mark.parametrize(
    "changes,needle",
    [
        (dict(negative_ratio=1.5), "negative_ratio: must be in [0, 1], got 1.5"),
        (dict(pop_control_k=-2.0), "pop_control_k: must be in [0, 1e+06], got -2.0"),
        (dict(fixed_n=0.5), "fixed_n: must be in [1, 1e+12], got 0.5"),
        (dict(warmup_steps=0), "warmup_steps: must be in [1, 2^31-1], got 0"),
        (dict(n_mean_evals=0), "n_mean_evals: aes-rl compares each return with the mean"),
        (dict(critic_lr=math.nan), "critic_lr: must be finite and in (0, 1], got nan"),
        (dict(tau=0.0), "tau: must be in (0, 1], got 0.0"),
        (dict(gamma=1.5), "gamma: must be in [0, 1], got 1.5"),
        (dict(var_min=0.1), "var_min: must be <= var_init (0.001), got 0.1"),
        (dict(batch_size=30_000), "batch_size: must be <= buffer_size (20000), got 30000"),
        (dict(es="evosax:Nope"), "es: unknown 'evosax:Nope'; allowed: cem, evosax:ARS"),
        (dict(actor_hidden=()), "actor_hidden: expected one or more layer widths"),
        (dict(env_kwargs=(("colour", 1),)), "env_kwargs: probe has no option 'colour'"),
        (dict(env_kwargs=(("nan_prob", 3.0),)), "env_kwargs: nan_prob: must be in [0, 1]"),
        (dict(episode_length=2**31), "episode_length: must be in [1, 2^31-1]"),
        (dict(stagger=1), "stagger: expected true/false, got 1"),
    ],
)
def test_named_bad_settings_are_refused_naming_the_field(changes, needle):
    with pytest.raises(ValueError) as err:
        preset("probe", "aes-rl", **changes)
    assert needle in str(err.value)


def test_n_mean_evals_zero_is_allowed_where_no_rule_reads_f_mu():
    for algo in ("acem-rl", "p-cem-rl", "cem-rl", "td3"):
        assert preset("probe", algo, n_mean_evals=0).n_mean_evals == 0
    with pytest.raises(ValueError, match="n_mean_evals: one-plus-one"):
        preset("probe", "one-plus-one", n_mean_evals=0)


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(["steps", "eval_episodes", "eval_every", "save_every", "keep", "max_chunks"]),
    st.one_of(
        st.integers(-5, 2**33), st.floats(allow_nan=True), st.booleans(), st.text(max_size=3)
    ),
)
def test_run_settings_are_checked_before_any_work(tmp_path_factory, name, value):
    cfg = preset("probe", "aes-rl", **PROBE)
    s = run.RunSettings("unused", **{name: value})
    ok = (
        isinstance(value, int)
        and not isinstance(value, bool)
        and 1 <= value <= INT_MAX
        and (name != "steps" or value >= cfg.warmup_steps)
    )
    if ok:
        run.check_settings(cfg, s)
    else:
        with pytest.raises(run.RunError, match=f"^{name}: "):
            run.check_settings(cfg, s)


def test_preset_overrides_follow_the_authors_per_algorithm_configs():
    assert preset("humanoid", "aes-rl").actor_hidden == (256, 256)
    assert preset("humanoid", "aes-rl").critic_lr == 3e-4
    for algo in ("p-cem-rl", "cem-rl", "acem-rl", "one-plus-one"):
        assert preset("humanoid", algo).actor_hidden == (400, 300)
        assert preset("humanoid", algo).actor_lr == 1e-3
        assert preset("swimmer", algo).rho == 0.5
    assert preset("swimmer", "aes-rl").rho == 0.1
    assert preset("hopper", "p-cem-rl").batch_size == 256
    assert preset("hopper", "cem-rl").batch_size == 100


# Fields that are neither traced nor structural: static under jit, but a continued run may
# change them (the program recompiles). Pinned, so that a new mark is a deliberate change.
STATIC = {
    "batch_size",
    "cost_model",
    "env_steps_per_tick",
    "actor_steps_per_tick",
    "critic_steps_per_tick",
    "stagger",
    "parallel_critic",
    "ticks_per_chunk",
}


def test_each_field_is_declared_once_and_every_table_is_read_from_its_declaration():
    fields = dataclasses.fields(Config)
    assert list(FIELDS) == [f.name for f in fields]
    for f in fields:
        spec = FIELDS[f.name]
        assert f.metadata["spec"] is spec  # the dataclass field carries its one declaration
        assert spec.help.strip().endswith("."), f.name  # every field says what it means
        assert not (spec.traced and spec.structural), f.name
        kind = KINDS[f.name]
        if spec.choices is not None:
            assert kind == "str" and spec.low is None and spec.high is None, f.name
        if spec.low is not None or spec.high is not None:
            assert kind in ("int", "float") or kind.startswith("tuple[int"), f.name
        if spec.traced:  # a scalar in the state's HParams
            assert kind in ("int", "float", "str"), f.name
        assert set(spec.per_env) <= set(ENV_NAMES), f.name
    assert HYPER == tuple(f.name for f in fields if FIELDS[f.name].traced)
    assert STRUCTURAL == tuple(f.name for f in fields if FIELDS[f.name].structural)
    assert {f.name for f in fields} - set(HYPER) - set(STRUCTURAL) == STATIC
    # the state's traced record holds the same fields in the same order
    assert tuple(f.name for f in dataclasses.fields(engine.HParams)) == HYPER
    Config()  # every default is inside its declared range
    with pytest.raises(ValueError, match="traced or structural, not both"):
        config.field(1, "Both.", traced=True, structural=True)


def test_the_presets_take_what_a_field_declares_for_an_env_over_the_algorithms_preset():
    for env in ENV_NAMES:
        for algo in ALGOS:
            cfg = preset(env, algo)
            for name, value in config.env_defaults(env).items():
                assert getattr(cfg, name) == value, (env, algo, name)
    assert preset("probe", "p-cem-rl").buffer_size == 20_000  # the algorithm's is 1e6
    assert preset("hopper", "p-cem-rl").buffer_size == 1_000_000
    assert preset("swimmer").backend == "generalized"


def test_algo_choices_are_the_registrys_when_asked():
    assert FIELDS["algo"].choices == ALGOS == algorithms.names()
    my_aes = dataclasses.replace(algorithms.get("aes-rl"), name="my-aes")
    algorithms.register(my_aes)
    try:
        assert "my-aes" in FIELDS["algo"].choices and "my-aes" in config.ALGOS
        assert Config(algo="my-aes").algorithm is my_aes
    finally:
        algorithms.unregister("my-aes")
    with pytest.raises(ValueError, match=r"^algo: unknown 'my-aes'; allowed: aes-rl, acem-rl"):
        Config(algo="my-aes")


def test_each_algorithms_own_numbers_are_declared_beside_its_code_and_joined_into_config():
    from aes_rl import td3
    from aes_rl.es import acem, aes, cem, one_plus_one, strategies

    modules = (aes, cem, acem, one_plus_one, strategies, td3)
    assert config.OPTION_GROUPS == tuple(m.OPTIONS for m in modules)
    own = {}
    for module in modules:
        for name, f in module.OPTIONS.items():
            assert FIELDS[name] is f.metadata["spec"], name  # the module's declaration itself
            assert FIELDS[name].owner, name
            own[name] = module
    shared = [n for n in FIELDS if n not in own]
    assert all(FIELDS[n].owner == "" for n in shared)
    assert own["acem_ring"] is acem and own["mean_param"] is aes and own["expl_noise"] is td3
    # a name declared twice is refused when Config is assembled
    with pytest.raises(ValueError, match="'mean_rule' is declared twice"):
        original = config.OPTION_GROUPS
        try:
            config.OPTION_GROUPS = original + (aes.OPTIONS,)
            config._assemble()
        finally:
            config.OPTION_GROUPS = original


def test_params_of_builds_each_es_from_a_runs_structure_and_traced_numbers():
    from aes_rl.es import acem, aes, cem, one_plus_one

    cfg = preset("probe", "acem-rl", acem_ring=6, n_parents=2, damp_tau=0.5, damp_init=0.25)
    p = acem.params_of(cfg.structure(), engine.HParams.of(cfg))
    assert (p.ring_size, p.n_parents, p.scale_var) == (6, 2, False)
    assert (float(p.damp_tau), float(p.damp_init)) == (0.5, 0.25)
    cfg = preset(
        "probe", "one-plus-one", success_window=7, success_factor=0.5, success_threshold=0.25
    )
    p = one_plus_one.params_of(cfg.structure(), engine.HParams.of(cfg))
    assert (p.window_size, float(p.factor), float(p.success_threshold)) == (7, 0.5, 0.25)
    cfg = preset("probe", "p-cem-rl", pop_size=6, damp_limit=0.125)
    p = cem.params_of(cfg.structure(), engine.HParams.of(cfg))
    assert (p.pop_size, p.n_parents, float(p.damp_limit)) == (6, 3, 0.125)
    cfg = preset("probe", mean_rule="fixed-sigmoid", var_rule="fixed", mean_param=7.0)
    h = engine.HParams.of(cfg)
    p = aes.params_of(cfg.structure(), h)
    # rules are traced indices into the declared choices; ints int32, the rest float32
    assert int(p.mean_rule) == aes.MEAN_RULES.index("fixed-sigmoid") == 1
    assert int(p.var_rule) == aes.VAR_RULES.index("fixed") == 0
    assert float(p.mean_param) == 7.0
    for name in HYPER:
        want = "int32" if KINDS[name] in ("int", "str") else "float32"
        assert getattr(h, name).dtype == want, name
