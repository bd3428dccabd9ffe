"""The slot loop (docs/algorithm.md §2 and §6) on pure-JAX envs with known episode lengths."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_trees_equal, probe_cfg, sub_jaxprs

from aes_rl import engine, program
from aes_rl.engine import envstep
from aes_rl.es import aes

# countdown episodes of exactly L steps; warm-up never ends, so every job is an ES rollout.
L = 4


def countdown_cfg(algo="aes-rl", **kw):
    base = dict(
        env="countdown",
        env_kwargs=(("max_length", L), ("min_length", L)),
        episode_length=L,
        warmup_steps=10**9,
        num_slots=4,
        n_mean_evals=2,
    )
    base.update(kw)
    return probe_cfg(algo, **base)


def run(cfg, ticks, seeds=(0,)):
    state = program.init_batch(cfg, seeds)
    return program.make_train_chunk(cfg, len(seeds), ticks)(state)


def test_each_slot_arrives_exactly_when_its_staggered_counters_say():
    cfg = countdown_cfg()
    _, m = run(cfg, 40)
    arrived = np.asarray(m.arrived[0])  # [ticks, W]
    # Slot w starts with its step counter at w*L/W = w, so its first (truncated) rollout takes
    # L - w ticks, then 2 mean-evaluation episodes of L ticks: first arrival at tick
    # (L - w) + 2L - 1 (0-based), then one every L + 2L = 12 ticks.
    for w in range(4):
        want = [t for t in range(40) if t >= 11 - w and (t - (11 - w)) % 12 == 0]
        assert np.flatnonzero(arrived[:, w]).tolist() == want
    assert arrived.sum(axis=1).max() == 1  # staggered: never two arrivals in one tick
    first_len = np.asarray(m.length[0])[np.argmax(arrived, axis=0), range(4)]
    assert first_len.tolist() == [4, 3, 2, 1]


def test_without_staggering_all_slots_arrive_together():
    _, m = run(countdown_cfg(stagger=False), 40)
    counts = np.asarray(m.arrived[0]).sum(axis=1)
    assert np.flatnonzero(counts).tolist() == [11, 23, 35]
    assert counts[[11, 23, 35]].tolist() == [4, 4, 4]


def test_same_tick_arrivals_equal_telling_them_one_by_one():
    cfg = countdown_cfg(stagger=False)
    chunk = program.make_train_chunk(cfg, 1, 11)  # ticks 0..10: just before the joint arrival
    state = chunk(program.init_batch(cfg, [3]))[0]
    before = jax.tree.map(lambda x: x[0], state.es)
    after, m = program.make_train_chunk(cfg, 1, 1)(state)
    assert int(m.arrived.sum()) == 4
    sl = jax.tree.map(lambda x: x[0], after.slots)
    mean_rets = sl.eval_sum / sl.eval_count
    params = aes.AESParams(
        mean_rule=cfg.mean_rule,
        var_rule=cfg.var_rule,
        mean_param=cfg.mean_param,
        var_min=cfg.var_min,
    )
    es = before
    ps = []
    for w in range(4):  # slot order
        es, p = aes.tell(es, sl.x[w], sl.ret[w], mean_rets[w], params)
        ps.append(float(p))
    got = jax.tree.map(lambda x: x[0], after.es)
    np.testing.assert_allclose(got.mean, es.mean, rtol=0, atol=1e-7)
    # the compiled tells may fuse (x - mu_old) * (x - mu_new) - v differently from eager ones:
    # a few f32 ulps of v (~1e-3); another slot order would differ by far more
    np.testing.assert_allclose(got.var, es.var, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(np.asarray(m.p[0, 0]), ps, atol=1e-7)
    assert float(after.counters.f_mu[0]) == pytest.approx(float(mean_rets[3]))
    assert not np.array_equal(got.mean, before.mean)  # the arrivals did move the mean


def test_synchronous_barrier_idle_slot_ticks_match_the_episode_lengths():
    # p-cem-rl, W=4, 10 members of L ticks: rounds of 4, 4, 2 members -> a generation lasts
    # 3L = 12 ticks with 10L = 40 busy slot-ticks out of 48 (utilisation 5/6).
    cfg = countdown_cfg("p-cem-rl", pop_size=10, n_mean_evals=0)  # no mean-evaluation stage
    state, m = run(cfg, 36)
    c = state.counters
    assert int(c.ticks[0]) == 36 and int(c.busy[0]) == 3 * 40
    assert int(c.arrivals[0]) == 30
    assert np.asarray(m.arrived[0]).sum(axis=1)[[3, 7, 11]].tolist() == [4, 4, 2]
    # the same 10 members on AES-RL's asynchronous loop keep every slot busy
    state, _ = run(countdown_cfg("aes-rl"), 36)
    assert int(state.counters.busy[0]) == 4 * 36


def test_one_slot_cem_rl_is_never_idle_and_sees_generations_of_ten():
    state, m = run(countdown_cfg("cem-rl", num_slots=1, n_mean_evals=0), 80)
    assert int(state.counters.busy[0]) == 80
    assert int(state.counters.arrivals[0]) == 20


def test_critic_never_ahead_of_counted_steps_and_rl_share_converges_to_rho():
    for rho in (0.5, 0.2):
        cfg = probe_cfg(
            num_slots=3, critic_steps_per_tick=8, rho=rho, actor_steps_per_tick=50, n_mean_evals=1
        )
        state = program.init_batch(cfg, [0])
        chunk = program.make_train_chunk(cfg, 1, 100)
        for _ in range(4):
            state, _ = chunk(state)
            c = state.counters
            assert int(c.critic_steps[0]) <= int(c.total_steps[0])
        assert int(c.critic_steps[0]) >= int(c.total_steps[0]) - 8  # it keeps up otherwise
        n_rl, n_es = int(c.n_rl[0]) - 1, int(c.n_es[0]) - 1
        assert n_rl + n_es > 30
        assert abs(n_rl / (n_rl + n_es) - rho) < 0.05


def test_two_seeds_in_one_program_equal_the_seeds_run_apart():
    cfg = probe_cfg()
    both, mb = run(cfg, 60, seeds=(0, 1))
    for i, seed in enumerate((0, 1)):
        alone, ma = run(cfg, 60, seeds=(seed,))
        one = jax.tree.map(lambda x, i=i: x[i : i + 1], both)
        np.testing.assert_allclose(one.es.mean, alone.es.mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(one.counters.total_steps, alone.counters.total_steps)
        np.testing.assert_array_equal(mb.arrived[i], ma.arrived[0])
        np.testing.assert_allclose(mb.ret[i], ma.ret[0], rtol=1e-5, atol=1e-6)


def test_same_seed_is_bit_identical_and_the_chunk_compiles_once():
    cfg = probe_cfg("td3")
    chunk = program.make_train_chunk(cfg, 1, 50)
    a = chunk(chunk(program.init_batch(cfg, [0]))[0])[0]
    b = chunk(chunk(program.init_batch(cfg, [0]))[0])[0]
    assert chunk._cache_size() == 1  # four calls, one trace and compile
    assert_trees_equal(a, b)
    c = chunk(chunk(program.init_batch(cfg, [1]))[0])[0]
    assert not np.array_equal(a.learner.actor, c.learner.actor)


@pytest.mark.parametrize(
    "algo,slots",
    [
        ("aes-rl", 5),
        ("aes-rl", 2),
        ("acem-rl", 3),
        ("one-plus-one", 3),
        ("p-cem-rl", 4),
        ("cem-rl", 1),
        ("td3", 1),
    ],
)
def test_every_algorithm_learns_the_probe(algo, slots):
    """Random actions score about -4.2 over 10 steps; the optimum is 0."""
    cfg = probe_cfg(algo, num_slots=slots, ticks_per_chunk=400)
    state = program.init_batch(cfg, [0])
    evaluate = program.make_evaluate(cfg, 10)
    start = float(evaluate(program.mean_params(cfg, state), jax.random.key(9)).mean())
    chunk = program.make_train_chunk(cfg, 1)
    for _ in range(4):
        state, _ = chunk(state)
    final = float(evaluate(program.mean_params(cfg, state), jax.random.key(9)).mean())
    assert final > -0.35, (start, final)
    assert final > start + 0.5


def test_an_evosax_strategy_drives_the_synchronous_loop():
    from aes_rl.es.strategies import EvosaxState

    cfg = probe_cfg("p-cem-rl", es="evosax:SNES", num_slots=4, ticks_per_chunk=400, var_init=0.01)
    state = program.init_batch(cfg, [0])
    assert isinstance(state.es, EvosaxState)
    mean0 = np.asarray(program.mean_params(cfg, state))
    evaluate = program.make_evaluate(cfg, 10)
    start = float(evaluate(mean0, jax.random.key(1)).mean())
    chunk = program.make_train_chunk(cfg, 1)
    for _ in range(4):
        state, _ = chunk(state)
    final = float(evaluate(program.mean_params(cfg, state), jax.random.key(1)).mean())
    assert int(state.counters.arrivals[0]) >= 3 * cfg.pop_size  # several generations told
    assert not np.allclose(np.asarray(program.mean_params(cfg, state)), mean0)
    assert final > start + 0.5 and final > -0.35


def test_every_episode_starts_fresh_and_the_buffer_keeps_true_final_observations():
    # countdown lengths are drawn at reset: a slot whose episodes all had the same length would
    # reveal a reused initial state (Brax's AutoResetWrapper trap).
    cfg = countdown_cfg(
        "acem-rl",  # needs no mean fitness, so every rollout arrives at once
        env_kwargs=(("max_length", 9), ("min_length", 3)),
        episode_length=20,
        n_mean_evals=0,
        num_slots=2,
        stagger=False,
    )
    state, m = run(cfg, 200)
    for w in range(2):
        lengths = np.asarray(m.length[0])[np.asarray(m.arrived[0])[:, w], w]
        assert len(lengths) > 15 and len(set(lengths.tolist())) >= 4
    buf = jax.tree.map(lambda x: x[0], state.buffer)
    n = int(buf.size)
    last_left = np.asarray(buf.data.next_obs[:n, -1])
    terminal = np.asarray(buf.data.not_done[:n]) == 0
    assert terminal.sum() > 30
    np.testing.assert_array_equal(last_left[terminal], 0.0)  # the true final observation
    assert not np.any(last_left == 1.0)  # never a reset observation as next_obs


def test_the_loop_stores_a_time_limit_truncation_as_not_done_and_a_termination_as_done():
    """The loop, not the test, turns an episode's end into `not_done`: countdown episodes of
    3 to 9 steps under a time limit of 6 end both ways; one that terminates leaves 0 as the
    last observation entry, one cut by the limit a positive fraction."""

    def stored(lengths, ticks=150):
        cfg = countdown_cfg(
            "acem-rl",
            env_kwargs=(("max_length", lengths[1]), ("min_length", lengths[0])),
            episode_length=6,
            n_mean_evals=0,
            num_slots=2,
        )
        state, m = run(cfg, ticks)
        buf = jax.tree.map(lambda x: x[0], state.buffer)
        n = int(buf.size)
        return np.asarray(buf.data.not_done[:n]), np.asarray(buf.data.next_obs[:n, -1]), m

    not_done, left, m = stored((9, 9))  # every episode cut by the time limit
    assert int(np.asarray(m.arrived).sum()) >= 40
    np.testing.assert_array_equal(not_done, 1.0)
    not_done, left, _ = stored((3, 9))
    np.testing.assert_array_equal(not_done, (left != 0).astype(np.float32))
    assert (not_done == 0).sum() > 10  # terminations happened


def _input_shapes(jaxpr):
    """Shapes of every input of every equation in a jaxpr, nested ones included."""
    for eqn in jaxpr.eqns:
        for v in eqn.invars:
            if hasattr(v, "aval") and hasattr(v.aval, "shape"):
                yield tuple(v.aval.shape)
        for sub in sub_jaxprs(eqn):
            yield from _input_shapes(sub)


def _scans(jaxpr, length: int):
    """Every `scan` of this length anywhere in a jaxpr (inside branches too)."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "scan" and eqn.params["length"] == length:
            yield eqn
        for sub in sub_jaxprs(eqn):
            yield from _scans(sub, length)


