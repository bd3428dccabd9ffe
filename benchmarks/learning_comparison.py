"""Learning comparison: AES-RL, P-CEM-RL and TD3 on Brax envs, several seeds in one program.

Each algorithm runs through `run.train` to the same counted-step budget, with the same nets
for every algorithm and the authors' hyper-parameters otherwise (P-CEM-RL with its serial
critic, barriers and mean evaluation). Seeds run as separate runs sharing one compiled program
(`--seed-batch separate`, the default: each seed's wall-clock is its own, and finished seeds
are kept by `--partial`) or as rows of one run (`--seed-batch vmapped`; how rows run is
`run.RunSettings.rows`).
Every algorithm is evaluated on the same schedule of counted steps (`--eval-every-steps`:
each seed as its steps pass each multiple, and at the end), so none gets more evaluations than
another (chunks are sized to about a fifth of that interval for every algorithm).
Reported per env: the final policy's return (ES mean; TD3's actor) on fresh deterministic
episodes as IQM and mean over seeds with 95% stratified-bootstrap intervals and the
probability that an AES-RL seed beats a seed of each other algorithm (`aes_rl.stats`, with
rliable), critic steps per counted step, modeled time and wall-clock. Curves against counted
steps, modeled time and wall-clock go to `benchmarks/learning_comparison_<env>.png` (data in
`.csv`).
"""

from __future__ import annotations

import csv
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from aes_rl import stats
from aes_rl.config import ALGOS, preset
from aes_rl.flags import BackendName, EnvName
from aes_rl.networks import INITS
from benchmarks import common

NAME = "learning_comparison"
# Rough counted steps per tick (hopper, W=5), only to size chunks to about `--chunks` of them.
STEPS_PER_TICK = {"td3": 1.0, "aes-rl": 0.8, "acem-rl": 0.8, "one-plus-one": 0.8,
                  "p-cem-rl": 2.5, "cem-rl": 0.6}
# What may be compared: every algorithm, and P-CEM-RL with the authors' parallel critic.
VARIANTS = {a: (a, {}) for a in ALGOS} | {"p-cem-rl+pc": ("p-cem-rl", {"parallel_critic": True})}
Variant = Literal[tuple(VARIANTS)]  # type: ignore[valid-type]


@common.config_flags(
    num_slots="Used by the multi-slot algorithms (AES-RL, P-CEM-RL).",
    actor_hidden="The same for every algorithm.",
    critic_hidden="The same for every algorithm.",
    weight_init="The same for every algorithm.",
    cost_model="Custom rates are not offered here.",
)
@dataclass
class Args(common.BenchFlags):
    envs: tuple[EnvName, ...] = ("hopper", "walker2d")
    """Environments."""
    backend: BackendName = "spring"
    algos: tuple[Variant, ...] = ("aes-rl", "p-cem-rl", "td3")
    """Algorithms (p-cem-rl+pc: P-CEM-RL with a parallel critic worker)."""
    steps: int = 100_000
    """Budget in counted env steps per seed."""
    seed: int = 0
    """First seed."""
    num_seeds: int = 5
    """Seeds seed, seed+1, ..."""
    num_slots: int = 5
    actor_hidden: tuple[int, ...] = (64, 64)
    critic_hidden: tuple[int, ...] = (64, 64)
    weight_init: Literal[INITS] = "torch"  # type: ignore[valid-type]
    cost_model: Literal["paper", "device"] = "paper"
    warmup_steps: int = 10_000
    chunks: int = 100
    """Chunks of about steps / chunks counted steps each (for every algorithm)."""
    eval_every_steps: int = 5_000
    """Evaluate each seed as its counted steps pass each multiple of this (and at the end)."""
    eval_episodes: int = 5
    """Episodes per evaluation on the schedule."""
    final_episodes: int = 10
    """Episodes of the final evaluation of each seed's final policy."""
    seed_batch: Literal["separate", "vmapped"] = "separate"
    """Seeds one after another (separate) or as rows of one program (vmapped)."""
    partial: str | None = None
    """Where finished runs are kept (a .json file, or a directory with one file per run,
    which several processes may share, e.g. one per env): the same command run again skips
    them. A kept run made with other settings (nets, init, budget, ...) is an error naming
    them, never reused."""
    run_root: str | None = None
    """Where run directories go (default: the temporary directory)."""
    out: str | None = None
    """Output stem for .png/.csv (default benchmarks/learning_comparison; a temporary path
    with --quick or --no-write)."""


def parse_args(argv=None) -> Args:
    args = common.parse(Args, argv, f"benchmarks.{NAME}", __doc__)
    common.quick(args, steps=600, num_seeds=2, chunks=3, envs=args.envs[:1], eval_episodes=2,
                 final_episodes=2, warmup_steps=500, eval_every_steps=300)
    if args.out is None:
        base = common.figures_dir(args)
        args.out = str(base / f"learning_comparison{'_quick' if args.quick else ''}")
    return args


