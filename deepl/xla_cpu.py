"""XLA:CPU settings for the convolutional models, applied before JAX starts.

Two XLA_FLAGS entries, each measured on this project's 2-core AVX-512 CPU
with `tools/benchmark.py` (runs alternated; the same numbers to float
rounding):

  --xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_DOT
      XLA:CPU hands matmuls, convolutions, reductions and elementwise
      fusions to YNNPACK. For convolutions and the reductions around them
      (pooling, batch norm) that is slower here than XLA's own kernels; with
      YNNPACK doing the matmuls only, the MNIST CNN's train step ran 1.3x and
      CIFAR ResNet-20's 1.2-1.3x as fast. GPT-mini's step got ~5% slower (its
      LayerNorm and softmax reductions do gain from YNNPACK) and the LSTM's
      stayed the same.
  --xla_disable_hlo_passes=cse_barrier_expander
      XLA:CPU otherwise deletes every `jax.lax.optimization_barrier` before
      fusion, so `deepl.models.fusion.materialize` could not stop XLA from
      recomputing a whole chain of batch-norm, residual-add and ReLU ops
      inside each transpose that feeds a convolution's weight gradient (in
      transposed, cache-hostile order). That recomputation was ~45% of
      ResNet-20's step. Barriers from `jax.checkpoint` are kept too, which is
      what they are for.

So `deepl train`, `deepl evaluate` and the benchmark tools set both for
convolutional models only.

They must be in the environment before JAX creates its CPU backend, and XLA
aborts on a flag it does not know: each is added only if this jaxlib names
it and its value, the backend is not up yet and XLA_FLAGS does not already
set that flag (a user's own value always wins). They only affect XLA's CPU
backend; GPU and TPU runs are unchanged.
"""

import glob
import mmap
import os

# (flag, value) pairs, in the order they are added.
FLAGS = (('xla_cpu_experimental_ynn_fusion_type', 'LIBRARY_FUSION_TYPE_DOT'),
         ('xla_disable_hlo_passes', 'cse_barrier_expander'))


def convolutional(model_name: str) -> bool:
  """Whether the model's step is mostly convolutions (deepl.models names)."""
  return model_name == 'cnn' or model_name.startswith('resnet')


def configure(model_names) -> bool:
  """Adds FLAGS to XLA_FLAGS for convolutional models.

  Args:
    model_names: every model the process will run; the flags are
      process-wide, so they are added only if all of them are convolutional.

  Returns:
    Whether XLA_FLAGS was changed.
  """
  if (not model_names or not all(convolutional(n) for n in model_names)
      or _backend_started()):
    return False
  current = os.environ.get('XLA_FLAGS', '')
  new = [f'--{flag}={value}' for flag, value in FLAGS
         if flag not in current and _jaxlib_knows(flag, value)]
  if not new:
    return False
  os.environ['XLA_FLAGS'] = ' '.join([current, *new]).strip()
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
