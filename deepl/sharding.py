"""The device mesh and the table that maps models' logical axes onto it.

  mesh = make_mesh(config.mesh)            # ('data', 'fsdp', 'tensor'), e.g. (2, 2, 2)
  rules = logical_rules(config.mesh.rules)  # (('embed', ('fsdp',)), ('mlp', ('tensor',)), ...)
  with axis_rules(rules):                   # models box their params
    abstract = jax.eval_shape(init, ...)
  specs = partition_specs(abstract, mesh, rules, model=...)

Three mesh axes, as in MaxText: 'data' (pure data parallelism: batch rows),
'fsdp' (batch rows too, and parameters and optimizer state sharded, gathered
where used: ZeRO-3) and 'tensor' (attention heads, MLP columns and the
vocabulary split across devices, Megatron style). Models name their
parameters' and activations' dimensions with logical axes
(deepl/models/layers.py); `DEFAULT_RULES` maps each name to mesh axes, and
config.mesh.rules.<name> overrides one ('' keeps that dimension whole,
'data,fsdp' splits it over both).

Where a parameter's dimension does not divide by its mesh axes it stays whole
(noted once at start), except attention heads, whose split is the point of
tensor parallelism: an error. A mesh axis of more than one device that no
parameter is split over is an error too: the model cannot use it (e.g. an
LSTM on tensor=2), and running would silently replicate it.
"""

import contextlib
import math

import flax.linen as nn
import jax
from jax.experimental import mesh_utils
from jax.sharding import PartitionSpec as P

from deepl.errors import UserError

AXES = ('data', 'fsdp', 'tensor')

# Logical axis -> mesh axes. Parameters first, then activations (named act_*:
# a parameter's 'embed' is split over fsdp for storage, an activation's
# embedding dimension is not, its rows are).
DEFAULT_RULES = {
    'embed': 'fsdp',        # the model width, in every weight that reads or writes it
    'mlp': 'tensor',        # MLP hidden units; also a dense layer's output columns
    'heads': 'tensor',      # attention heads
    'kv': '',               # per-head width
    'vocab': 'tensor',      # token ids: embedding rows, output logits
    'position': '',         # learned position tables' rows
    'classes': '',          # a classifier head's outputs
    'conv_in': '',          # a convolution's input channels
    'conv_out': 'fsdp',     # a convolution's output channels
    'gates': 'fsdp',        # a recurrent layer's G*H gate units
    'hidden': '',           # a recurrent layer's hidden state, as its recurrent kernel's rows
    'norm': '',             # LayerNorm and BatchNorm scales and offsets
    'batch': 'data,fsdp',   # activations: examples
    'length': '',           # activations: sequence positions
    'act_embed': '',
    'act_mlp': 'tensor',
    'act_heads': 'tensor',
    'act_kv': '',
    # Whole by default: with logits split over tensor and the batch over data and
    # fsdp, jaxlib 0.10.2's partitioner returned wrong gradients through BERT's
    # tied masked-LM head on a (2, 2, 2) mesh (tests/test_meshes.py); a constraint
    # must never change a value, so it stays off until that is fixed.
    'act_vocab': '',
}
# Logical axes that must divide by their mesh axes: splitting them is what the mesh asks for.
_STRICT = {'heads': 'model.num_heads'}


def mesh_shape(mesh_config, device_count: int) -> dict[str, int]:
  """{'data': d, 'fsdp': f, 'tensor': t} with -1 filled in; UserError unless d*f*t = device_count."""
  sizes = {axis: int(mesh_config[axis]) for axis in AXES}
  fill = [axis for axis, size in sizes.items() if size == -1]
  if len(fill) > 1 or any(size == 0 or size < -1 for size in sizes.values()):
    raise UserError(f'config.mesh {_shown(sizes)}: give each axis a positive size, and -1 '
                    'to at most one of them (the devices left over)')
  known = math.prod(size for size in sizes.values() if size != -1)
  if fill:
    if device_count % known:
      raise UserError(f'config.mesh {_shown(sizes)} does not divide the {device_count} devices: '
                      f'make mesh.{"*".join(a for a in AXES if a != fill[0])} a divisor of '
                      f'{device_count}')
    sizes[fill[0]] = device_count // known
  if math.prod(sizes.values()) != device_count:
    raise UserError(f'config.mesh {_shown(sizes)} needs {math.prod(sizes.values())} devices, '
                    f'this run has {device_count}: make data*fsdp*tensor = {device_count} '
                    '(-1 fills one axis)')
  return sizes


def _shown(sizes: dict) -> str:
  return ', '.join(f'{axis}={size}' for axis, size in sizes.items())


