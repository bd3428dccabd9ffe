"""The slot engine: W worker slots advanced tick by tick inside one compiled `lax.scan`
(docs/algorithm.md §6 the engine, §8 the clock, "One tick" the reading order).

- `state`: the records (phases, traced hyper-parameters, slots, counters, critic job,
  tick metrics, the records a family returns) and per-tick rates;
- `family`: the contract with a family of algorithms (`Family`) and the `Setup` a program is
  built from;
- `jobs`: free slots draw jobs; completed units move slots to their next phase;
- `envstep`: the tick's env steps and the replay buffer;
- `learn`: actor steps, critic steps, the ES families' defaults;
- `loop`: a row's initial state, one tick, a chunk of ticks.

The engine imports no family and no registry (`aes_rl.algorithms` sits above both; the driver's
`aes_rl.program` compiles a run's program).
"""

from aes_rl.engine.envstep import act, acting_capacity, env_step, step_envs
from aes_rl.engine.family import AlgorithmOptions, Family, Setup
from aes_rl.engine.jobs import (
    advance_phases,
    assign_if_free,
    assign_jobs,
    next_jobs,
    reset_slot_envs,
    ring_push,
    start_training,
)
from aes_rl.engine.learn import (
    FINITE_PARTS,
    es_finite_parts,
    es_mean,
    es_var,
    finite,
    shared_critic_learner,
    shared_critic_update,
    slot_actions,
    slot_layers,
    train_actors,
    train_critic,
    worker_critic_target,
)
from aes_rl.engine.loop import init, run_chunk, tick
from aes_rl.engine.state import (
    CRITIC,
    ENV_SCOPES,
    MEAN_EVAL,
    PHASES,
    ROLLOUT,
    SCOPES,
    TRAIN,
    WAIT,
    Counters,
    CriticJob,
    Draw,
    Ended,
    HParams,
    Learner,
    Rate,
    Slots,
    TickMetrics,
    TrainState,
    count,
    tile,
    tree_where,
)

__all__ = [
    "acting_capacity",
    "act",
    "env_step",
    "step_envs",
    "AlgorithmOptions",
    "Family",
    "Setup",
    "advance_phases",
    "assign_if_free",
    "assign_jobs",
    "next_jobs",
    "reset_slot_envs",
    "ring_push",
    "start_training",
    "FINITE_PARTS",
    "es_finite_parts",
    "es_mean",
    "es_var",
    "finite",
    "shared_critic_learner",
    "shared_critic_update",
    "slot_actions",
    "slot_layers",
    "train_actors",
    "train_critic",
    "worker_critic_target",
    "CRITIC",
    "ENV_SCOPES",
    "MEAN_EVAL",
    "PHASES",
    "ROLLOUT",
    "SCOPES",
    "TRAIN",
    "WAIT",
    "Counters",
    "CriticJob",
    "Draw",
    "Ended",
    "HParams",
    "Learner",
    "Rate",
    "Slots",
    "TickMetrics",
    "TrainState",
    "count",
    "tile",
    "tree_where",
    "init",
    "run_chunk",
    "tick",
]
