"""The benchmarks' shared tools: profile summaries and where a run's figures are written."""

import gzip
import json
import math
import os

import jax
import jax.numpy as jnp
import pytest

from benchmarks import common

STEPS = 50


@jax.jit
def _steps(x):
    def body(c, _):
        return jnp.tanh(c @ c.T), None

    return jax.lax.scan(body, x, None, length=STEPS)[0]


def test_trace_summary_counts_each_steps_work(tmp_path):
    x = jnp.full((64, 64), 0.01)
    _steps(x).block_until_ready()  # compiled before the trace
    out = common.traced(_steps, x, tmp_path)
    assert jnp.array_equal(out, _steps(x))
    rows = common.trace_summary(tmp_path, per=STEPS, top=50)
    assert rows and all(r["us"] >= 0 for r in rows)
    assert [r["us"] for r in rows] == sorted((r["us"] for r in rows), reverse=True)
    # the matrix product runs once per step of the scan; the scan's loop once in all
    dots = [r for r in rows if "dot" in r["name"] and not r["name"].startswith("end")]
    assert dots and all(r["calls"] == 1.0 for r in dots)
    loops = [r for r in rows if r["name"].startswith("while")]
    assert loops and loops[0]["calls"] == 1 / STEPS
    assert not any(r["name"].startswith("$") for r in rows)  # no Python frames


def _two_parts(x):
    """A scan whose body has two parts, scoped as the engine's tick scopes its own."""

    def body(c, _):
        with jax.named_scope("critic_steps"):
            c = c @ c.T
        with jax.named_scope("env_steps"):
            c = jnp.sin(c) * 3.0 + 1.0
        return jnp.tanh(c), None

    return jax.lax.scan(body, x, None, length=STEPS)[0]


def test_kernel_parts_split_a_traced_program_by_the_scopes_of_its_instructions(tmp_path):
    x = jnp.full((64, 64), 0.01)
    compiled = jax.jit(_two_parts).lower(x).compile()
    scopes = common.hlo_scopes(compiled.as_text())
    (dot,) = [op for name, op in scopes.items() if name.startswith("dot")]
    assert "critic_steps" in dot.split("/") and common.tick_part(dot) == "critic steps"
    compiled(x).block_until_ready()
    common.traced(compiled, x, tmp_path)
    parts = {p["part"]: p for p in common.kernel_parts(tmp_path, compiled.as_text(), STEPS)}
    assert "critic steps" in parts and parts["critic steps"]["us"] > 0
    assert sum(p["share"] for p in parts.values()) == pytest.approx(1.0)
    assert set(parts) <= {"critic steps", common.ENV_REST, common.REST}


def test_the_tick_scopes_are_the_profilers_parts():
    from aes_rl import engine

    assert [mark for mark, _ in common.TICK_PARTS] == list(engine.SCOPES)
    assert {mark for mark, _ in common.ENV_PARTS} == set(engine.ENV_SCOPES)


def test_a_tick_part_is_its_outermost_tick_scope():
    tick = "jit(one)/while/body/"
    assert common.tick_part(tick + "actor_steps/cond/dot_general") == "actor steps"
    # a function first traced inside one part and reused in another keeps its own scopes
    assert common.tick_part(tick + "job_ends/actor_steps/add") == (
        "job ends (tells, assignment, resets)"
    )
    assert common.tick_part(tick + "env_steps/cond/simulator/mul") == "env steps: the simulator"
    assert common.tick_part(tick + "env_steps/actions/tanh") == "env steps: the actors' actions"
    assert common.tick_part(tick + "env_steps/scatter") == common.ENV_REST
    assert common.tick_part(tick + "add") == common.REST
    assert common.tick_part(tick + "my_actor_steps_helper/add") == common.REST