@pytest.mark.parametrize("algo", ["aes-rl", "p-cem-rl"])
def test_the_env_steps_read_the_actors_as_layers_made_before_their_loop(algo):
    """Inside a tick's env-step loops (all W slots; the few acting ones, `acting_capacity`)
    no equation reads the slots' flat actor vectors [W, d]: the layers they act with are made
    once before the loop (on a GPU, reading them from the flat vectors copied every slot's
    weights into another layout at every env step)."""
    cfg = probe_cfg(algo, num_slots=3, env_steps_per_tick=4)
    s = program.build(cfg)
    state = program.init(cfg, jax.random.key(0))
    flat = state.slots.params.shape
    jaxpr = jax.make_jaxpr(lambda st: engine.tick(s, st))(state).jaxpr
    # the env steps (the actor and critic loops have other lengths): all W slots, and the
    # path of the few (here 1 of 3)
    loops = list(_scans(jaxpr, 4))
    few = engine.acting_capacity(3)
    assert few == 1 and len(loops) == 2
    widths = []
    for eqn in loops:
        shapes = list(_input_shapes(eqn.params["jaxpr"].jaxpr))
        assert shapes and flat not in shapes
        # the layers are what they read: [slots, in, out] kernels
        h = cfg.actor_hidden
        widths += [k for k in (3, few) if (k, h[0], h[1]) in shapes]
    assert sorted(widths) == [few, 3]


