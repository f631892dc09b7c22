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


def init_state(rng, batch, *, task, tx) -> TrainState:
  """A fresh state: the task's model initialised on `batch`'s shapes, and the optimizer's."""
  variables = dict(task.init(rng, batch))
  params = variables.pop('params')
  return TrainState(step=jax.numpy.zeros((), jax.numpy.int32), params=params,
                    model_state=variables, opt_state=tx.init(params),
                    rng=jax.random.fold_in(rng, 1))