def test_kernel_parts_give_a_copy_its_command_buffers_part(tmp_path):
    """A GPU trace by hand: kernels named after their fusions (`_N` for `.N`), a copy and a
    library GEMM with no instruction of their own, each inside a command buffer."""
    hlo = "\n".join(
        [
            "HloModule jit_run_chunk",
            "",
            "ENTRY %main (p: f32[4]) -> f32[4] {",
            '  %loop_add_fusion.2 = f32[4] fusion(%p), metadata={op_name="f/critic_steps/add"}',
            '  %loop_sine_fusion = f32[4] fusion(%p), metadata={op_name="f/env_steps/sin"}',
            "}",
        ]
    )
    assert common.hlo_scopes(hlo)["loop_add_fusion.2"] == "f/critic_steps/add"

    def kernel(name, dur, buffer):
        return dict(ph="X", pid=2, tid=1, name=name, ts=0, dur=dur, args=dict(hlo_op=buffer))

    events = [
        dict(ph="M", pid=2, name="process_name", args=dict(name="/device:GPU:0")),
        dict(ph="M", pid=1, name="process_name", args=dict(name="/host:CPU")),
        dict(ph="X", pid=1, tid=1, name="loop_add_fusion.2", ts=0, dur=1000),  # host: ignored
        kernel("loop_add_fusion_2", 30.0, "command_buffer_1"),
        kernel("memcpy32_post", 10.0, "command_buffer_1"),  # critic's buffer
        kernel("loop_sine_fusion", 40.0, "command_buffer_2"),
        kernel("gemm_kernel", 20.0, "command_buffer_3"),  # no matched kernel in its buffer
    ]
    where = tmp_path / "plugins" / "profile" / "run"
    where.mkdir(parents=True)
    with gzip.open(where / "perfetto_trace.json.gz", "wt") as f:
        json.dump(dict(traceEvents=events), f)
    parts = common.kernel_parts(tmp_path, hlo, per=2)
    assert [(p["part"], p["events"], p["us"], p["share"]) for p in parts] == [
        ("critic steps", 1.0, 20.0, 0.4),  # ties keep the order first seen
        ("env steps: the rest (replay writes, bookkeeping)", 0.5, 20.0, 0.4),
        ("unattributed", 0.5, 10.0, 0.2),
    ]


def test_runs_on_another_backend_or_quick_write_their_own_section(tmp_path):
    path = tmp_path / "RESULTS.md"
    assert common.section_key("sweep_rows", False, "cpu") == "sweep_rows"
    for quick, backend in ((False, "cpu"), (True, "cpu"), (False, "gpu"), (True, "gpu")):
        key = common.section_key("sweep_rows", quick, backend)
        common.write_section(key, f"figures {quick} {backend}\n", path)
    text = path.read_text()
    for quick, backend in ((False, "cpu"), (True, "cpu"), (False, "gpu"), (True, "gpu")):
        assert text.count(f"figures {quick} {backend}") == 1  # none replaced another
    assert "<!-- sweep_rows-gpu:start -->" in text and "<!-- sweep_rows-quick-gpu:start -->" in text


def test_a_run_on_another_simulator_or_precision_keeps_its_own_section(monkeypatch):
    from benchmarks import sweep_rows

    monkeypatch.delenv("JAX_DEFAULT_MATMUL_PRECISION", raising=False)  # parse sets it; undone

    def key(*argv):
        args = sweep_rows.parse_args([*argv, "--no-write"])
        return common.section_key("sweep_rows", args.quick, "gpu", common.variant(args))

    before = jax.config.jax_default_matmul_precision
    try:
        assert key() == "sweep_rows-gpu"
        assert key("--backend", "mjx") == "sweep_rows-mjx-gpu"
        assert key("--quick", "--backend", "mjx", "--matmul-precision", "bfloat16") == (
            "sweep_rows-quick-mjx-bfloat16-gpu"
        )
    finally:
        jax.config.update("jax_default_matmul_precision", before)


