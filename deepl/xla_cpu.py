"""XLA:CPU settings for the convolutional models, applied before JAX starts.

XLA:CPU hands matmuls, convolutions, reductions and elementwise fusions to
YNNPACK. For convolutions and the reductions around them (pooling, batch
norm) that is slower here than XLA's own kernels: with YNNPACK doing the
matmuls only (`--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_DOT`)
the train step of the MNIST CNN ran 1.3x and CIFAR ResNet-20's 1.2-1.3x as
fast on this project's 2-core AVX-512 CPU, the same numbers to float rounding
(`tools/benchmark.py`, runs alternated). GPT-mini's step got ~5% slower (its
LayerNorm and softmax reductions do gain from YNNPACK) and the LSTM's stayed
the same, so `deepl train`, `deepl evaluate` and the benchmark tools set the
flag for convolutional models only.

It is an XLA_FLAGS entry, so it must be in the environment before JAX
creates its CPU backend, and XLA aborts on a flag it does not know: it is
added only if this jaxlib names it, the backend is not up yet and XLA_FLAGS
does not already say otherwise (a user's own value always wins). It only
affects XLA's CPU backend; GPU and TPU runs are unchanged.
"""

import glob
import mmap
import os

FLAG = 'xla_cpu_experimental_ynn_fusion_type'
MATMULS_ONLY = 'LIBRARY_FUSION_TYPE_DOT'


def convolutional(model_name: str) -> bool:
  """Whether the model's step is mostly convolutions (deepl.models names)."""
  return model_name == 'cnn' or model_name.startswith('resnet')


def configure(model_names) -> bool:
  """Adds the matmuls-only YNNPACK flag for convolutional models.

  Args:
    model_names: every model the process will run; the flag is process-wide,
      so it is added only if all of them are convolutional.

  Returns:
    Whether XLA_FLAGS was changed.
  """
  current = os.environ.get('XLA_FLAGS', '')
  if (not model_names or not all(convolutional(n) for n in model_names)
      or FLAG in current or _backend_started() or not _jaxlib_knows(FLAG, MATMULS_ONLY)):
    return False
  os.environ['XLA_FLAGS'] = f'{current} --{FLAG}={MATMULS_ONLY}'.strip()
  return True


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
