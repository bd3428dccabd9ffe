"""Time efficiency (the paper's claim): modeled time and wall-clock to a budget and a target.

AES-RL (asynchronous, W slots) against the authors' synchronous baselines on the same slots:
P-CEM-RL with its serial critic (the authors' default), P-CEM-RL with a parallel critic worker,
and CEM-RL (one slot), on the same envs, nets and budget, under two clocks (docs/algorithm.md
§8): `paper` (a gradient step costs 10 env steps) and `device` (rates measured here, one
measurement shared by the configurations that time the same computation). A tick is one unit
of modeled time; slot utilisation = busy slot-ticks / (W * ticks) measures the idle time of
synchrony.

Then a sweep of the gradient-step / env-step cost ratio (AES-RL and both P-CEM-RL modes on one
env): where does asynchrony pay? `benchmarks/time_efficiency_sweep.png` plots P-CEM-RL's
modeled time to the budget over AES-RL's against the ratio.

The budget is checked between chunks (resolution `--ticks-per-chunk`); the target return is the
deterministic return of the ES mean, evaluated after every chunk (not counted, not timed).
Wall-clock is the sum of the compiled chunk calls; compilation apart.

With several seeds (`--num-seeds`) every figure relative to AES-RL is taken per seed, against
AES-RL's run of the same seed, and then summarised over seeds by its geometric mean and a 95%
interval (a Student-t interval of the logarithms); the sweep runs every seed too.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import statistics
from dataclasses import dataclass
from typing import ClassVar, Literal

import jax
import numpy as np

from aes_rl import clock, program
from aes_rl.config import preset
from aes_rl.flags import BackendName, EnvName
from benchmarks import common

NAME = "time_efficiency"
VARIANTS = {  # label -> (algo, overrides)
    "aes-rl": ("aes-rl", {}),
    "p-cem-rl": ("p-cem-rl", {}),
    "p-cem-rl+pc": ("p-cem-rl", {"parallel_critic": True}),
    "cem-rl": ("cem-rl", {}),
}


Variant = Literal[tuple(VARIANTS)]  # type: ignore[valid-type]
Clock = Literal["paper", "device"]


@common.config_flags(num_slots="Used by the multi-slot algorithms.")
@dataclass
class Args(common.BenchFlags):
    MEASURES_COMPILE: ClassVar[bool] = True

    envs: tuple[EnvName, ...] = ("hopper", "walker2d")
    """Environments."""
    backend: BackendName = "spring"
    variants: tuple[Variant, ...] = tuple(VARIANTS)
    """Algorithm variants."""
    clocks: tuple[Clock, ...] = ("paper", "device")
    """Clocks (cost models) of the main table."""
    num_slots: int = 5
    steps: int = 30_000
    """Budget: counted env steps to reach."""
    target: float = 250.0
    """Target return of the mean policy (ticks and wall-clock to reach it)."""
    warmup_steps: int = 10_000
    actor_hidden: tuple[int, ...] = (64, 64)
    critic_hidden: tuple[int, ...] = (64, 64)
    ticks_per_chunk: int = 200
    eval_episodes: int = 3
    """Episodes per evaluation."""
    clock_repeats: int = 100
    """Timed calls of each kernel in the device clock's calibration (median), spread over 5
    rounds that alternate between the configurations measured."""
    seed: int = 0
    """First seed."""
    num_seeds: int = 1
    """Seeds seed, seed+1, ..., run one after another with the same compiled chunk."""
    ratios: tuple[float, ...] = (0.1, 0.3, 1, 3, 10, 30)
    """Gradient-step / env-step cost ratios of the sweep (none: no sweep)."""
    sweep_env: EnvName = "hopper"
    """Environment of the cost-ratio sweep."""
    sweep_steps: int = 20_000
    """Counted env steps of each run of the sweep."""
    sweep_variants: tuple[Variant, ...] = ("aes-rl", "p-cem-rl", "p-cem-rl+pc")
    """Variants of the sweep."""
    critic_costs: tuple[float, ...] = (1.0,)
    """Costs of a critic step in actor steps, each swept over every ratio (1: the paper clock's
    simplification; 1.5: a critic step updates two Q networks through the target actor)."""
    partial: str | None = None
    """Where finished runs are kept (a .json file, or a directory with one file per run): the
    same command run again (after a crash or an interrupt) skips them. A kept run made with
    other settings (nets, budget, target, ...) is an error naming them, never reused."""


def parse_args(argv=None) -> Args:
    args = common.parse(Args, argv, f"benchmarks.{NAME}", __doc__)
    common.quick(args, envs=args.envs[:1], steps=1_500, warmup_steps=500, ticks_per_chunk=50,
                 ratios=(0.3, 3), sweep_steps=1_000, clocks=args.clocks[:1])
    return args


def ratio_rates(ratio: float, critic_cost: float = 1.0) -> dict:
    """The clock where an actor step costs `ratio` env steps and a critic step `critic_cost`
    actor steps; a tick is the cheaper of an actor step and an env step."""
    if critic_cost <= 0:
        raise ValueError(f"critic_costs: must be > 0, got {critic_cost:g}")
    actor = 1.0 if ratio >= 1 else 1 / ratio
    return dict(env_steps_per_tick=max(ratio, 1.0), actor_steps_per_tick=actor,
                critic_steps_per_tick=actor / critic_cost)


def make_config(env: str, variant: str, args, **clock_overrides):
    algo, extra = VARIANTS[variant]
    w = 1 if algo == "cem-rl" else args.num_slots
    return preset(env, algo, backend=args.backend, num_slots=w, **args.net_overrides,
                  warmup_steps=args.warmup_steps, ticks_per_chunk=args.ticks_per_chunk,
                  **extra, **clock_overrides)


def run_to_budget(cfg, compiled, seed: int, budget: int, target: float | None,
                  evaluate) -> dict:
    """Chunks until the counted steps reach `budget`; ticks and wall-clock at the first chunk
    whose mean-policy evaluation reaches `target` (None: no evaluation)."""
    state = program.init_batch(cfg, (seed,))
    wall, hit = 0.0, None
    while common.counters(state)["total_steps"] < budget:
        (state, _), dt = common.timed(compiled, state)
        wall += dt
        if target is not None and hit is None:
            c = common.counters(state)
            key = jax.random.fold_in(jax.random.key(7), c["ticks"])
            ret = float(np.mean(evaluate(program.mean_params(cfg, state), key)))
            if ret >= target:
                hit = (c["ticks"], wall, c["total_steps"])
    c = common.counters(state)
    w = cfg.num_slots
    after = max(c["total_steps"] - cfg.warmup_steps, 1)
    return dict(ticks=c["ticks"], steps=c["total_steps"], wall_s=wall,
                utilisation=c["busy"] / (w * c["ticks"]), critic_steps=c["critic_steps"],
                critic_per_step=c["critic_steps"] / after, hit=hit)


def compiled_chunk(cfg, seed: int):
    state = program.init_batch(cfg, (seed,))
    compiled, compile_s = common.compile_jitted(
        program.make_train_chunk(cfg, 1, cfg.ticks_per_chunk), state)
    return compiled, compile_s


RATES = ("env_steps_per_tick", "actor_steps_per_tick", "critic_steps_per_tick")


def device_calibrations(env: str, args, partial: common.Partial) -> dict[str, dict]:
    """The device clock's measured seconds of every variant's configuration on `env`, by
    variant: configurations that time the same computation (every W-slot variant
    with the same nets and batch) share one measurement, and the distinct ones are measured
    together, interleaved (`clock.measure_all`). Kept in `--partial` under
    `calibration/<hash of the signature>`, so a later call (more seeds, another variant)
    reuses them."""
    cfgs = [make_config(env, v, args, cost_model="device") for v in args.variants]
    first: dict[str, object] = {}  # one config per distinct computation, in order
    for c in cfgs:
        first.setdefault(clock.signature(c), c)
    sigs = list(first)

    def key(sig: str) -> str:
        return "calibration/" + hashlib.sha1(sig.encode()).hexdigest()[:16]

    kept = {sig: partial.get(key(sig)) for sig in sigs}
    got = {sig: k["costs"] for sig, k in kept.items() if k is not None}
    missing = [sig for sig in sigs if sig not in got]
    if missing:
        common.log(f"[{NAME}] {env}: measuring the device clock ({len(missing)} computation(s))")
        todo = [first[sig] for sig in missing]
        for sig, costs in zip(missing, clock.measure_all(todo, repeats=args.clock_repeats)):
            got[sig] = costs
            partial.put(key(sig), dict(signature=sig, costs=costs))
    return {v: got[clock.signature(c)] for v, c in zip(args.variants, cfgs)}


def one_config(env, clock_name, variant, args, partial: common.Partial,
               costs: dict | None = None) -> dict:
    """Every seed of one (env, clock, variant): {seed: figures}, with its clock and compile.

    The configuration (its rates, compile time) and each seed's run are kept under their own
    `--partial` keys, so the same file serves a later call with more seeds: every seed of a row
    runs on the same rates. Under the device clock `costs` are the measured seconds of this
    configuration's computation (`device_calibrations`).
    """
    key = f"main/{env}/{clock_name}/{variant}"
    cfg = make_config(env, variant, args, cost_model=clock_name)
    head_settings = common.run_settings(cfg)  # before the device clock's rates
    head = partial.get(key, head_settings)
    if head is None or "signature" not in head:  # (a file of an older layout: measured again)
        calibration = None
        if clock_name == "device":
            cfg = clock.with_rates(cfg, costs)
            calibration = (
                f"env {costs['env_step_s'] * 1e3:.3f} ms, actor "
                f"{costs['actor_step_s'] * 1e3:.3f} ms, critic "
                f"{costs['critic_step_s'] * 1e3:.3f} ms -> per tick "
                f"{cfg.env_steps_per_tick:g} env / {cfg.actor_steps_per_tick:g} actor / "
                f"{cfg.critic_steps_per_tick:g} critic steps")
        # a tick's length: the device clock's tick is one (W-slot) actor step of THIS
        # configuration, measured; the paper clock's is the same unit for every configuration
        head = dict(calibration=calibration, compile_s=None, w=cfg.num_slots,
                    signature=clock.signature(cfg),
                    rates={r: getattr(cfg, r) for r in RATES},
                    tick_s=costs["actor_step_s"] if clock_name == "device" else 1.0)
    elif clock_name == "device":
        cfg = cfg.replace(**head["rates"])
    compiled = evaluate = None
    runs = {}
    settings = common.run_settings(cfg, steps=args.steps, target=args.target,
                                   eval_episodes=args.eval_episodes)
    for seed in args.seeds:
        run_key = f"{key}/{seed}"
        got = partial.get(run_key, settings)
        if got is None:
            if compiled is None:
                common.log(f"[{NAME}] {env} {clock_name} {variant}: compiling")
                compiled, compile_s = compiled_chunk(cfg, seed)
                head["compile_s"] = head["compile_s"] or compile_s
                partial.put(key, head, head_settings)
                evaluate = program.make_evaluate(cfg, args.eval_episodes)
            common.log(f"[{NAME}] {env} {clock_name} {variant} seed {seed}: to {args.steps} "
                       "steps")
            got = run_to_budget(cfg, compiled, seed, args.steps, args.target, evaluate)
            partial.put(run_key, got, settings)
        runs[str(seed)] = got
    return dict(head, runs=runs)


def main_table(args, partial: common.Partial) -> tuple[list[str], list[str]]:
    """The per-seed table, and with several seeds a summary over them (95% t-intervals)."""
    rows, summary, clocks_seen = [], [], []
    for env in args.envs:
        for clock_name in args.clocks:
            cals = (device_calibrations(env, args, partial) if clock_name == "device"
                    else {})
            got = {v: one_config(env, clock_name, v, args, partial, cals.get(v))
                   for v in args.variants}
            # the reference of every 'vs aes-rl' column is AES-RL's run of the same seed
            refs = ([got["aes-rl"]["runs"][str(seed)] for seed in args.seeds]
                    if "aes-rl" in got else None)
            shared: dict[str, list[str]] = {}  # one line per measured computation
            for variant, g in got.items():
                if g["calibration"]:
                    shared.setdefault(g["calibration"], []).append(variant)
            clocks_seen += [f"{env} {', '.join(vs)}: {text}" for text, vs in shared.items()]
            for variant, g in got.items():
                runs = [g["runs"][str(seed)] for seed in args.seeds]
                ref_tick = got["aes-rl"]["tick_s"] if refs else math.nan
                for i, (seed, r) in enumerate(zip(args.seeds, runs)):
                    hit = r["hit"]
                    rel = ((r["ticks"] * g["tick_s"] / (refs[i]["ticks"] * ref_tick),
                            r["wall_s"] / refs[i]["wall_s"]) if refs else (math.nan, math.nan))
                    rows.append([env, clock_name, variant, g["w"], seed, r["steps"],
                                 r["ticks"], rel[0], r["wall_s"], rel[1],
                                 1e3 * r["wall_s"] / r["ticks"], r["utilisation"],
                                 r["critic_steps"], r["critic_per_step"],
                                 hit[0] if hit else "not reached",
                                 hit[1] if hit else "not reached", g["compile_s"]])
                summary.append([env, clock_name, variant, g["w"]]
                               + seed_summary(runs, refs, g["tick_s"] / ref_tick))
    per_seed = common.md_table(
        ["env", "clock", "variant", "W", "seed", "counted steps", "ticks to budget",
         "time vs aes-rl", "wall s", "wall vs aes-rl", "ms / tick", "utilisation",
         "critic steps", "critic / counted step", f"ticks to return {args.target:g}",
         f"wall s to return {args.target:g}", "compile s"], rows)
    if len(args.seeds) == 1:
        return [per_seed], clocks_seen
    table = common.md_table(
        ["env", "clock", "variant", "W", "seeds", "ticks to budget (mean)",
         "time vs aes-rl (geometric mean)", "95% CI", "wall vs aes-rl (geometric mean)",
         "95% CI", "utilisation", "critic / counted step", f"seeds reaching {args.target:g}",
         f"time to return {args.target:g} in AES-RL ticks (geometric mean of those)",
         "95% CI"], summary)
    return [table, "<details><summary>Per seed</summary>\n\n" + per_seed + "\n\n</details>"], \
        clocks_seen


def seed_summary(runs: list[dict], refs: list[dict] | None, tick_ratio: float = 1.0) -> list:
    """Cells over seeds. A ratio to AES-RL is taken per seed, against AES-RL's run of the same
    seed, and summarised by its geometric mean and 95% t-interval (`common.ratio_interval`);
    no `refs` (AES-RL not run): n/a. `tick_ratio`: this configuration's tick over AES-RL's (1
    under the paper clock), so that modeled time, not ticks of different lengths, is compared.
    Time to the target (positive, skewed; in AES-RL's ticks, so that it compares across
    variants under either clock) gets the same geometric summary."""
    nan3 = (math.nan,) * 3
    time = (common.ratio_interval([tick_ratio * r["ticks"] / f["ticks"]
                                   for r, f in zip(runs, refs)]) if refs else nan3)
    wall = (common.ratio_interval([r["wall_s"] / f["wall_s"] for r, f in zip(runs, refs)])
            if refs else nan3)
    hits = [tick_ratio * r["hit"][0] for r in runs if r["hit"]]
    to_target = common.ratio_interval(hits) if hits else nan3
    return [len(runs), statistics.fmean(r["ticks"] for r in runs), time[0],
            common.fmt_interval(*time[1:]), wall[0], common.fmt_interval(*wall[1:]),
            statistics.fmean(r["utilisation"] for r in runs),
            statistics.fmean(r["critic_per_step"] for r in runs), f"{len(hits)}/{len(runs)}",
            to_target[0], common.fmt_interval(*to_target[1:])]


def sweep(args, partial: common.Partial) -> tuple[str, dict]:
    """Modeled time to the sweep budget for every ratio, variant and seed.

    Returns the table and, per variant other than AES-RL, per ratio the (geometric mean, low,
    high) of its time over AES-RL's run of the same ratio and seed (NaN without AES-RL).
    """
    variants = tuple(dict.fromkeys(args.sweep_variants))  # each once, in the order given
    got: dict[tuple, list[dict]] = {}
    times: dict[tuple, list[float]] = {}
    for cost, ratio, variant in itertools.product(args.critic_costs, args.ratios, variants):
        cfg = make_config(args.sweep_env, variant, args, **ratio_rates(ratio, cost))
        compiled = None
        runs = []
        settings = common.run_settings(cfg, steps=args.sweep_steps)
        for seed in args.seeds:
            key = (f"sweep/{args.sweep_env}/{ratio:g}/{variant}/{seed}"
                   + (f"/critic{cost:g}" if cost != 1 else ""))
            r = partial.get(key, settings)
            if r is None:
                common.log(f"[{NAME}] sweep ratio {ratio:g} critic cost {cost:g} "
                           f"{variant} seed {seed}")
                if compiled is None:
                    compiled, _ = compiled_chunk(cfg, seed)
                r = run_to_budget(cfg, compiled, seed, args.sweep_steps, None, None)
                partial.put(key, r, settings)
            runs.append(r)
        # modeled time in gradient-step units, so ratios compare across clocks: a tick
        # lasts as long as the actor steps it holds (1 from ratio 1 up, 1 / ratio below)
        per_tick = cfg.actor_steps_per_tick
        times[cost, ratio, variant] = [r["ticks"] * per_tick for r in runs]
        got[cost, ratio, variant] = runs
    rows, out = [], {}
    for cost, ratio in itertools.product(args.critic_costs, args.ratios):
        base = times.get((cost, ratio, "aes-rl"))
        for variant in variants:
            runs, ts = got[cost, ratio, variant], times[cost, ratio, variant]
            rel = (common.ratio_interval([t / b for t, b in zip(ts, base)]) if base
                   else (math.nan,) * 3)
            if variant != "aes-rl":
                label = variant + (f", critic step {cost:g}x" if cost != 1 else "")
                out.setdefault(label, []).append(rel)
            rows.append([ratio, cost, variant, len(runs),
                         statistics.fmean(r["steps"] for r in runs),
                         statistics.fmean(r["ticks"] for r in runs), statistics.fmean(ts),
                         rel[0], common.fmt_interval(*rel[1:]),
                         statistics.fmean(r["utilisation"] for r in runs),
                         statistics.fmean(r["critic_per_step"] for r in runs),
                         statistics.fmean(r["wall_s"] for r in runs)])
    table = common.md_table(
        ["grad/env cost ratio", "critic/actor step cost", "variant", "seeds",
         "counted steps (mean)", "ticks (mean)",
         "time (gradient steps, mean)", "time vs aes-rl (geometric mean)", "95% CI",
         "utilisation", "critic / counted step", "wall s (mean)"], rows)
    return table, out


def plot_sweep(path, ratios, rel: dict, title: str) -> None:
    """Each variant's time over AES-RL's against the cost ratio (`rel`: per variant, per
    ratio, (geometric mean, low, high)); bars: 95% intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for variant, cells in rel.items():
        mean = np.array([c[0] for c in cells])
        lo = np.array([c[1] for c in cells])
        hi = np.array([c[2] for c in cells])
        if np.isnan(lo).any():
            ax.plot(ratios, mean, marker="o", label=variant)
        else:
            ax.errorbar(ratios, mean, yerr=[mean - lo, hi - mean], marker="o", capsize=3,
                        label=variant)
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_xlabel("cost of a gradient step / cost of an env step")
    ax.set_ylabel("modeled time to the budget / AES-RL's")
    ax.set_title(title, fontsize=9)
    ax.text(0.02, 0.97, "above 1: asynchrony pays", transform=ax.transAxes, va="top",
            fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None) -> None:
    args = parse_args(argv)
    session = common.Session.start(NAME, args)
    partial = common.Partial(args.partial)
    tables, calibrations = main_table(args, partial)
    notes = [
        f"Budget {args.steps} counted env steps (rollouts of individuals; mean evaluations "
        f"are not counted), {args.warmup_steps} of them random-action warm-up; seeds "
        f"{list(args.seeds)}. Nets {args.nets} for actor and critic (small nets for CPU), "
        f"backend {args.backend}, the authors' hyper-parameters otherwise (AES-RL: 5 "
        "sequential mean-evaluation episodes per individual; P-CEM-RL: serial critic stage, "
        "barriers, one mean episode per generation, batch 256; CEM-RL: one slot, batch 100).",
        "Clocks: paper = 10 env steps, 1 actor step, 1 critic step per tick; device = "
        "measured here (a tick is one actor step), once per distinct computation: the "
        "variants that run the same env, W, nets and batch share one measurement, so their "
        "device-clock ratios compare schedules only, and the distinct computations were "
        f"measured together, alternating over 5 rounds ({args.clock_repeats} timed calls of "
        "each kernel, median): "
        + ("; ".join(calibrations) if calibrations else "not run") + ".",
        "'vs aes-rl' columns divide by AES-RL's figure of the same env, clock and seed. Ticks "
        "are modeled time (what the emulated workers see); wall-clock is this machine's. "
        "'time vs aes-rl' compares modeled time: ticks times the length of a tick, one unit for "
        "every configuration under the paper clock, and under the device clock the "
        "configuration's own measured actor step (the ms in the clocks line; CEM-RL's "
        "one-slot, batch-100 tick is much shorter than a W=5 tick), so under the device clock "
        "'ticks to budget' do not compare across variants and 'time vs aes-rl' does. "
        "With several seeds, the summary gives the geometric mean of those per-seed ratios and "
        "a 95% interval over seeds (a Student-t interval of their logarithms, mapped back); "
        "ticks move in steps of a chunk, so seeds that agree to the chunk give a zero-width "
        "interval. The target columns summarise the seeds that reached the target within the "
        "budget: modeled time in AES-RL's ticks of the same env and clock, geometric mean and "
        "interval as above (with 3 seeds and a target reached anywhere from the first chunks "
        "to the last, these intervals are wide).",
        f"Budget checked every {args.ticks_per_chunk} ticks (the resolution of the ticks column). "
        f"Target: the mean policy's deterministic return over {args.eval_episodes} episodes "
        f"reaching {args.target:g} after a chunk.",
    ]
    if args.ratios:
        sweep_table, rel = sweep(args, partial)
        tables.append(sweep_table)
        png = (common.figures_dir(args, quick_in_tmp=False)
               / f"{NAME}_sweep{'_quick' if args.quick else ''}.png")
        if "aes-rl" in args.sweep_variants and rel:
            plot_sweep(png, args.ratios, rel,
                       f"{args.sweep_env} ({args.backend}), W={args.num_slots}, budget "
                       f"{args.sweep_steps}, nets {args.nets}")
            where = (f"benchmarks/{png.name}" if png.parent == common.BENCH_DIR
                     else str(png))
            notes.append(f"Sweep PNG: `{where}`.")
        notes.append(
            f"Sweep: {args.sweep_env}, budget {args.sweep_steps}, seeds {list(args.seeds)}; a "
            "gradient step costs `ratio` env steps (a tick is the cheaper of the two); time is "
            "in gradient-step units so ratios compare across rows; 'time vs aes-rl' is taken "
            "per seed against AES-RL's run of the same ratio and seed, then summarised as "
            "above (geometric mean, interval of the logarithms).")
    session.finish("Time efficiency: AES-RL vs P-CEM-RL (serial, parallel critic) vs CEM-RL",
                   tables, notes)


if __name__ == "__main__":
    main()