def make_mesh(mesh_config, devices=None) -> jax.sharding.Mesh:
  """The ('data', 'fsdp', 'tensor') mesh of `devices` (default all), sizes from the config.

  Several TPU slices get a hybrid mesh: 'data' spans the slices over the
  data-center network, everything else stays within a slice's ICI.
  """
  devices = list(jax.devices() if devices is None else devices)
  sizes = mesh_shape(mesh_config, len(devices))
  shape = tuple(sizes[axis] for axis in AXES)
  slices = len({getattr(d, 'slice_index', 0) for d in devices})
  if slices > 1:
    if sizes['data'] % slices:
      raise UserError(f'config.mesh.data={sizes["data"]} does not split over the {slices} '
                      'slices: make it a multiple of the slice count')
    ici = (sizes['data'] // slices, sizes['fsdp'], sizes['tensor'])
    grid = mesh_utils.create_hybrid_device_mesh(ici, (slices, 1, 1), devices)
  else:
    grid = mesh_utils.create_device_mesh(shape, devices)
  return jax.sharding.Mesh(grid, AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(AXES))


def logical_rules(overrides=None) -> tuple[tuple[str, tuple[str, ...]], ...]:
  """DEFAULT_RULES with `overrides` (name -> 'fsdp', 'data,fsdp' or ''), in flax's format."""
  table = dict(DEFAULT_RULES)
  for name, value in dict(overrides or {}).items():
    if name not in table:
      raise UserError(f'unknown logical axis {name!r} in config.mesh.rules; known: '
                      f'{", ".join(table)}')
    table[name] = value
  rules = []
  for name, value in table.items():
    axes = tuple(a.strip() for a in str(value or '').split(',') if a.strip())
    unknown = [a for a in axes if a not in AXES]
    if unknown:
      raise UserError(f'config.mesh.rules.{name}={value!r}: {unknown[0]!r} is not a mesh axis; '
                      f'use {", ".join(AXES)}, several joined by commas, or "" for none')
    rules.append((name, axes))
  return tuple(rules)


@contextlib.contextmanager
def axis_rules(rules, mesh=None):
  """The logical axis rules (and mesh) in force while models are traced (deepl.models.layers).

  Without a mesh, models box their parameters with logical names and
  constrain nothing: for init, whose boxes `partition_specs` reads (flax's
  DenseGeneral cannot constrain its flattened kernel while it builds it).
  With one, their activations are constrained too: for the steps.
  """
  with nn.logical_axis_rules(rules), (jax.set_mesh(mesh) if mesh is not None
                                      else contextlib.nullcontext()):
    yield


def partition_specs(abstract, mesh, rules, *, model: str = 'the model'):
  """(PartitionSpecs over `mesh` for every leaf of a boxed abstract tree, notes).

  `abstract` comes from jax.eval_shape under `axis_rules(rules)`: annotated leaves
  are nn.LogicallyPartitioned, the rest replicated. Notes name the dimensions
  kept whole because they do not divide. Raises UserError for an undividable
  strict axis (attention heads) and for a mesh axis no parameter uses.
  """
  table = dict(rules)
  sizes = dict(mesh.shape)
  notes, used = [], set()

  def spec(path, leaf):
    if not isinstance(leaf, nn.LogicallyPartitioned):
      return P()
    shape = leaf.value.shape
    out, taken = [], set()
    for dim, name in enumerate(leaf.names):
      axes = tuple(a for a in table.get(name, ()) if sizes[a] > 1 and a not in taken)
      split = math.prod(sizes[a] for a in axes)
      if axes and shape[dim] % split:
        where = f'{jax.tree_util.keystr(path)} dimension {dim} ({name}, {shape[dim]})'
        if name in _STRICT:
          raise UserError(f'{_STRICT[name]}={shape[dim]} does not divide over '
                          f'{"*".join(axes)}={split} devices ({where}): pick a mesh that divides it')
        notes.append(f'{where} stays whole over {"*".join(axes)}={split}')
        axes = ()
      taken.update(axes)
      out.append(axes[0] if len(axes) == 1 else (axes or None))
    used.update(taken)
    return P(*out)

  specs = jax.tree_util.tree_map_with_path(
      spec, abstract, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
  idle = [a for a in ('fsdp', 'tensor') if sizes[a] > 1 and a not in used]
  if idle:
    raise UserError(f'{model} has no parameter to split over mesh.{idle[0]}={sizes[idle[0]]}: '
                    f'set mesh.{idle[0]}=1 (and give its devices to mesh.data)')
  return specs, notes


def batch_spec(rules) -> P:
  """The sharding of a batch's leading (example) axis."""
  axes = dict(rules).get('batch', ())
  return P(axes if len(axes) != 1 else axes[0])


def check_batch(global_batch: int, mesh, rules, what: str = 'train.batch_size') -> None:
  """UserError unless the batch splits evenly over the mesh axes its rows go to."""
  axes = dict(rules).get('batch', ())
  split = math.prod(mesh.shape[a] for a in axes)
  if global_batch % split:
    raise UserError(f'config.{what}={global_batch} does not split over the {split} devices of '
                    f'mesh {"*".join(axes)}: pick a multiple of {split}')


def state_bytes_per_device(tree) -> int:
  """The largest per-device sum of `tree`'s addressable shards, in bytes."""
  per_device = {}
  for leaf in jax.tree.leaves(tree):
    for shard in leaf.addressable_shards:
      per_device[shard.device] = per_device.get(shard.device, 0) + shard.data.nbytes
  return max(per_device.values(), default=0)


def unbox(tree):
  """`tree` with flax's partitioning boxes replaced by their arrays."""
  return nn.meta.unbox(tree)

