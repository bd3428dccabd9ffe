"""A run's compiled program, built once by the driver: the rows' initial states, a chunk of
ticks, evaluation, the finite check and what the run reports (the ES means, the variance).

`Program` binds the engine (`aes_rl.engine`) to an algorithm of the registry
(`aes_rl.algorithms`) for one structure (`Config.structure`: configs that differ only in
traced hyper-parameters share it) and one number of rows. How its rows run (`rows`):

- `map` (the CPU default): one after another inside the program (`lax.map`), so every row
  keeps its real branches and costs what it costs alone; bit-identical to the row alone;
- `vmap` (the default elsewhere): side by side, one batched computation that fills an
  accelerator whose single tick is latency-bound; a branch on a row's predicate becomes a
  select, so every row pays both sides of it.

On several devices each device runs its own rows (`shard_map`). Programs are kept per
(structure, rows, mode) in one cache, so a process that runs many configurations shares them;
`bound_compiled_programs` keeps that cache within what Linux lets a process map.
"""

from __future__ import annotations

import dataclasses
import functools
import gc

import jax
import jax.numpy as jnp
import numpy as np

from aes_rl import algorithms, engine, evaluation, hosts
from aes_rl.config import Config
from aes_rl.engine import FINITE_PARTS, HParams, Setup, TrainState
from aes_rl.envs import make_env
from aes_rl.networks import ActorSpec, CriticSpec

ROW_MODES = ("auto", "map", "vmap")


def row_mode(mode: str = "auto") -> str:
    """`auto`: rows one after another on a CPU (`map`), side by side elsewhere (`vmap`)."""
    if mode not in ROW_MODES:
        raise ValueError(f"rows: unknown {mode!r}; allowed: {', '.join(ROW_MODES)}")
    if mode == "auto":
        return "map" if jax.default_backend() == "cpu" else "vmap"
    return mode


def build(cfg: Config) -> Setup:
    """The setup of `cfg`'s structure, bound to `cfg`'s own hyper-parameters when it has them
    (a full config); a structure-only config gives it unbound. The compiled tick always
    re-binds to the row's traced values (`Setup.bind(state.hp)`)."""
    s = _setup(cfg.structure())
    if all(getattr(cfg, name) is not None for name in cfg.hyper_fields):
        return s.bind(HParams.of(cfg))
    return s


@functools.lru_cache(maxsize=32)
def _setup(structure: Config) -> Setup:
    cfg = structure
    env = make_env(cfg.env, cfg.backend, cfg.episode_length, **dict(cfg.env_kwargs))
    obs, act = env.observation_size, env.action_size
    actor = ActorSpec(obs, act, tuple(cfg.actor_hidden), "tanh", env.max_action, cfg.weight_init)
    critic = CriticSpec(obs, act, tuple(cfg.critic_hidden), weight_init=cfg.weight_init)
    algorithm = algorithms.get(cfg.algo)
    return Setup(cfg, env, actor, critic, algorithm, algorithms.family(algorithm.family))


def tick_cost(cfg: Config) -> float:
    """Modeled time of one tick, in ticks of the cost model: 1 for the slot algorithms; td3's
    one worker takes an env step and then a joint update, one after the other."""
    return algorithms.get(cfg.algo).tick_cost(cfg)


