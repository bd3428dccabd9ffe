"""Evolution strategies over flat actor parameter vectors (docs/algorithm.md §3-5).

Modules (pure functions on `flax.struct` states; returns are maximised):
- `aes`: AES-RL's one-arrival mean/variance update (sections 3-4).
- `cem`: CEM-RL's synchronous CEM (section 5).
- `acem`: ACEM-RL's ring CEM, applied at every arrival (section 5).
- `one_plus_one`: the (1+1)-ES with a sliding-window 1/5 rule (section 5).
- `strategies`: uniform `AsyncStrategy` / `GenerationStrategy` records for the training loop,
  including a thin adapter over evosax distribution-based strategies.

Each algorithm's own run settings are declared in its module (`OPTIONS`, read into
`aes_rl.config.Config`), and `params_of(cfg, h)` there builds its params from a run.
"""
