"""Real Brax physics through the whole machinery (compiles for tens of seconds: `slow`)."""

import jax
import numpy as np
import pytest

from aes_rl import checkpoint, cli, program
from aes_rl.config import ALGOS, preset

pytestmark = pytest.mark.slow


def hopper_cfg(algo, **kw):
    base = dict(
        actor_hidden=(16, 16),
        critic_hidden=(16, 16),
        ticks_per_chunk=150,
        warmup_steps=150,
        buffer_size=5000,
        batch_size=32,
        n_mean_evals=1,
        env_steps_per_tick=1,  # a cheap clock: one env step a tick
        actor_steps_per_tick=2,
        critic_steps_per_tick=1,
        episode_length=50,
    )
    if algo in ("cem-rl", "p-cem-rl"):
        base.update(pop_size=4, rl_members=2)  # short generations: RL members within 3 chunks
    if algo == "cem-rl":
        base["num_slots"] = 1
    elif algo != "td3":
        base["num_slots"] = 3
    base.update(kw)
    return preset("hopper", algo, **base)


@pytest.mark.parametrize("algo", ALGOS)
def test_every_algorithm_runs_chunks_on_brax_hopper(algo):
    cfg = hopper_cfg(algo)
    state = program.init_batch(cfg, [0])
    chunk = program.make_train_chunk(cfg, 1)
    for _ in range(3):
        state, m = chunk(state)
    c = jax.device_get(state.counters)
    assert int(c.total_steps[0]) > cfg.warmup_steps
    assert 0 < int(c.critic_steps[0]) <= int(c.total_steps[0])
    assert int(c.arrivals[0]) > 0
    rets = np.asarray(m.ret[0])[np.asarray(m.arrived[0])]
    assert np.all(np.isfinite(rets)) and rets.size > 0
    assert np.all(np.isfinite(np.asarray(program.mean_params(cfg, state))))
    if algo != "td3":
        assert int(c.actor_steps[0]) > 0  # RL members trained after the warm-up


def test_render_command_writes_an_offline_replay_of_a_brax_policy(tmp_path, capsys):
    cfg = hopper_cfg("aes-rl")
    flat = program.build(cfg).actor.init_flat(jax.random.key(0))
    policy = checkpoint.export_policy(tmp_path / "policy.npz", cfg, flat)
    out = tmp_path / "hop.html"
    cli.main(["render", str(policy), "--out", str(out)])
    assert "wrote" in capsys.readouterr().out
    html = out.read_text()
    assert "<script" in html and "https://unpkg" not in html and "cdn.jsdelivr" not in html
    assert out.stat().st_size > 100_000
