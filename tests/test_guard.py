"""Never lose a run: the non-finite guard, honest arrival records, the progress ETA."""

import csv
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import probe_cfg
from test_loop import countdown_cfg

from aes_rl import checkpoint, cli, program, run
from aes_rl.families import generation


def settings(path, **kw):
    base = dict(steps=900, seeds=(0,), progress=False, eval_episodes=2)
    base.update(kw)
    return run.RunSettings(str(path), **base)


def chunks(cfg, n, seeds=(0,)):
    state = program.init_batch(cfg, seeds)
    chunk = program.make_train_chunk(cfg, len(seeds))
    out = []
    for _ in range(n):
        state, m = chunk(state)
        out.append(jax.device_get(m))
    return state, jax.tree.map(lambda *x: np.concatenate(x, axis=1), *out)


# ------------------------------------------------------------------ in the loop


@pytest.mark.parametrize("algo,slots", [("aes-rl", 3), ("p-cem-rl", 4)])
def test_nonfinite_arrivals_are_not_told_and_never_reach_the_buffer(algo, slots):
    # nan_prob: about 30% of episodes (rollouts and mean evaluations) have NaN rewards.
    cfg = probe_cfg(algo, num_slots=slots, env_kwargs=(("nan_prob", 0.3),))
    state, m = chunks(cfg, 4)
    c = jax.tree.map(lambda x: np.asarray(x)[0], state.counters)
    arrived, told = np.asarray(m.arrived[0]), np.asarray(m.told[0])
    rets = np.asarray(m.ret[0])
    assert c.nonfinite_arrivals > 5 and c.nonfinite_transitions > 50
    assert c.nonfinite_arrivals == int((arrived & ~told).sum())
    assert int(arrived.sum()) == c.arrivals
    # every arrival with a NaN return is left out, p = 0 for it
    assert not told[arrived & ~np.isfinite(rets)].any()
    assert np.all(np.asarray(m.p[0])[arrived & ~told] == 0.0)
    if algo == "aes-rl":  # and told ones are finite (their f_mu too: the tell moved the mean)
        assert told.sum() > 5 and np.isfinite(rets[told]).all()
    es = jax.tree.map(lambda x: x[0], state.es)
    assert np.isfinite(np.asarray(es.mean)).all() and np.isfinite(np.asarray(es.var)).all()
    assert np.isfinite(float(c.f_mu))
    buf = jax.tree.map(lambda x: np.asarray(x)[0], state.buffer)
    n = int(buf.size)
    for field in buf.data:
        assert np.isfinite(field[:n]).all()
    assert program.nonfinite_parts(cfg, state) == []


def test_a_generation_with_nonfinite_members_ranks_them_last():
    # CEM keeps the 5 best of 10: a NaN member must never be a parent.
    rets = jnp.array([3.0, jnp.nan, 1.0, -jnp.inf, 2.0, 0.5, jnp.inf, 4.0, -1.0, 0.0])
    ranked = np.asarray(generation.rank_last_if_nonfinite(rets))
    assert np.isfinite(ranked).all()
    assert ranked[[1, 3, 6]].tolist() == [-2.0, -2.0, -2.0]  # lowest finite (-1) minus 1
    order = np.argsort(-ranked, kind="stable")
    assert set(order[:5]) == {0, 2, 4, 5, 7}
    assert np.asarray(generation.rank_last_if_nonfinite(jnp.full(4, jnp.nan))).tolist() == [0.0] * 4


# ------------------------------------------------------------------ between chunks


def exploding_cfg():
    """Rewards of about -1e37 a step: every return overflows to -inf (never told), and the
    critic's targets blow up once it trains (after a warm-up of 3 chunks)."""
    return probe_cfg(env_kwargs=(("reward_scale", 1e38),), warmup_steps=1200, num_slots=4)


def test_a_nonfinite_state_stops_the_run_before_saving_and_keeps_good_checkpoints(tmp_path):
    cfg = exploding_cfg()
    with pytest.raises(run.NonFiniteError) as err:
        run.train(cfg, settings(tmp_path, steps=5000, keep=2))
    message = str(err.value)
    assert "\n" not in message
    assert "non-finite values in the critic of seed 0 after chunk" in message
    bad_chunk = int(message.split("after chunk ")[1].split()[0])
    assert bad_chunk > 3  # the warm-up chunks were fine
    saved = checkpoint.Checkpointer(tmp_path / "checkpoints").steps()
    assert saved == [bad_chunk - 2, bad_chunk - 1]  # the last good ones, nothing of the bad one
    assert f"last good checkpoint: chunk {bad_chunk - 1}" in message
    logged = [r["chunk"] for r in run.read_metrics(tmp_path)]
    assert logged == list(range(1, bad_chunk))
    assert run.read_metrics(tmp_path)[-1]["nonfinite_arrivals"] > 0  # -inf returns, not told
    # resume restarts from the last good checkpoint, deterministically meets the same wall
    with pytest.raises(run.NonFiniteError, match=f"after chunk {bad_chunk} "):
        run.resume(tmp_path)
    assert checkpoint.Checkpointer(tmp_path / "checkpoints").steps() == saved


