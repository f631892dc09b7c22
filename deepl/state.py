"""The train state: everything a resumed run needs, as one pytree.

Kept free of functions (no apply_fn / tx inside) so Orbax can save and restore
it as plain arrays, and so jit/pmap see only data.
"""

from typing import Any

import flax.struct
import jax


@flax.struct.dataclass
class TrainState:
  step: jax.Array          # int32 scalar: train steps taken
  params: Any
  model_state: Any         # non-trained variables, e.g. {'batch_stats': ...}; {} if none
  opt_state: Any
  rng: jax.Array           # base key; step keys come from fold_in(rng, step)
