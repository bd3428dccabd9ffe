"""The slot engine's families: records of pure functions over one shared engine (`aes_rl.engine`).

- `async_es`: asynchronous ES (AES-RL, ACEM-RL, (1+1)-ES): every free slot samples a member,
  RL or ES by population control; an arrival is told to the ES at once.
- `generation`: generation ES (P-CEM-RL, CEM-RL): a generation's stages (serial critic, actor
  training, evaluation, mean evaluation) are handed out in slot order and end in barriers.
- `td3`: TD3 alone: one worker, an env step and a joint update per tick.

`aes_rl.algorithms` maps each algorithm to one of them.
"""

from aes_rl.families import async_es, generation, td3

FAMILIES = {"async": async_es.FAMILY, "generation": generation.FAMILY, "td3": td3.FAMILY}