def test_compiled_programs_are_dropped_only_near_the_memory_map_limit(monkeypatch):
    """A compiled chunk holds memory mappings while the caches keep it; `clear_caches` gives
    them back, and `bound_compiled_programs` clears only past its fraction of the limit."""
    held, allowed = program.memory_maps()
    if not allowed:
        pytest.skip("no /proc: no limit on memory mappings to guard")
    cfg = probe_cfg(num_slots=3, rho=0.25)
    state = program.init_batch(cfg, (0,))
    jax.block_until_ready(program.make_train_chunk(cfg, 1, 20)(state))
    with_program = program.memory_maps()[0]
    program.clear_caches()
    assert program.memory_maps()[0] < with_program - 100  # the chunk's code mappings are gone

    cleared = []
    monkeypatch.setattr(program, "clear_caches", lambda: cleared.append(True))
    monkeypatch.setattr(program, "memory_maps", lambda: (600, 1000))
    assert program.bound_compiled_programs(0.6) is False and not cleared  # 600 <= 0.6 * 1000
    assert program.bound_compiled_programs(0.5) is True and cleared == [True]
    monkeypatch.setattr(program, "memory_maps", lambda: (0, 0))  # no /proc: never clears
    assert program.bound_compiled_programs(0.0) is False and cleared == [True]


