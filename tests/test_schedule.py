"""Faithful baselines and the clock: generation stages, the serial critic, critic snapshots,
the antithetic layout and what a tick costs, traced tick by tick on countdown episodes."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import probe_cfg
from test_loop import countdown_cfg

from aes_rl import clock, engine, program, replay, run, td3
from aes_rl.config import preset
from aes_rl.engine import CRITIC, MEAN_EVAL, ROLLOUT, TRAIN, WAIT, Rate


def first(tree):
    return jax.tree.map(lambda x: np.asarray(x)[0], tree)


def trace(cfg, ticks):
    """Per tick (before it runs): stage, slot phases and members, counters, the generation's
    rows and slot 0's policy. One compiled one-tick chunk, called `ticks` times."""
    state = program.init_batch(cfg, [0])
    step = program.make_train_chunk(cfg, 1, 1)
    rows = []
    for t in range(ticks):
        sl = first(state.slots.replace(env=None, critic=None, opt=None))
        g, c = first(state.fam), first(state.counters)
        rows.append(
            dict(
                t=t,
                stage=int(g.stage),
                phase=sl.phase.tolist(),
                member=sl.member.tolist(),
                critic=int(c.critic_steps),
                actor=int(c.actor_steps),
                steps=int(c.total_steps),
                xs=g.xs,
                params0=sl.params[0],
                busy=int(c.busy),
                mean=first(state.es).mean,
            )
        )
        state, _ = step(state)
    return rows, state


def test_rates_give_their_count_over_a_period():
    for value, num, den in [(10.0, 10, 1), (0.25, 1, 4), (2.5, 5, 2), (1 / 3, 1, 3)]:
        r = Rate.of(value)
        assert (r.num, r.den) == (num, den)
        counts = [int(r.at(jnp.asarray(t))) for t in range(4 * den)]
        assert sum(counts) == 4 * num and max(counts) == r.most
    # 1/3: one unit every third tick; 5/2: 2, 3, 2, 3, ...
    assert [int(Rate.of(1 / 3).at(jnp.asarray(t))) for t in range(6)] == [0, 0, 1, 0, 0, 1]
    assert [int(Rate.of(2.5).at(jnp.asarray(t))) for t in range(4)] == [2, 3, 2, 3]


@pytest.fixture(scope="module")
def pcem_trace():
    # W = 4, pop 10, 5 RL members, countdown episodes of L = 4 steps, 1 mean evaluation, clock:
    # 1 env step, 10 actor steps, 2 critic steps a tick. The warm-up is one generation (40 steps).
    cfg = countdown_cfg("p-cem-rl", warmup_steps=40, n_mean_evals=1, stagger=False)
    return cfg, trace(cfg, 104)[0]


def test_pcem_generation_runs_its_stages_in_order_with_barriers(pcem_trace):
    """Hand-computed: warm-up generation: 10 evaluations (3 rounds of L = 12 ticks) then the
    mean's episode (4 ticks); then with S_prev = 40: serial critic 5 x 8 steps at 2 a tick
    (20 ticks), actor training 5 x 40 steps at 10 a tick on 4 slots (2 rounds, 8 ticks),
    evaluation (12), mean evaluation (4): 44 ticks a generation."""
    _, rows = pcem_trace
    stages = "".join("CAEM"[r["stage"]] for r in rows)
    assert stages == "E" * 12 + "M" * 4 + ("C" * 20 + "A" * 8 + "E" * 12 + "M" * 4) * 2
    # busy slot-ticks of a generation: critic 20, actor 4*4 + 1*4, eval 40, mean 4 (of 4*44)
    assert rows[60]["busy"] - rows[16]["busy"] == 20 + 20 + 40 + 4


def test_serial_critic_steps_and_target_policies(pcem_trace):
    _, rows = pcem_trace
    crit = [r for r in rows if r["stage"] == 0]
    for r in crit:  # only slot 0 works; the others wait
        assert r["phase"] == [CRITIC, WAIT, WAIT, WAIT]
    gen1 = crit[:20]
    # member i's segment: S_prev / 5 = 8 critic steps, at 2 a tick: 4 ticks each, in order
    assert [r["member"][0] for r in gen1] == [i for i in range(5) for _ in range(4)]
    assert [r["critic"] for r in gen1] == list(range(0, 40, 2))
    assert rows[36]["critic"] == 40  # 5 x 8 = S_prev critic steps in the stage
    assert rows[36]["critic"] == rows[60]["critic"]  # no critic step outside the stage
    for r in gen1:  # the target policy is member i's untrained (sampled) actor
        np.testing.assert_array_equal(r["params0"], r["xs"][r["member"][0]])


