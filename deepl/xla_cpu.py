"""XLA:CPU settings, applied before JAX starts.

Two XLA_FLAGS entries, each measured on this project's 2-core AVX-512 CPU
with `tools/benchmark.py` (runs alternated; the same numbers to float
rounding):

  --xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_DOT
      Convolutional models only. XLA:CPU hands matmuls, convolutions,
      reductions and elementwise fusions to YNNPACK. For convolutions and
      the reductions around them (pooling, batch norm) that is slower here
      than XLA's own kernels; with YNNPACK doing the matmuls only, the MNIST
      CNN's train step ran 1.3x and CIFAR ResNet-20's 1.2-1.3x as fast.
      GPT-mini's step got ~5% slower (its LayerNorm and softmax reductions do
      gain from YNNPACK) and the LSTM's stayed the same.
  --xla_disable_hlo_passes=cse_barrier_expander
      Every model. XLA:CPU otherwise deletes every
      `jax.lax.optimization_barrier` before fusion. That makes
      `deepl.models.fusion.materialize` a no-op, and ResNet-20's step then
      spends ~45% of its time recomputing chains of batch-norm, residual-add
      and ReLU ops inside the transposes that feed its convolutions' weight
      gradients. It also defeats remat (`jax.checkpoint` marks what to
      recompute with barriers): with them kept, remat cut an 8-layer GPT's
      compiled temporaries from 660 to 115 MiB; deleted, it saved nothing.

`deepl train`, `deepl evaluate`, `deepl sample` and the benchmark tools call
`configure`. The flags must be in the environment before JAX creates its CPU
backend, and XLA aborts on a flag it does not know: each is added only if
this jaxlib names it and its value, the backend is not up yet and XLA_FLAGS
does not already set that flag (a user's own value always wins). XLA_FLAGS
reaches every backend's compiler and the pass name is not CPU-only, so
nothing is added where JAX will run on an accelerator: JAX_PLATFORMS names
another platform first, or (JAX_PLATFORMS unset) a GPU/TPU plugin is
installed. GPU and TPU runs are unchanged.
"""

import glob
import mmap
import os


def convolutional(model_name: str) -> bool:
  """Whether the model's step is mostly convolutions (deepl.models names)."""
  return model_name == 'cnn' or model_name.startswith('resnet')


# (flag, value, which models want it), in the order they are added.
FLAGS = (
    ('xla_cpu_experimental_ynn_fusion_type', 'LIBRARY_FUSION_TYPE_DOT', convolutional),
    ('xla_disable_hlo_passes', 'cse_barrier_expander', lambda model_name: True),
)


def configure(model_names) -> bool:
  """Adds to XLA_FLAGS the FLAGS that these models want.

  Args:
    model_names: every model the process will run (deepl.models names); the
      flags are process-wide, so each is added only if all of them want it.

  Returns:
    Whether XLA_FLAGS was changed.
  """
  if not model_names or _backend_started() or _accelerator_expected():
    return False
  current = os.environ.get('XLA_FLAGS', '')
  new = [f'--{flag}={value}' for flag, value, wanted in FLAGS
         if all(map(wanted, model_names)) and flag not in current
         and _jaxlib_knows(flag, value)]
  if not new:
    return False
  os.environ['XLA_FLAGS'] = ' '.join([current, *new]).strip()
  return True


def _accelerator_expected() -> bool:
  """Whether JAX's default backend will (likely) be something other than CPU."""
  platforms = os.environ.get('JAX_PLATFORMS', '').strip()
  if platforms:
    return platforms.split(',')[0].strip() != 'cpu'
  import importlib.metadata  # pylint: disable=g-import-not-at-top
  import importlib.util  # pylint: disable=g-import-not-at-top
  import pkgutil  # pylint: disable=g-import-not-at-top
  try:  # GPU plugins: the jax_plugins namespace package or entry points, as JAX finds them
    import jax_plugins  # pylint: disable=g-import-not-at-top
    if any(pkgutil.iter_modules(jax_plugins.__path__)):
      return True
  except ImportError:
    pass
  if importlib.metadata.entry_points(group='jax_plugins'):
    return True
  return importlib.util.find_spec('libtpu') is not None


def _backend_started() -> bool:
  from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
  return xla_bridge.backends_are_initialized()


def _jaxlib_knows(*names: str) -> bool:
  """Whether jaxlib's XLA library holds these strings (flag and enum names)."""
  import jaxlib  # pylint: disable=g-import-not-at-top
  libraries = glob.glob(os.path.join(os.path.dirname(jaxlib.__file__), '*.so'))
  if not libraries:
    return False
  # XLA itself is the largest library.
  with open(max(libraries, key=os.path.getsize), 'rb') as f, \
       mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
    return all(data.find(name.encode()) >= 0 for name in names)