def _run_ticks_recording(cfg, ticks: int, monkeypatch):
    """`ticks` ticks of one row, recording at each tick's start how many slots act and, for
    every env step taken, how many slots it stepped (in execution order)."""
    events = []
    real = engine.env_step

    def recorded(s, state, sl, *args, **kw):
        jax.debug.callback(lambda n: events.append(("step", int(n))), sl.phase.shape[0],
                           ordered=True)
        return real(s, state, sl, *args, **kw)

    monkeypatch.setattr(envstep, "env_step", recorded)
    s = program.build(cfg)

    def tick(st, _):
        ph = st.slots.phase
        n = jnp.sum((ph == engine.ROLLOUT) | (ph == engine.MEAN_EVAL))
        jax.debug.callback(lambda k: events.append(("tick", int(k))), n, ordered=True)
        st, m = engine.tick(s, st)
        return st, m.env_path

    state = program.init(cfg, jax.random.key(1))
    state, paths = jax.jit(lambda st: jax.lax.scan(tick, st, None, length=ticks))(state)
    jax.effects_barrier()
    monkeypatch.undo()
    per_tick = []
    for kind, n in events:
        if kind == "tick":
            per_tick.append((n, []))
        else:
            per_tick[-1][1].append(n)
    return state, per_tick, np.asarray(paths)