def test_pcem_actor_stage_trains_the_rl_members_then_all_ten_are_evaluated(pcem_trace):
    _, rows = pcem_trace
    assert rows[36]["phase"] == [TRAIN] * 4 and rows[40]["phase"] == [TRAIN, WAIT, WAIT, WAIT]
    assert rows[44]["actor"] - rows[36]["actor"] == 5 * 40  # S_prev actor steps per member
    xs_before, xs_after = rows[36]["xs"], rows[44]["xs"]
    assert not np.allclose(xs_before[:5], xs_after[:5])  # the RL members were trained
    np.testing.assert_array_equal(xs_before[5:], xs_after[5:])  # the ES members were not
    assert rows[44]["phase"] == [ROLLOUT] * 4  # then the evaluation stage, trained actors
    np.testing.assert_array_equal(rows[44]["params0"], xs_after[0])
    assert rows[56]["phase"] == [MEAN_EVAL, WAIT, WAIT, WAIT]  # after the tell: the new mean
    np.testing.assert_array_equal(rows[57]["params0"], rows[57]["mean"])
    assert not np.allclose(rows[56]["mean"], rows[44]["mean"])


def test_antithetic_layout_rl_members_are_the_plus_half(pcem_trace):
    _, rows = pcem_trace
    for t in (0, 16, 60):  # every generation as asked: rows i and i + 5 mirror each other
        xs, mean = rows[t]["xs"], rows[t]["mean"]
        np.testing.assert_allclose(xs[:5] + xs[5:], np.tile(2 * mean, (5, 1)), atol=1e-6)


def test_parallel_critic_has_no_serial_stage_and_no_cap():
    cfg = countdown_cfg(
        "p-cem-rl",
        warmup_steps=40,
        n_mean_evals=1,
        stagger=False,
        parallel_critic=True,
        critic_steps_per_tick=8,
    )
    rows, _ = trace(cfg, 60)
    stages = "".join("CAEM"[r["stage"]] for r in rows)
    assert "C" not in stages and stages.startswith("E" * 12 + "M" * 4 + "A" * 8 + "E")
    # the critic worker runs every tick after the warm-up, 8 steps a tick, ahead of the data
    assert [rows[t + 1]["critic"] - rows[t]["critic"] for t in range(20, 40)] == [8] * 20
    assert rows[-1]["critic"] > 2 * rows[-1]["steps"]


def test_cem_rl_interleaves_critic_actor_and_rollout_per_member():
    """One slot: member i < 5 gets 8 critic steps (4 ticks), 40 actor steps (4 ticks), then its
    rollout (4 ticks); members 5..9 only their rollout: 5 * 12 + 5 * 4 = 80 ticks."""
    cfg = countdown_cfg("cem-rl", num_slots=1, warmup_steps=40, n_mean_evals=0, stagger=False)
    rows, _ = trace(cfg, 121)
    gen = rows[40:120]
    phases = [r["phase"][0] for r in gen]
    member_job = [CRITIC] * 4 + [TRAIN] * 4 + [ROLLOUT] * 4
    assert phases == member_job * 5 + [ROLLOUT] * 20
    assert [r["member"][0] for r in gen[::4]] == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3 + [4] * 3 + [
        5,
        6,
        7,
        8,
        9,
    ]
    assert rows[120]["critic"] - rows[40]["critic"] == 40


def test_an_rl_job_trains_against_the_critic_as_it_was_when_the_job_started():
    cfg = probe_cfg(num_slots=3, warmup_steps=100, actor_steps_per_tick=1)
    state = program.init_batch(cfg, [0])
    step = program.make_train_chunk(cfg, 1, 1)
    seen = 0
    for _ in range(400):
        before = first(state.slots.replace(env=None, opt=None))
        state, _ = step(state)
        after = first(state.slots.replace(env=None, opt=None))
        live = first(state.learner.params)
        for w in range(3):
            if before.phase[w] == TRAIN and after.phase[w] == TRAIN:
                for a, b in zip(jax.tree.leaves(before.critic), jax.tree.leaves(after.critic)):
                    np.testing.assert_array_equal(a[w], b[w])  # the snapshot never moves
                moved = any(
                    not np.array_equal(a[w], b)
                    for a, b in zip(jax.tree.leaves(after.critic), jax.tree.leaves(live))
                )
                seen += moved
    assert seen > 50  # ... while the live critic went on training