def row_sharding(num_rows: int) -> jax.sharding.NamedSharding:
    """The row axis split evenly over the devices: over all of them when they divide the
    rows, else over the largest count that does (1: no split). On several processes
    (`aes_rl.hosts`) every process takes the same number of its own devices."""
    devices = hosts.process_devices(num_rows)
    mesh = jax.sharding.Mesh(np.asarray(devices), ("rows",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("rows"))


def stack_hparams(cfgs) -> HParams:
    """The traced values of several configs, stacked on a leading row axis."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *(HParams.of(c) for c in cfgs))


class Program:
    """The compiled program of one structure and one number of rows (module docstring).
    Every part is compiled at its first use and kept."""

    def __init__(self, structure: Config, num_rows: int, mode: str = "auto"):
        self.structure = structure.structure()
        self.num_rows = num_rows
        self.mode = row_mode(mode)
        self.setup = _setup(self.structure)  # the env is built outside any trace
        self.sharding = row_sharding(num_rows)
        self._chunks: dict[int, object] = {}
        self._evaluates: dict[int, object] = {}
        self._init = self._finite = self._report = None

    # -- the parts
    def init(self, cfgs: list[Config], seeds) -> TrainState:
        """The rows' states stacked on a leading axis: one config per row (they share the
        structure) and one seed per row."""
        if len(cfgs) != len(seeds):
            raise ValueError(f"init_batch: {len(cfgs)} configs for {len(seeds)} seeds")
        if len(seeds) != self.num_rows:
            raise ValueError(f"init_batch: {len(seeds)} rows for a program of {self.num_rows}")
        if len({c.structure() for c in cfgs}) != 1:
            raise ValueError(
                "init_batch: the rows' configs differ in structure (not only in "
                "traced hyper-parameters); run them as separate programs"
            )
        hparams = stack_hparams(cfgs)
        one = functools.partial(engine.init, self.setup)
        if self.sharding.mesh.size == 1:  # a plain jit: laid out as the chunk's outputs
            if self._init is None:
                self._init = jax.jit(jax.vmap(one))
            keys = jnp.stack([jax.random.key(int(seed)) for seed in seeds])
            state = self._init(keys, hparams)
        else:  # every device initialises its own rows (on several processes: only those)
            if self._init is None:
                rows = jax.sharding.PartitionSpec("rows")

                def init_rows(key_data, hp):
                    return jax.vmap(one)(jax.random.wrap_key_data(key_data), hp)

                self._init = jax.jit(
                    jax.shard_map(
                        init_rows,
                        mesh=self.sharding.mesh,
                        in_specs=rows,
                        out_specs=rows,
                        check_vma=False,
                    )
                )
            key_data = np.stack([jax.random.key_data(jax.random.key(int(s))) for s in seeds])
            state = self._init(
                *hosts.global_rows((key_data, jax.device_get(hparams)), self.sharding)
            )
        # Distinct buffers for every leaf (the chunk donates its input; aliases cannot be donated).
        return jax.tree.map(lambda x: x.copy(), state)

    def chunk(self, num_ticks: int):
        """The jitted chunk: `state[rows] -> (state, metrics[rows, ticks])`, donating the state."""
        if num_ticks not in self._chunks:
            self._chunks[num_ticks] = self._make_chunk(num_ticks)
        return self._chunks[num_ticks]

    def _make_chunk(self, num_ticks: int):
        s = self.setup
        if self.num_rows > 1 and self.mode == "vmap":
            s = dataclasses.replace(s, batched=True)
        chunk = functools.partial(engine.run_chunk, s, num_ticks=num_ticks)
        if self.num_rows == 1:

            def one(state):
                out = chunk(jax.tree.map(lambda x: x[0], state))
                return jax.tree.map(lambda x: x[None], out)

            return jax.jit(one, donate_argnums=0)
        if self.mode == "vmap":
            rows = jax.vmap(chunk)
        else:

            def rows(state):
                return jax.lax.map(chunk, state)

        if self.sharding.mesh.size == 1:
            return jax.jit(rows, donate_argnums=0)
        spec = self.sharding.spec
        # Each device runs its own rows: no collective inside, so no replication typing is
        # needed (check_vma off; lax.cond's branches would otherwise disagree on it).
        per_device = jax.shard_map(
            rows, mesh=self.sharding.mesh, in_specs=spec, out_specs=spec, check_vma=False
        )
        return jax.jit(per_device, donate_argnums=0)

    def evaluate(self, num_episodes: int):
        """Jitted `evaluate(flat [rows, d], key) -> returns [rows, episodes]`: deterministic
        episodes from fresh initial states, not counted, not stored."""
        if num_episodes not in self._evaluates:
            s, length = self.setup, self.structure.episode_length

            def one(flat, key):
                return evaluation.episode_return(s.env, s.actor, flat, key, length)[0]

            def evaluate(flat, key):
                keys = jax.random.split(key, (flat.shape[0], num_episodes))
                return jax.vmap(jax.vmap(one, in_axes=(None, 0)))(flat, keys)

            self._evaluates[num_episodes] = jax.jit(evaluate)
        return self._evaluates[num_episodes]

    def nonfinite_parts(self, state: TrainState) -> list[tuple[int, str]]:
        """(row, part) for every part of the rows' state holding a NaN or an inf."""
        if self._finite is None:
            s = self.setup
            self._finite = jax.jit(jax.vmap(lambda st: s.family.finite_parts(s.bind(st.hp), st)))
        ok = hosts.fetch(self._finite(state))  # [rows, 3]
        return [(i, FINITE_PARTS[j]) for i, j in zip(*(~ok).nonzero())]

    def means(self, state: TrainState) -> jax.Array:
        """The policy each row reports (the ES mean; td3: its actor): [rows, d]."""
        return self._reported(state)[0]

    def var_mean(self, state: TrainState) -> jax.Array:
        """Mean of each row's ES variance ([rows]; zeros for td3, which has no ES)."""
        return self._reported(state)[1]

    def _reported(self, state: TrainState):
        if self._report is None:
            s = self.setup

            def one(st):
                b = s.bind(st.hp)
                return b.family.mean(b, st), b.family.var(b, st)

            self._report = jax.jit(jax.vmap(one))
        return self._report(state)


