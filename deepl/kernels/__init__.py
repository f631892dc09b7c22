"""Platform speed paths for deepl's models, each chosen explicitly by name.

A model's `kernels` field names the layer set it is built from
(deepl/models/layers.py): 'xla', flax's stock layers, is every model's
default; `deepl.kernels.cpu` registers 'cpu', layers with the same variables
and values that XLA:CPU runs faster. deepl's command line resolves
`config.kernels='auto'` once, from the platform the run uses, writes the
result into the run's config.json and prints it (`resolve`).

A set may also need XLA compiler options for the steps it is compiled into
(`compiler_options`): they are passed to that step's `jax.jit`, never set
process-wide. They may depend on what the model computes (the cpu set's on
whether it convolves), never on its name.
"""

import jax

from deepl import config as config_lib
from deepl import jaxprs
from deepl.kernels import cpu

_HALF = ('bfloat16', 'float16')


def resolve(kernels: str, platform: str, compute_dtype: str = 'float32') -> str:
  """The layer set for `kernels` ('auto', 'xla' or 'cpu') on `platform` ('cpu', 'gpu', 'tpu')."""
  del compute_dtype  # every set computes in any dtype
  if kernels != 'auto':
    return kernels
  return 'cpu' if platform == 'cpu' else 'xla'


def _resolve_attention(attention: str, platform: str, compute_dtype: str) -> str:
  """'cudnn' for 'auto' where cuDNN's fused attention runs (a GPU, half precision), else 'xla'."""
  if attention != 'auto':
    return attention
  return 'cudnn' if platform == 'gpu' and compute_dtype in _HALF else 'xla'


def platform() -> str:
  """The platform this process's computations run on: 'cpu', 'gpu' or 'tpu'."""
  return jax.devices()[0].platform


def resolve_config(config, *, again: bool = False) -> None:
  """Sets config.kernels and config.attention from 'auto' to what this process's devices take.

  again: resolve both as 'auto' whatever the config holds: a finished run
  read on another machine (every layer set gives the same values).
  """
  for key, resolve_key in (('kernels', resolve), ('attention', _resolve_attention)):
    config[key] = resolve_key('auto' if again else config[key], platform(),
                              config_lib.compute_dtype(config))


def compiler_options(kernels: str, model_fn, *args) -> dict[str, str]:
  """The XLA options a step built from `kernels` is compiled with on this process's platform.

  model_fn(*args): a function that runs the model, traced (not run) to see
  what it computes; deepl passes the train state's init, which calls it.
  """
  if kernels != 'cpu' or platform() != 'cpu':
    return {}
  return cpu.compiler_options(convolutional=_convolves(jax.make_jaxpr(model_fn)(*args).jaxpr))


def _convolves(jaxpr) -> bool:
  """Whether `jaxpr`, or any jaxpr inside it (jit, scan, custom VJP), has a convolution."""
  return any(eqn.primitive.name == 'conv_general_dilated' for eqn in jaxprs.equations(jaxpr))