def make_config(env: str, variant: str, args):
    algo, extra = VARIANTS[variant]
    overrides = dict(backend=args.backend, **args.net_overrides, weight_init=args.weight_init,
                     warmup_steps=args.warmup_steps, cost_model=args.cost_model, **extra)
    if algo not in ("td3", "cem-rl"):
        overrides["num_slots"] = args.num_slots
    guess = STEPS_PER_TICK.get(algo, 1.0) * (args.num_slots / 5 if algo != "td3" else 1.0)
    overrides["ticks_per_chunk"] = max(1, math.ceil(args.steps / args.chunks / guess))
    return preset(env, algo, **overrides)


X_AXES = (("total_steps", "counted env steps (per seed)"),
          ("time", "modeled time (ticks of the clock)"),
          ("wall_time", "wall-clock s"))


def mean_curve(run: common.LearningRun, x: str):
    """Per evaluation of the schedule (the k-th of every seed): mean of `x` over seeds, and
    mean / min / max over seeds of the evaluation."""
    curves = []
    for seed in run.seeds():
        rows = sorted((r for r in run.rows if r["seed"] == seed and not math.isnan(
            r["eval_mean"])), key=lambda r: r["chunk"])
        curves.append(([float(r[x]) for r in rows], [float(r["eval_mean"]) for r in rows]))
    n = min(len(c[0]) for c in curves)
    xs = [statistics.mean(c[0][i] for c in curves) for i in range(n)]
    vals = [[c[1][i] for c in curves] for i in range(n)]
    return xs, [statistics.mean(v) for v in vals], [min(v) for v in vals], \
        [max(v) for v in vals]


def plot(path: Path, runs: list[common.LearningRun], title: str, wall_scope: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15.0, 4.4), dpi=110, sharey=True)
    for ax, (x, label) in zip(axes, X_AXES):
        if x == "wall_time":
            label += f" ({wall_scope})"
        for run in runs:
            xs, mean, lo, hi = mean_curve(run, x)
            line, = ax.plot(xs, mean, marker="o", markersize=3,
                            label=f"{run.label} (mean of {len(run.seeds())} seeds)")
            ax.fill_between(xs, lo, hi, alpha=0.2, color=line.get_color())
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("evaluation return (deterministic, mean policy)")
    axes[0].legend(loc="upper left", fontsize=8, title="shaded: min-max over seeds",
                   title_fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_csv(path: Path, runs: list[common.LearningRun]) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["algo", "seed", "chunk", "steps", "time", "eval_mean", "eval_std",
                    "critic_per_step", "wall_time"])
        for run in runs:
            for r in sorted(run.rows, key=lambda r: (r["seed"], r["chunk"])):
                w.writerow([run.label, r["seed"], r["chunk"], int(r["total_steps"]),
                            f"{r['time']:.1f}", f"{r['eval_mean']:.3f}", f"{r['eval_std']:.3f}",
                            f"{r['critic_per_step']:.4f}", f"{r['wall_time']:.1f}"])


def finals_of(run: common.LearningRun) -> np.ndarray:
    """[seeds]: each seed's final policy, mean over its final episodes."""
    return np.array([statistics.mean(x) for x in run.final_returns])


def summary_row(env: str, run: common.LearningRun, cfg, ref: np.ndarray | None) -> list:
    """`ref`: AES-RL's finals on this env (None: not run), for P(AES-RL > this)."""
    finals = finals_of(run)
    steps = [int(run.final(s)["total_steps"]) for s in run.seeds()]
    agg = stats.aggregates({run.label: finals[:, None]})[run.label]
    better = (stats.fmt(stats.probability_of_improvement(ref[:, None], finals[:, None]), 2)
              if ref is not None and run.label != "aes-rl" else "-")
    last = [run.final(s) for s in run.seeds()]
    evals = statistics.mean(sum(not math.isnan(r["eval_mean"]) for r in run.rows
                                if r["seed"] == s) for s in run.seeds())
    return [env, run.label, len(finals), cfg.num_slots, min(steps), stats.fmt(agg["iqm"]),
            stats.fmt(agg["mean"]), better, min(finals), max(finals), evals,
            statistics.mean(r["critic_per_step"] for r in last),
            statistics.mean(r["time"] for r in last), run.wall_s]


def algo_run(env: str, algo: str, cfg, args, partial: common.Partial) -> common.LearningRun:
    """Every seed of one (env, algo): vmapped in one call, or one call per seed (same program).

    In separate mode `wall_s` is the mean over seeds of one seed's whole call.
    """
    batches = ([tuple(args.seeds)] if args.seed_batch == "vmapped"
               else [(s,) for s in args.seeds])
    settings = common.run_settings(cfg, steps=args.steps, eval_episodes=args.eval_episodes,
                                   final_episodes=args.final_episodes,
                                   eval_every_steps=args.eval_every_steps)
    parts = []
    for seeds in batches:
        key = f"{env}/{algo}/" + ("-".join(map(str, seeds)) if len(seeds) > 1 else str(seeds[0]))
        got = partial.get(key, settings)
        if got is None:
            run = common.train_run(algo, cfg, args.steps, seeds, args.eval_episodes,
                                   args.run_root, final_episodes=args.final_episodes,
                                   eval_every_steps=args.eval_every_steps)
            got = dict(rows=run.rows, wall_s=run.wall_s, chunk_wall_s=run.chunk_wall_s,
                       run_dir=Path(run.run_dir).name, final_returns=run.final_returns)
            partial.put(key, got, settings)
        else:
            common.log(f"kept from --partial: {key}")
        parts.append(got)
    return common.LearningRun(
        algo, [r for p in parts for r in p["rows"]],
        statistics.mean(p["wall_s"] for p in parts),
        statistics.mean(p["chunk_wall_s"] for p in parts), parts[0]["run_dir"],
        [f for p in parts for f in p["final_returns"]])