@functools.lru_cache(maxsize=32)
def _program(structure: Config, num_rows: int, mode: str) -> Program:
    return Program(structure, num_rows, mode)


def get(cfg: Config, num_rows: int, rows: str = "auto") -> Program:
    """The program of `cfg`'s structure for `num_rows` rows (kept: built once per process)."""
    return _program(cfg.structure(), num_rows, row_mode(rows))


# -- the same, one call each (tests, benchmarks, experiments)


def init_batch(cfg: Config | list[Config], seeds) -> TrainState:
    """States of several rows stacked on a leading axis. `cfg`: one config for every row, or
    one per row (a sweep: they must share their structure); `seeds`: one per row."""
    cfgs = list(cfg) if isinstance(cfg, list | tuple) else [cfg] * len(seeds)
    return get(cfgs[0], len(seeds)).init(cfgs, seeds)  # `Program.init` checks the counts


def init(cfg: Config, key: jax.Array, hp: HParams | None = None) -> TrainState:
    """The state of one row (no row axis), un-jitted."""
    return engine.init(_setup(cfg.structure()), key, HParams.of(cfg) if hp is None else hp)


def make_train_chunk(cfg: Config, num_seeds: int, num_ticks: int | None = None, rows: str = "auto"):
    """The jitted chunk of `cfg`'s program for `num_seeds` rows (`Program.chunk`)."""
    return get(cfg, num_seeds, rows).chunk(num_ticks or cfg.ticks_per_chunk)


def make_evaluate(cfg: Config, num_episodes: int, num_rows: int = 1):
    """Jitted `evaluate(flat [rows, d], key) -> returns [rows, episodes]` (`Program.evaluate`)."""
    return get(cfg, num_rows).evaluate(num_episodes)


def mean_params(cfg: Config, state: TrainState) -> jax.Array:
    """The ES mean (TD3: the actor) of each row of a batched state: [rows, d]."""
    return get(cfg, _rows(state)).means(state)


def var_mean(cfg: Config, state: TrainState) -> jax.Array:
    """Mean of the ES variance per row ([rows]; zeros for td3)."""
    return get(cfg, _rows(state)).var_mean(state)


def nonfinite_parts(cfg: Config, state: TrainState) -> list[tuple[int, str]]:
    """(row, part) for every part of a batched state holding a NaN or an inf."""
    return get(cfg, _rows(state)).nonfinite_parts(state)


def _rows(state: TrainState) -> int:
    return int(state.counters.ticks.shape[0])


def clear_caches() -> None:
    """Drop every compiled program this module and JAX hold (they are rebuilt on next use,
    from the persistent compilation cache when it is on). Each compiled XLA CPU program keeps a
    few memory mappings, and Linux allows a process about 65k of them
    (`/proc/sys/vm/max_map_count`): a long-lived process that builds many different programs
    calls this before it nears the limit (`bound_compiled_programs` does, when it must), or XLA
    fails to map its next program's code and the process dies."""
    _program.cache_clear()
    _setup.cache_clear()
    jax.clear_caches()


def memory_maps() -> tuple[int, int]:
    """(memory mappings this process holds, the most Linux allows it); (0, 0) where there is
    no /proc (not Linux: no such limit)."""
    try:
        with open("/proc/self/maps", "rb") as f:
            held = sum(1 for _ in f)
        with open("/proc/sys/vm/max_map_count") as f:
            return held, int(f.read())
    except (OSError, ValueError):
        return 0, 0


def bound_compiled_programs(fraction: float = 0.6) -> bool:
    """`clear_caches` (and a garbage collection) when this process holds more than `fraction`
    of the memory mappings Linux allows it; True if it cleared. A process that compiles many
    different programs (a benchmark or an experiment over many configurations, a test session)
    calls this before each new one: a compiled program of the training loop holds thousands of
    mappings (about 1,500 for a probe env's chunk), which JAX keeps while it caches the
    program, and at the limit XLA cannot map the next program's code and the process dies (an
    LLVM "Unable to allocate section memory" abort, or a segfault in the unwinder)."""
    held, allowed = memory_maps()
    if not allowed or held <= fraction * allowed:
        return False
    clear_caches()
    gc.collect()
    return True