def test_a_benchmark_records_the_matmul_precision_and_xla_flags_it_ran_with(monkeypatch, capsys):
    from benchmarks import sweep_rows

    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/dump --xla_gpu_graph_min_graph_size=1")
    monkeypatch.delenv("JAX_DEFAULT_MATMUL_PRECISION", raising=False)  # parse sets it; undone
    before = jax.config.jax_default_matmul_precision
    assert common.machine()["matmul_precision"] == "JAX's default"
    try:
        args = sweep_rows.parse_args(["--matmul-precision", "bfloat16", "--no-write"])
        assert args.matmul_precision == "bfloat16"
        m = common.machine()
        assert m["matmul_precision"] == "bfloat16"
        assert jax.config.jax_default_matmul_precision == "bfloat16"
        assert os.environ["JAX_DEFAULT_MATMUL_PRECISION"] == "bfloat16"  # subprocesses too
        # a path outside the checkout is not written into the results
        assert m["xla_flags"] == "--xla_dump_to=<path> --xla_gpu_graph_min_graph_size=1"
    finally:
        jax.config.update("jax_default_matmul_precision", before)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        sweep_rows.parse_args(["--matmul-precision", "fp8"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "matmul-precision" in err and "bfloat16" in err  # the field and its allowed values


def test_t_interval_is_the_students_t_interval_of_the_mean():
    # 1, 2, 3: mean 2, sample sd 1, t(0.975, df=2) = 4.302653 -> half width 4.302653 / sqrt(3)
    mean, lo, hi = common.t_interval([1, 2, 3])
    assert mean == 2.0
    assert lo == pytest.approx(2 - 2.484138, abs=1e-6)
    assert hi == pytest.approx(2 + 2.484138, abs=1e-6)
    # one value: no interval (NaN bounds), never a zero-width one
    mean, lo, hi = common.t_interval([5.0])
    assert mean == 5.0 and lo != lo and hi != hi
    assert common.fmt_interval(lo, hi) == "n/a"
    assert common.fmt_interval(0.25, 1.5) == "[0.25, 1.5]"


def _te_run(ticks, wall=1.0, hit=None, util=1.0, cps=1.0, steps=100):
    return dict(ticks=ticks, wall_s=wall, hit=hit, utilisation=util, critic_per_step=cps,
                steps=steps, critic_steps=cps * steps)


def test_time_efficiency_ratios_are_per_seed_and_summarised_on_a_log_scale():
    from benchmarks import time_efficiency as te

    refs = [_te_run(100, 10.0, (40, 4.0)), _te_run(200, 10.0)]
    runs = [_te_run(200, 20.0, (60, 6.0), util=0.6, cps=0.9), _te_run(100, 40.0, util=0.5)]
    cells = te.seed_summary(runs, refs)
    # per-seed tick ratios 2 and 0.5: geometric mean 1 (the ratio of the totals, 300 / 300,
    # is also 1, but the arithmetic mean of the ratios would be 1.25); wall ratios 2 and 4
    assert cells[0] == 2 and cells[1] == 150.0
    assert cells[2] == pytest.approx(1.0) and cells[4] == pytest.approx(8**0.5)
    # logs +-ln 2: sd ln2 * sqrt(2), t(0.975, 1) = 12.7062 -> exp(+-12.7062 * ln 2)
    half = 12.706205 * math.log(2)
    assert cells[3] == common.fmt_interval(math.exp(-half), math.exp(half))
    assert cells[6] == pytest.approx(0.55) and cells[7] == pytest.approx(0.95)
    # one seed of two reached the target: its ticks, with no interval
    assert cells[8] == "1/2" and cells[9] == pytest.approx(60.0) and cells[10] == "n/a"
    # under the device clock a tick of this configuration may be shorter than AES-RL's: time
    # is ticks times the tick, so half-length ticks halve the time ratio
    short = te.seed_summary(runs, refs, 0.5)
    assert short[2] == pytest.approx(0.5) and short[9] == pytest.approx(30.0)  # 60 short ticks
    # without AES-RL's runs there is nothing to divide by
    assert te.seed_summary(runs, None)[2:6] == [pytest.approx(math.nan, nan_ok=True), "n/a"] * 2


def test_time_efficiency_sweep_divides_by_aes_rl_of_the_same_ratio_and_seed():
    from benchmarks import time_efficiency as te

    args = te.parse_args(["--envs", "probe", "--ratios", "0.5", "4", "--num-seeds", "2",
                          "--sweep-env", "probe", "--sweep-variants", "p-cem-rl", "aes-rl",
                          "p-cem-rl", "--no-write"])
    partial = common.Partial(None)
    ticks = {("0.5", "aes-rl"): (100, 300), ("0.5", "p-cem-rl"): (200, 300),
             ("4", "aes-rl"): (50, 80), ("4", "p-cem-rl"): (25, 320)}
    for (ratio, variant), per_seed in ticks.items():
        for seed, t in enumerate(per_seed):
            partial.put(f"sweep/probe/{ratio}/{variant}/{seed}", _te_run(t))
    table, rel = te.sweep(args, partial)  # every run is kept: nothing is compiled or run
    assert list(rel) == ["p-cem-rl"]  # listed twice, reported once; AES-RL is the reference
    # ratio 0.5: per seed 2 and 1 -> geometric mean sqrt 2; ratio 4: 0.5 and 4 -> sqrt 2 too
    assert rel["p-cem-rl"][0][0] == pytest.approx(2**0.5)
    assert rel["p-cem-rl"][1][0] == pytest.approx(2**0.5)
    lo, hi = rel["p-cem-rl"][1][1:]
    assert lo < 0.5 and hi > 4
    # time in gradient steps: at ratio 0.5 a tick is one env step, as long as 2 gradient
    # steps (mean ticks 200 -> 400); at ratio 4 a tick is one gradient step (65 -> 65)
    cells = [[c.strip() for c in line.split("|")] for line in table.splitlines()[2:]]
    rows = {(c[1], c[3]): c[7] for c in cells}
    assert rows["0.5", "aes-rl"] == "400" and rows["4", "aes-rl"] == "65"


def test_time_efficiency_critic_cost_prices_a_critic_step_in_actor_steps():
    from benchmarks import time_efficiency as te

    # ratio 4: a tick is one actor step; a critic step at 1.5x gets 2/3 of a step per tick
    assert te.ratio_rates(4, 1.5) == dict(env_steps_per_tick=4, actor_steps_per_tick=1.0,
                                          critic_steps_per_tick=1 / 1.5)
    # ratio 0.5: a tick is one env step, 2 actor steps, 2 / 1.5 critic steps
    assert te.ratio_rates(0.5, 1.5)["critic_steps_per_tick"] == pytest.approx(2 / 1.5)
    assert te.ratio_rates(3) == te.ratio_rates(3, 1.0)  # the paper clock's simplification
    with pytest.raises(ValueError, match="critic_costs"):
        te.ratio_rates(3, 0)
    args = te.parse_args(["--envs", "probe", "--ratios", "4", "--num-seeds", "1",
                          "--sweep-env", "probe", "--sweep-variants", "aes-rl", "p-cem-rl",
                          "--critic-costs", "1", "1.5", "--no-write"])
    partial = common.Partial(None)
    for key, t in {"4/aes-rl/0": 50, "4/p-cem-rl/0": 100, "4/aes-rl/0/critic1.5": 50,
                   "4/p-cem-rl/0/critic1.5": 150}.items():
        partial.put(f"sweep/probe/{key}", _te_run(t))
    table, rel = te.sweep(args, partial)  # kept runs under each cost's own key
    assert rel["p-cem-rl"][0][0] == pytest.approx(2.0)
    assert rel["p-cem-rl, critic step 1.5x"][0][0] == pytest.approx(3.0)
    assert [c.split("|")[2].strip() for c in table.splitlines()[2:]] == ["1", "1", "1.5", "1.5"]


def test_time_efficiency_variants_of_one_computation_share_one_device_clock(monkeypatch):
    from aes_rl import clock
    from benchmarks import time_efficiency as te

    measured = []

    def fake_measure_all(cfgs, repeats=20, rounds=5):
        measured.append([c.algo for c in cfgs])
        return [{"env_step_s": 1e-4, "actor_step_s": 1e-3 * c.num_slots,
                 "critic_step_s": 5e-4} for c in cfgs]

    monkeypatch.setattr(clock, "measure_all", fake_measure_all)
    args = te.parse_args(["--envs", "probe", "--clocks", "device", "--variants", "aes-rl",
                          "p-cem-rl", "cem-rl", "--num-seeds", "2", "--ratios", "--no-write"])
    partial = common.Partial(None)
    ticks = {"aes-rl": (100, 200), "p-cem-rl": (150, 100), "cem-rl": (400, 400)}
    for variant, per_seed in ticks.items():
        for seed, t in enumerate(per_seed):
            partial.put(f"main/probe/device/{variant}/{seed}", _te_run(t))
    tables, clocks = te.main_table(args, partial)  # every run kept: nothing compiled or run
    # AES-RL and P-CEM-RL (W=5) time the same computation: measured once, with CEM-RL's (W=1)
    assert measured == [["aes-rl", "cem-rl"]]
    assert len(clocks) == 2 and clocks[0].startswith("probe aes-rl, p-cem-rl: env 0.100 ms")
    assert clocks[1].startswith("probe cem-rl: env 0.100 ms, actor 1.000 ms")
    rows = {tuple(c.strip() for c in line.split("|")[3:6:2]): line.split("|")[7].strip()
            for line in tables[0].splitlines()[2:]}
    # shared tick: the time ratio is the ticks ratio (1.5 and 0.5 -> geometric mean sqrt .75)
    assert float(rows["p-cem-rl", "2"]) == pytest.approx(0.75**0.5, rel=1e-3)
    # CEM-RL's tick is a fifth of AES-RL's: 400 / 5 over 100 and 200 -> 0.8 and 0.4
    assert float(rows["cem-rl", "2"]) == pytest.approx(0.32**0.5, rel=1e-3)
    # the calibrations are kept: a second call measures nothing
    te.main_table(args, partial)
    assert measured == [["aes-rl", "cem-rl"]]


def test_a_run_that_does_not_write_its_section_leaves_the_committed_figures_alone():
    import tempfile
    from pathlib import Path

    from benchmarks import learning_comparison, td3_curve
    from benchmarks import time_efficiency as te

    tmp = Path(tempfile.gettempdir())
    full = te.parse_args([])
    assert common.figures_dir(full) == common.BENCH_DIR
    assert common.figures_dir(te.parse_args(["--no-write"])) == tmp
    # time_efficiency's quick figure is committed beside its QUICK section; the curves' are not
    quick = te.parse_args(["--quick"])
    assert common.figures_dir(quick, quick_in_tmp=False) == common.BENCH_DIR
    assert common.figures_dir(quick) == tmp
    for module in (learning_comparison, td3_curve):
        assert Path(module.parse_args([]).out).parent == common.BENCH_DIR
        assert Path(module.parse_args(["--no-write"]).out).parent == tmp


def test_sweep_rows_times_a_batch_and_its_seeds_alone_over_the_same_ticks():
    """Row scaling divides a batch's tick by its own seeds' ticks alone: both timed over the
    same ticks, so (rows one after another, which compute what each seed computes alone) the
    batch's counted steps in the window are the seeds' counted steps alone, summed."""
    from benchmarks import sweep_rows

    args = sweep_rows.parse_args(
        ["--env", "probe", "--num-rows", "1", "3", "--rows", "map", "--ticks", "40",
         "--repeats", "2", "--settle-ticks", "40", "--warmup-steps", "60", "--actor-hidden",
         "8", "--critic-hidden", "8", "--no-write"]
    )
    _, out = sweep_rows.row_scaling(args)
    one, batch = out
    assert (one["rows"], batch["rows"], batch["mode"]) == (1, 3, "map")
    window = args.ticks * args.repeats
    alone_steps = 3 * one["row_tick_steps"] * window  # the mean of seeds 0..2, times 3
    assert batch["steps"] > 0 and batch["steps"] == pytest.approx(alone_steps)
    assert batch["speedup"] == pytest.approx(batch["alone_ms"] / batch["ms"])
    assert 0 <= batch["env_few"] + batch["env_all"] <= 1


def test_progress_lines_carry_the_seconds_since_the_benchmark_started(monkeypatch, capsys):
    import time

    monkeypatch.setattr(common, "_LOG_START", time.monotonic() - 12.4)
    common.log("row scaling:", "seed 3 alone")
    captured = capsys.readouterr()
    assert captured.out == ""  # stdout holds only the tables
    assert captured.err == "[   12 s] row scaling: seed 3 alone\n"


def test_learning_comparison_starts_every_algorithm_with_the_init_it_is_given():
    from benchmarks import learning_comparison as lc

    torch = lc.parse_args(["--envs", "hopper", "--no-write"])
    flax = lc.parse_args(["--envs", "hopper", "--weight-init", "flax", "--no-write"])
    for variant in ("aes-rl", "p-cem-rl+pc", "td3"):
        a, b = lc.make_config("hopper", variant, torch), lc.make_config("hopper", variant, flax)
        assert (a.weight_init, b.weight_init) == ("torch", "flax")
        assert b == a.replace(weight_init="flax")  # the init is the only difference
    with pytest.raises(SystemExit):
        lc.parse_args(["--weight-init", "xavier", "--no-write"])


def test_a_kept_run_is_reused_only_by_the_settings_that_made_it(tmp_path):
    from aes_rl.config import preset

    cfg = preset("probe", "aes-rl")
    made = common.run_settings(cfg, steps=1000)
    common.Partial(str(tmp_path)).put("probe/aes-rl/0", dict(final=1.5), made)
    partial = common.Partial(str(tmp_path))  # a later process: read back from the file
    assert partial.get("probe/aes-rl/0", common.run_settings(cfg, steps=1000))["final"] == 1.5
    with pytest.raises(ValueError, match=r"probe/aes-rl/0.*steps: 1000 there, 2000 here"):
        partial.get("probe/aes-rl/0", common.run_settings(cfg, steps=2000))
    other = common.run_settings(cfg.replace(weight_init="flax"), steps=1000)
    with pytest.raises(ValueError, match="weight_init: 'torch' there, 'flax' here"):
        partial.get("probe/aes-rl/0", other)
    # a field another algorithm reads (AES-RL's P) does not tell a P-CEM-RL run apart, a
    # field it reads does; a kept run that recorded AES-RL's P (as before) still matches
    sync = preset("probe", "p-cem-rl")
    sync_made = common.run_settings(sync, steps=1000)
    assert "mean_param" not in sync_made and "pop_size" in sync_made
    assert "mean_param" in made and "pop_size" not in made
    partial.put("probe/p-cem-rl/0", dict(final=3.0), dict(sync_made, mean_param=150.0))
    again = common.run_settings(sync.replace(mean_param=50.0), steps=1000)
    assert partial.get("probe/p-cem-rl/0", again)["final"] == 3.0
    with pytest.raises(ValueError, match="pop_size"):
        partial.get("probe/p-cem-rl/0", common.run_settings(sync.replace(pop_size=4), steps=1000))
    with pytest.raises(ValueError, match="mean_param: 1.0 there, 50.0 here"):
        partial.get("probe/aes-rl/0", common.run_settings(cfg.replace(mean_param=50.0), steps=1000))
    # a run kept before settings were recorded is returned unchecked; a missing key is None
    partial.put("probe/aes-rl/1", dict(final=2.0))
    assert partial.get("probe/aes-rl/1", other) == dict(final=2.0)
    assert partial.get("probe/aes-rl/2", other) is None


def test_learning_comparison_will_not_reuse_a_run_of_another_init(tmp_path):
    from benchmarks import learning_comparison as lc

    flax = lc.parse_args(["--envs", "probe", "--algos", "td3", "--weight-init", "flax",
                          "--num-seeds", "1", "--no-write", "--partial", str(tmp_path)])
    torch = lc.parse_args(["--envs", "probe", "--algos", "td3", "--num-seeds", "1",
                           "--no-write", "--partial", str(tmp_path)])
    kept = dict(rows=[], wall_s=1.0, chunk_wall_s=0.1, run_dir="x", final_returns=[[3.0]])
    partial = common.Partial(str(tmp_path))
    made = common.run_settings(lc.make_config("probe", "td3", flax), steps=flax.steps,
                               eval_episodes=flax.eval_episodes,
                               final_episodes=flax.final_episodes,
                               eval_every_steps=flax.eval_every_steps)
    partial.put("probe/td3/0", kept, made)
    # the same settings take the kept run without training; the torch init refuses it
    assert lc.algo_run("probe", "td3", lc.make_config("probe", "td3", flax), flax,
                       partial).final_returns == [[3.0]]
    with pytest.raises(ValueError, match="weight_init: 'flax' there, 'torch' here"):
        lc.algo_run("probe", "td3", lc.make_config("probe", "td3", torch), torch, partial)


BENCHMARKS_WITH_ARGS = (
    "hosts_rows",
    "learning_comparison",
    "loop_overhead",
    "slots_scaling",
    "sweep_rows",
    "td3_curve",
    "td3_throughput",
    "time_efficiency",
)


def _flag_help(cls: type, name: str) -> str | None:
    """The help a benchmark's flag got from `config_flags` (None: its own docstring)."""
    from typing import get_type_hints

    for meta in getattr(get_type_hints(cls, include_extras=True)[name], "__metadata__", ()):
        if getattr(meta, "help", None):
            return meta.help
    return None


@pytest.mark.parametrize("name", BENCHMARKS_WITH_ARGS)
def test_a_benchmark_flag_named_after_a_config_field_has_that_fields_declared_help(name):
    import dataclasses
    import importlib

    from aes_rl.config import FIELDS

    args = importlib.import_module(f"benchmarks.{name}").Args
    shared = [f.name for f in dataclasses.fields(args) if f.name in FIELDS]
    assert shared, name
    for flag in shared:
        text = _flag_help(args, flag)
        assert text is not None and text.startswith(FIELDS[flag].help), (name, flag, text)
        if FIELDS[flag].choices is None:
            assert FIELDS[flag].range_text() in text, (name, flag, text)


def test_a_note_for_a_flag_that_is_not_a_config_field_is_refused():
    import dataclasses

    with pytest.raises(ValueError, match=r"config_flags: no Config-field flag\(s\) \['budget'\]"):

        @common.config_flags(budget="a note")
        @dataclasses.dataclass
        class Args(common.BenchFlags):
            budget: int = 5
