"""The layer set a model is built from, chosen by its `kernels` field.

Every model takes `kernels: str = 'xla'`, and asks `layers.get(self.kernels)`
for its convolutions, batch norms, dense layers, attention and recurrent time
loop. 'xla' is the stock set: flax's `nn.Conv`, `nn.BatchNorm`, `nn.Dense`,
`nn.DenseGeneral`, `jax.nn.dot_product_attention` and a plain `lax.scan`,
which every JAX transformation (jvp, vmap, grad of vmap with named axes,
shard_map, export for any platform) handles as it handles flax's own models.

Other sets are speed paths for one platform that keep the stock layers'
variables and values: `deepl.kernels.cpu` registers 'cpu' (deepl's models
package imports it, so `kernels='cpu'` always resolves). Nothing here looks
at the host: the choice is the field, made explicitly by the caller (deepl's
command line resolves `config.kernels='auto'` from the platform a run uses).

Sharding is metadata. Every parameter's initialiser goes through `axes`,
which names its dimensions with logical axes ('embed', 'mlp', 'heads',
'vocab', 'conv_out', ...), and activations go through `constrain`. Both act
only inside flax's `nn.logical_axis_rules(...)` (deepl's sharded runs set it,
deepl/sharding.py): there `init` returns `nn.LogicallyPartitioned` boxes and,
with a mesh set too, activations get sharding constraints. Outside it, which
is how anyone who ignores sharding calls a model, `init` returns plain arrays
and no constraint is traced.
"""

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax


@dataclasses.dataclass(frozen=True)
class LayerSet:
  """What a model takes from its kernels.

  Attributes:
    Conv, BatchNorm, Dense, DenseGeneral: Module classes with the fields,
      variables and values of flax's layers of the same names.
    attention: (q, k, v, *, mask, is_causal) -> out, the math of
      `jax.nn.dot_product_attention` with its layouts; None for that function
      itself.
    recurrence: (step, w_h, b_h, carry, xw, mask) -> (carry, ys), a
      recurrent layer's time loop (see deepl.models.rnn.scan_recurrence for
      the contract); None for a plain `lax.scan`.
    project_embedding_table: a language model's first recurrent layer may
      project its embedding table once and look up each token's row, instead
      of projecting every token's embedding (the same products when the
      vocabulary is smaller than the batch's tokens).
    forward_mode_ad: whether `jax.jvp` works through the set (custom VJPs
      rule it out).
  """
  Conv: type = nn.Conv
  BatchNorm: type = nn.BatchNorm
  Dense: type = nn.Dense
  DenseGeneral: type = nn.DenseGeneral
  attention: Callable[..., jax.Array] | None = None
  recurrence: Callable[..., Any] | None = None
  project_embedding_table: bool = False
  forward_mode_ad: bool = True


def axes(init: Callable[..., jax.Array], *names: str | None) -> Callable[..., Any]:
  """`init`, whose arrays carry the logical axis `names` under flax's logical axis rules.

  Only while no mesh is set: that is when deepl traces a state's shapes to
  read the names. Under a mesh (the steps) flax still runs initialisers
  abstractly in `apply`, to check the given parameters' shapes, and a box
  there would constrain DenseGeneral's flattened kernel with its full-rank
  names.
  """
  partitioned = nn.with_logical_partitioning(init, names)

  def init_fn(*args, **kwargs):
    if nn.get_logical_axis_rules() and jax.sharding.get_abstract_mesh().empty:
      return partitioned(*args, **kwargs)
    return init(*args, **kwargs)

  return init_fn


def layer_norm(**kwargs) -> nn.LayerNorm:
  """nn.LayerNorm with its scale and bias named 'norm'."""
  return nn.LayerNorm(scale_init=axes(nn.initializers.ones, 'norm'),
                      bias_init=axes(nn.initializers.zeros, 'norm'), **kwargs)


def constrain(x: jax.Array, *names: str | None) -> jax.Array:
  """x, constrained to the sharding of logical axes `names` under flax's logical axis rules."""
  if not nn.get_logical_axis_rules():
    return x
  return nn.with_logical_constraint(x, names)


STOCK = LayerSet()
_SETS = {'xla': STOCK}


def register(name: str, layer_set: LayerSet) -> None:
  """Makes `layer_set` the one models get for `kernels=name`."""
  _SETS[name] = layer_set


def names() -> list[str]:
  return sorted(_SETS)


def get(name: str) -> LayerSet:
  """The layer set registered as `name`; ValueError naming the known ones."""
  if name not in _SETS:
    raise ValueError(f'unknown kernels {name!r}: use one of {", ".join(names())}')
  return _SETS[name]