def test_a_tick_steps_only_the_envs_its_acting_slots_need(monkeypatch):
    """No env step in a tick where no slot rolls out or evaluates the mean; the acting slots
    alone where they are at most `acting_capacity(W)`; all W slots otherwise."""
    cfg = probe_cfg(
        num_slots=4, env_steps_per_tick=3, actor_steps_per_tick=1, warmup_steps=20,
        buffer_size=3_998,
    )
    cap = engine.acting_capacity(4)
    _, per_tick, paths = _run_ticks_recording(cfg, 150, monkeypatch)
    seen = set()
    for (n_acting, widths), path in zip(per_tick, paths, strict=True):
        want = [] if n_acting == 0 else [cap if n_acting <= cap else 4] * 3
        assert widths == want, (n_acting, widths)
        # the tick reports the path it took (`TickMetrics.env_path`)
        assert path == (0 if not widths else 1 if widths[0] == cap else 2), (widths, path)
        seen.add(int(path))
    assert seen == {0, 1, 2} and cap == 2  # every path was taken


def test_stepping_the_few_acting_slots_equals_stepping_all_of_them(monkeypatch):
    """The path of the few acting slots computes what stepping all W slots computes: the same
    episodes, counters and buffer rows (in the same order), up to the rounding of a narrower
    batch of the simulator; the random actions of the warm-up are drawn for all W slots."""
    cfg = probe_cfg(
        num_slots=4, env_steps_per_tick=3, actor_steps_per_tick=1, warmup_steps=20,
        buffer_size=3_997,
    )
    s = program.build(cfg)
    real = engine.acting_capacity
    steps = {}
    for name, cap in (("few", real), ("all", lambda w: w)):
        monkeypatch.setattr(envstep, "acting_capacity", cap)
        step = jax.jit(lambda st: engine.step_envs(s.bind(st.hp), st, jax.random.key(7)))
        steps[name] = step.lower(program.init(cfg, jax.random.key(0))).compile()  # with `cap`
    monkeypatch.undo()
    advance = jax.jit(
        lambda st: jax.lax.scan(lambda x, _: (engine.tick(s, x)[0], None), st, None, length=3)[0]
    )
    state = program.init(cfg, jax.random.key(2))
    compared = set()
    for _ in range(60):
        state = advance(state)
        ph = np.asarray(state.slots.phase)
        n = int(np.sum((ph == engine.ROLLOUT) | (ph == engine.MEAN_EVAL)))
        (few, few_done, _), (all_, all_done, _) = steps["few"](state), steps["all"](state)
        np.testing.assert_array_equal(few_done, all_done)
        for a, b in zip(jax.tree.leaves(few), jax.tree.leaves(all_)):
            if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
                a, b = jax.random.key_data(a), jax.random.key_data(b)
            if jnp.issubdtype(a.dtype, jnp.floating):
                np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
            else:
                np.testing.assert_array_equal(a, b)
        moved = int(few.counters.total_steps) - int(state.counters.total_steps)
        compared.add((min(n, 3), moved > 0))
    assert {(1, True), (2, True)} <= compared  # the few path stepped rollouts of 1 and 2 slots