def main(argv=None) -> None:
    args = parse_args(argv)
    session = common.Session.start(NAME, args)
    partial = common.Partial(args.partial)
    wall_scope = "all seeds together" if args.seed_batch == "vmapped" else "one seed"
    rows, per_seed, pngs = [], [], []
    for env in args.envs:
        runs, ref = [], None
        for algo in sorted(dict.fromkeys(args.algos), key=lambda a: a != "aes-rl"):
            cfg = make_config(env, algo, args)
            run = algo_run(env, algo, cfg, args, partial)
            runs.append(run)
            ref = finals_of(run) if algo == "aes-rl" else ref
            rows.append(summary_row(env, run, cfg, ref))
            for seed, rets in zip(run.seeds(), run.final_returns):
                per_seed.append([env, algo, seed, int(run.final(seed)["total_steps"]),
                                 statistics.mean(rets), np.nanmax(run.curve(seed)[1])])
        out = Path(f"{args.out}_{env}")
        write_csv(out.with_suffix(".csv"), runs)
        plot(out.with_suffix(".png"), runs,
             f"Brax {env} ({args.backend}), nets {args.nets}, "
             f"{len(args.seeds)} seeds, {args.cost_model} clock", wall_scope)
        pngs.append(_rel(out.with_suffix(".png")))
    table = common.md_table(
        ["env", "algo", "seeds", "W", "counted steps (min over seeds)",
         "final return IQM [95%]", "mean [95%]", "P(AES-RL > it) [95%]", "min", "max",
         "evaluations per seed", "critic / counted step", "modeled time",
         f"run wall-clock s ({wall_scope})"], rows)
    seeds_table = common.md_table(["env", "algo", "seed", "counted steps", "final return",
                                   "best scheduled eval"], per_seed)
    notes = [
        f"Brax {', '.join(args.envs)}, backend {args.backend}; every algorithm with actor and "
        f"critic nets {args.nets}, {args.weight_init} init (small nets for CPU; the paper uses "
        f"400x300 for its ES methods and 256x256 for TD3), budget {args.steps} counted env "
        f"steps per seed ({args.warmup_steps} of them random warm-up), seeds {list(args.seeds)} "
        + ("vmapped in one compiled program per algorithm" if args.seed_batch == "vmapped"
           else "one after another with one compiled program per algorithm")
        + f", {args.cost_model} clock. The authors' "
        "hyper-parameters otherwise: AES-RL baseline-relative mean and adaptive variance, "
        f"W={args.num_slots}, 5 sequential mean-evaluation episodes per individual, buffer 2e5; "
        "P-CEM-RL population 10 with 5 RL members, serial critic stage, batch 256, the same W "
        "slots with barriers; TD3 lr 3e-4, policy delay 2, exploration noise 0.1, buffer 1e6.",
        f"Final return: each seed's final policy (the ES mean; TD3's actor) on "
        f"{args.final_episodes} fresh deterministic episodes; IQM (the middle half of the "
        "seeds) and mean with 95% stratified-bootstrap percentile intervals over seeds "
        f"(rliable, {stats.REPS} resamples, seeded); P(AES-RL > it): the chance that an "
        "AES-RL seed's final return beats one of this algorithm's (rliable's probability of "
        "improvement). Every algorithm was evaluated on one schedule of counted steps: "
        f"{args.eval_episodes} episodes each time a seed passed a multiple of "
        f"{args.eval_every_steps} counted steps, and at the end.",
        "Critic / counted step: critic steps per counted step after the warm-up, at the end. "
        "Modeled time: ticks of the clock (td3: an env step and an update per tick). Run "
        f"wall-clock ({wall_scope}): the whole `run.train` call (init, compiles, chunks, "
        "evaluations).",
        "Curves (against counted steps, modeled time and wall-clock): "
        + ", ".join(f"`{p}`" for p in pngs) + " (data in the matching `.csv`).",
    ]
    session.finish("Learning comparison (" + ", ".join(args.envs) + f", {args.backend})",
                   [table, "<details><summary>Per seed</summary>\n\n" + seeds_table
                    + "\n\n</details>"], notes)


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(common.BENCH_DIR.parent))
    except ValueError:
        return path.name


if __name__ == "__main__":
    main()