def test_the_cli_stops_with_its_own_exit_status_and_one_line(tmp_path, capsys):
    # The CLI takes no env_kwargs: start the run in Python (one warm-up chunk), go on in the CLI.
    run.train(exploding_cfg(), settings(tmp_path / "r", steps=5000, max_chunks=1))
    capsys.readouterr()
    try:
        cli.main(["resume", str(tmp_path / "r"), "--quiet"])
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == run.EXIT_NONFINITE == 3
    assert err[-1].startswith("aes-rl: stopped: non-finite values in the critic of seed 0")


def test_resume_skips_checkpoints_holding_nonfinite_values(tmp_path):
    cfg = probe_cfg()
    run.train(cfg, settings(tmp_path, max_chunks=2))
    ckpt = checkpoint.Checkpointer(tmp_path / "checkpoints")
    template = program.init_batch(cfg, [0])
    _, good, meta = ckpt.restore_latest(template)
    poisoned = good.replace(es=good.es.replace(mean=good.es.mean.at[0, 3].set(jnp.nan)))
    ckpt.save(3, poisoned, dict(meta, chunk=3))
    with pytest.warns(UserWarning, match="checkpoint 3 is not resumable \\(non-finite ES state\\)"):
        reject = run._nonfinite_reason(program.get(cfg, 1))
        chunk, state, _ = ckpt.restore_latest(template, reject=reject)
    assert chunk == 2 and ckpt.steps() == [1, 2, 3]  # skipped, kept in place (not corrupt)
    assert program.nonfinite_parts(cfg, state) == []


def test_a_checkpoint_of_another_format_is_refused_in_one_line_and_kept(tmp_path):
    run.train(probe_cfg(), settings(tmp_path, max_chunks=1))
    meta_file = tmp_path / "checkpoints" / "1" / "meta" / "metadata"
    meta = json.loads(meta_file.read_text())
    meta_file.write_text(json.dumps(dict(meta, format_version=1)))
    with pytest.raises(checkpoint.CheckpointError, match="written in format 1 by another aes_rl"):
        run.resume(tmp_path)
    assert (tmp_path / "checkpoints" / "1").exists()
    assert not (tmp_path / "corrupt_checkpoints").exists()


# ------------------------------------------------------------------ honest records


def test_arrivals_record_the_arriving_members_kind():
    """Countdown episodes of L = 4 steps, 1 mean evaluation: an ES job arrives 2L = 8 ticks after
    the slot's previous arrival; an RL job first trains B_a = 10 * 4 = 40 actor steps at 10 a tick
    (4 ticks), so it arrives 12 ticks after. The gap says which member arrived."""
    cfg = countdown_cfg(
        warmup_steps=100,
        n_mean_evals=1,
        stagger=False,
        actor_steps_per_tick=10,
        ticks_per_chunk=100,
    )
    state, m = chunks(cfg, 3)
    arrived, is_rl = np.asarray(m.arrived[0]), np.asarray(m.is_rl[0])
    kinds = {8: [], 12: []}
    for w in range(cfg.num_slots):
        ticks = np.flatnonzero(arrived[:, w])
        for prev, t in zip(ticks[:-1], ticks[1:]):
            if prev > 40:  # well past the warm-up (100 steps / 4 slots = 25 ticks)
                kinds[int(t - prev)].append(bool(is_rl[t, w]))
    assert set(kinds) == {8, 12}
    assert len(kinds[8]) > 10 and len(kinds[12]) > 10
    assert not any(kinds[8]) and all(kinds[12])


def test_arrivals_csv_is_rl_matches_the_loop_and_told_is_written(tmp_path):
    cfg = countdown_cfg(warmup_steps=100, n_mean_evals=1, stagger=False, ticks_per_chunk=100)
    run.train(cfg, settings(tmp_path, steps=1500))
    with (tmp_path / "arrivals.csv").open() as f:
        rows = list(csv.DictReader(f))
    by_slot: dict[int, list[dict]] = {}
    for r in rows:
        by_slot.setdefault(int(r["slot"]), []).append(r)
    checked = 0
    for slot_rows in by_slot.values():
        for prev, r in zip(slot_rows[:-1], slot_rows[1:]):
            gap = int(r["tick"]) - int(prev["tick"])
            if int(prev["tick"]) > 40:
                assert int(r["is_rl"]) == (gap == 12), (prev, r)
                checked += 1
    assert checked > 20
    assert all(r["told"] == "1" for r in rows)


# ------------------------------------------------------------------ progress


def test_eta_uses_a_recent_window_past_warm_up_and_compile():
    clock = iter([10.0, 11.0, 12.0, 14.0, 15.0, 16.0])
    p = run.Progress(total=1000, warmup=100, enabled=True, window=2, clock=lambda: next(clock))
    shown = []
    for steps in (50, 150, 250, 350, 450, 550):
        p.update(steps, 1.0, 0.0, 0.0)
        shown.append(p.eta(steps))
    p.close()
    assert shown == [
        "? (warming up)",  # the call's first chunk (compile) is no rate sample
        "? (measuring)",  # nor the chunk that started inside the warm-up
        "00:00:07",  # 100 steps in 1 s: 750 left -> 7.5 s
        "00:00:09",  # 200 steps in 1 + 2 s: 650 left -> 9.75 s
        "00:00:08",  # window of 2 chunks: 200 steps in 2 + 1 s: 550 left -> 8.25 s
        "00:00:04",  # 200 steps in 1 + 1 s: 450 left -> 4.5 s (since the start: 5.4 s)
    ]