def _same(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_the_critic_worker_trains_in_jobs_against_the_mean_at_each_jobs_start():
    """The authors' critic worker (docs/algorithm.md §2), jobs of J = 5 steps at 4 critic steps
    a tick: a job starts only while the critic is behind the counted steps, then runs to its
    end even past them; its target policy is the ES mean when it started; new RL jobs copy the
    critic the last finished job published. By hand, a tick that starts with L steps left in
    the job and takes n steps ends with L - n left if L >= n, else J - (n - L) (the job ended
    after L steps and one new job took the rest)."""
    j = 5
    cfg = probe_cfg(
        num_slots=3,
        warmup_steps=100,
        actor_steps_per_tick=1,
        critic_steps_per_tick=4,
        critic_job_steps=j,
        rl_history=2,
    )
    state = program.init_batch(cfg, [0])
    step = program.make_train_chunk(cfg, 1, 1)
    starts = ends = ahead = copies = stale = 0
    for _ in range(300):
        job0, c0 = first(state.critic_job), first(state.counters)
        mean0, phase0 = first(state.es).mean, first(state.slots.phase)
        state, _ = step(state)
        job1, c1 = first(state.critic_job), first(state.counters)
        live, sl = first(state.learner.params), first(state.slots.replace(env=None, opt=None))
        n, left = int(c1.critic_steps - c0.critic_steps), int(job0.left)
        assert int(job1.left) == (left - n if left >= n else j - (n - left))
        started = left < n  # a new job took (some of) this tick's steps
        if started:  # ... only while the critic was behind the counted steps, at its start
            assert int(c0.critic_steps) + left < int(c1.total_steps)
            np.testing.assert_array_equal(job1.policy, mean0)
            starts += 1
        else:
            np.testing.assert_array_equal(job1.policy, job0.policy)
        ended = 0 < left <= n
        ends += ended
        assert _same(job1.published, job0.published) != ended
        if ended and left == n:  # the job ended with the tick's last step
            assert _same(job1.published, live)
        ahead = max(ahead, int(c1.critic_steps - c1.total_steps))
        for w in np.flatnonzero((phase0 != TRAIN) & (sl.phase == TRAIN)):
            assert _same(jax.tree.map(lambda x, w=w: x[w], sl.critic), job1.published)
            copies += 1
            stale += not _same(job1.published, live)  # the live critic had moved on
    assert starts > 20 and ends > 20 and copies > 5 and stale > 0
    assert 0 < ahead <= j - 1  # a job runs to its end past the data, never a whole job


def test_critic_jobs_of_one_step_are_a_fresh_mean_and_critic_every_step():
    """J = 1: every step is its own job, so the worker never runs ahead of the counted steps
    and a new RL job copies the live critic."""
    cfg = probe_cfg(
        num_slots=3,
        warmup_steps=100,
        actor_steps_per_tick=1,
        critic_steps_per_tick=4,
        critic_job_steps=1,
    )
    state = program.init_batch(cfg, [0])
    step = program.make_train_chunk(cfg, 1, 1)
    for _ in range(200):
        state, _ = step(state)
        c = first(state.counters)
        assert int(c.critic_steps) <= int(c.total_steps)
        assert _same(first(state.critic_job.published), first(state.learner.params))
    assert int(c.critic_steps) > 100


def test_training_uses_the_snapshot_not_the_live_critic():
    cfg = probe_cfg(num_slots=2, warmup_steps=60, actor_steps_per_tick=1)
    state = program.init_batch(cfg, [0])
    step = program.make_train_chunk(cfg, 1, 1)
    while not bool(jnp.any(state.slots.phase[0] == TRAIN)):
        state, _ = step(state)
    one = jax.tree.map(lambda x: x[0], state)
    s = program.build(cfg)
    key = jax.random.key(5)
    a = engine.train_actors(s, one, key).slots.params
    other = one.replace(learner=jax.tree.map(lambda x: x * 0.0 + 1.0, one.learner))
    b = engine.train_actors(s, other, key).slots.params
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(np.asarray(a), np.asarray(one.slots.params))  # it trained


@pytest.mark.parametrize(
    "rate,ticks",
    [
        (1.0, 6 + 6),  # one env step a tick: 6 + 6
        (4.0, 2 + 2),  # 4 a tick: 4 + 2 (the episode ends mid-tick), twice
        (0.5, 12 + 12),  # one step every other tick
        (2.5, 3 + 3),  # 2, 3, then 2 of the next tick's ... : 6 steps in 3 ticks, twice
    ],
)
def test_an_es_job_takes_the_ticks_its_cost_says(rate, ticks):
    """Countdown episodes of L = 6 steps, one mean evaluation: an ES job is two episodes."""
    cfg = countdown_cfg(
        env_kwargs=(("max_length", 6), ("min_length", 6)),
        episode_length=6,
        n_mean_evals=1,
        stagger=False,
        num_slots=2,
        env_steps_per_tick=rate,
    )
    _, m = program.make_train_chunk(cfg, 1, 60)(program.init_batch(cfg, [0]))
    arrivals = np.flatnonzero(np.asarray(m.arrived[0])[:, 0])
    assert arrivals[0] == ticks - 1 and set(np.diff(arrivals)) == {ticks}


def test_an_rl_job_takes_b_a_over_the_actor_rate():
    """After the warm-up every job's gap between arrivals is 2L = 8 ticks (ES) or 8 plus the
    training: B_a = 10 * 4 = 40 actor steps at 1/3 a tick = 120 ticks (2 ticks at the start
    and end may fall off the 3-tick period)."""
    cfg = countdown_cfg(
        warmup_steps=100,
        n_mean_evals=1,
        stagger=False,
        actor_steps_per_tick=1 / 3,
        ticks_per_chunk=100,
    )
    _, m = program.make_train_chunk(cfg, 1, 1200)(program.init_batch(cfg, [0]))
    arrived, is_rl = np.asarray(m.arrived[0]), np.asarray(m.is_rl[0])
    gaps = {True: set(), False: set()}
    for w in range(cfg.num_slots):
        ticks = np.flatnonzero(arrived[:, w])
        for prev, t in zip(ticks[:-1], ticks[1:]):
            if prev > 40:
                gaps[bool(is_rl[t, w])].add(int(t - prev))
    assert gaps[False] == {8}
    assert gaps[True] and gaps[True] <= {8 + 118, 8 + 119, 8 + 120}


def test_td3_time_is_an_env_step_and_an_update_per_tick(tmp_path):
    cfg = probe_cfg("td3", env_steps_per_tick=10, critic_steps_per_tick=0.5)
    out = run.train(cfg, run.RunSettings(str(tmp_path), steps=300, progress=False))
    row = out.rows[-1]
    assert row["time"] == pytest.approx(row["ticks"] * (1 / 10 + 1 / 0.5))
    assert program.tick_cost(probe_cfg("aes-rl")) == 1.0


def test_paper_clock_is_the_default_and_rates_select_custom():
    cfg = preset("hopper", "aes-rl")
    assert cfg.cost_model == "paper"
    assert (cfg.env_steps_per_tick, cfg.actor_steps_per_tick, cfg.critic_steps_per_tick) == (
        10.0,
        1.0,
        1.0,
    )
    assert preset("hopper", "aes-rl", actor_steps_per_tick=0.5).cost_model == "custom"
    with pytest.raises(ValueError, match="cost_model: 'paper' fixes the rates"):
        preset("hopper", "aes-rl", cost_model="paper", actor_steps_per_tick=0.5)


@pytest.mark.parametrize(
    "env_s, critic_s, expected",
    [
        (1e-4, 5e-4, (10.0, 1.0, 2.0)),  # a tick is one actor step (1 ms): 10 env, 2 critic
        (3e-4, 7e-4, (3.33, 1.0, 1.43)),  # 3.333.. and 1.428..: three significant digits
        (1e-9, 10.0, (1e3, 1.0, 1e-3)),  # 1e6 and 1e-4 clipped to the bounds
    ],
)
def test_the_device_clock_counts_each_unit_in_actor_steps(env_s, critic_s, expected):
    costs = {"env_step_s": env_s, "actor_step_s": 1e-3, "critic_step_s": critic_s}
    assert clock.rates(costs) == expected


def test_configs_that_time_the_same_computation_share_a_device_clock_signature():
    aes = preset("hopper", "aes-rl", actor_hidden=(32, 32), critic_hidden=(32, 32))
    pcem = preset("hopper", "p-cem-rl", actor_hidden=(32, 32), critic_hidden=(32, 32))
    assert clock.signature(aes) == clock.signature(pcem)  # same env, W, nets, batch
    assert clock.signature(aes) == clock.signature(aes.replace(rho=0.9, actor_lr=3e-4))
    for change in ({"num_slots": 3}, {"batch_size": 100}, {"actor_hidden": (64, 64)},
                   {"backend": "generalized"}):
        assert clock.signature(aes) != clock.signature(aes.replace(**change)), change


def test_measure_all_measures_each_computation_once_and_interleaves_them(monkeypatch):
    built, calls = [], []

    def fake_kernels(cfg):
        sig = clock.signature(cfg)
        built.append(sig)

        def kernel(name):
            return (lambda: calls.append((sig, name)) or jnp.zeros(())), ()

        return {n: kernel(n) for n in ("env_step_s", "actor_step_s", "critic_step_s")}

    monkeypatch.setattr(clock, "_kernels", fake_kernels)
    a = probe_cfg(num_slots=3)
    b = a.replace(algo="p-cem-rl")  # same computation as a
    c = a.replace(num_slots=2)
    costs = clock.measure_all([a, b, c], repeats=4, rounds=2)
    sig_a, sig_c = clock.signature(a), clock.signature(c)
    assert built == [sig_a, sig_c]  # b shares a's measurement
    assert costs[0] is costs[1] and costs[0] is not costs[2]
    assert set(costs[2]) == {"env_step_s", "actor_step_s", "critic_step_s"}
    # one warm-up call per kernel, then 2 rounds of 2 timed calls each: a, c, a, c
    assert len(calls) == 2 * 3 + 2 * 3 * 4
    timed = [sig for sig, _ in calls[6:]]
    assert timed == ([sig_a] * 6 + [sig_c] * 6) * 2
    with pytest.raises(ValueError, match="repeats and rounds must be >= 1"):
        clock.measure_all([a], repeats=0)


def test_a_calibrated_clock_is_stored_and_survives_resume(tmp_path, monkeypatch):
    cfg = probe_cfg(cost_model="device")
    out = run.train(cfg, run.RunSettings(str(tmp_path), steps=900, progress=False, max_chunks=2))
    record = json.loads((tmp_path / "config.json").read_text())
    costs = record["calibration"]
    assert set(costs) == {"env_step_s", "actor_step_s", "critic_step_s"}
    assert all(v > 0 for v in costs.values())
    stored = record["config"]
    assert stored["cost_model"] == "device"
    assert (
        stored["env_steps_per_tick"],
        stored["actor_steps_per_tick"],
        stored["critic_steps_per_tick"],
    ) == clock.rates(costs)
    assert out.cfg.env_steps_per_tick == stored["env_steps_per_tick"]

    def no_second_calibration(*args, **kwargs):
        raise AssertionError("a resumed run must keep its clock")

    monkeypatch.setattr(clock, "calibrate", no_second_calibration)
    rest = run.resume(tmp_path, max_chunks=1)
    assert rest.cfg == out.cfg
    after = json.loads((tmp_path / "config.json").read_text())
    assert after["calibration"] == costs and after["config"] == stored


def test_critic_steps_of_a_critic_step_are_what_td3_computes():
    """The serial critic's update equals td3.critic_step with the member as target policy."""
    cfg = countdown_cfg("p-cem-rl", warmup_steps=40, n_mean_evals=1, stagger=False)
    state = program.init_batch(cfg, [0])
    state = program.make_train_chunk(cfg, 1, 17)(state)[0]  # inside the first critic job
    one = jax.tree.map(lambda x: x[0], state)
    assert int(one.slots.phase[0]) == CRITIC
    s = program.build(cfg)
    key = jax.random.key(3)
    got = engine.train_critic(s, one, key).learner
    want = one.learner
    policy = one.slots.params[0]
    for k in jax.random.split(key, 2):
        k_batch, k_noise = jax.random.split(k)
        batch = replay.sample(one.buffer, k_batch, cfg.batch_size)
        want, _ = td3.critic_step(want, batch, policy, k_noise, s.hp, s.actor, s.critic)
        want = td3.soft_update_critic(want, cfg.tau)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_mean_evaluation_runs_its_episodes_one_after_another():
    """Countdown episodes of L = 4 steps, 3 mean-evaluation episodes: an ES job is the rollout
    then 3 episodes one after another (16 ticks), as the authors' workers run them."""
    cfg = countdown_cfg(n_mean_evals=3, stagger=False, num_slots=2)
    state, m = program.make_train_chunk(cfg, 1, 50)(program.init_batch(cfg, [0]))
    arrivals = np.flatnonzero(np.asarray(m.arrived[0])[:, 0])
    assert arrivals[0] == 4 + 3 * 4 - 1 and set(np.diff(arrivals)) == {4 + 3 * 4}
