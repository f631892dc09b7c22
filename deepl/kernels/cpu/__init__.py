"""deepl's CPU layer set: flax's layers, variables and values, lowered faster on XLA:CPU.

Registered as kernels='cpu' (deepl/models/layers.py). Each piece was found by
profiling a train step of experiments/benchmarks.py on a 2-core CPU and kept
where steps alternated in one process showed it; each module says what it
does and what it measured:

  conv.py        first-layer, 16-channel and stride-2 convolutions
  batch_norm.py  batch norm whose reductions XLA:CPU runs fast
  dense.py       Dense layers as 2-D matmuls
  attention.py   causal attention in key-skipping query blocks, head-major
  rnn.py         the recurrent time loop with a hand-written backward pass
  buffers.py     materialize (kept buffers) and channel sums, shared by them

Plus the table projection of an RNN language model's first layer
(deepl/models/rnn.py, `project_embedding_table`).

conv.py, batch_norm.py and rnn.py carry custom VJPs: no forward-mode AD
(`jax.jvp`, Hessian-vector products) through kernels='cpu', and batch norm
over a named axis wants its gradient taken inside the map. Use the stock set
(kernels='xla') for those; tests check that both sets give the same losses
and gradients.
"""

import importlib.metadata

from deepl.kernels.cpu import attention
from deepl.kernels.cpu import batch_norm
from deepl.kernels.cpu import conv
from deepl.kernels.cpu import dense
from deepl.kernels.cpu import rnn
from deepl.models import layers

LAYERS = layers.LayerSet(
    Conv=conv.Conv, BatchNorm=batch_norm.BatchNorm, Dense=dense.Dense,
    DenseGeneral=dense.DenseGeneral, attention=attention.dot_product_attention,
    recurrence=rnn.recurrence, project_embedding_table=True, forward_mode_ad=False)
layers.register('cpu', LAYERS)

# jaxlib releases whose XLA knows `xla_cpu_experimental_ynn_fusion_type`
# (absent from 0.8.0's, present from 0.9.0's): an unknown option fails the compile.
_YNN_OPTION_SINCE = (0, 9)


def _jaxlib_version() -> tuple[int, ...]:
  return tuple(int(p) for p in importlib.metadata.version('jaxlib').split('.')[:2])


def compiler_options(convolutional: bool) -> dict[str, str]:
  """XLA:CPU options for a step built from these layers.

  - `xla_disable_hlo_passes=cse_barrier_expander`: XLA:CPU otherwise deletes
    every optimization barrier before fusion, which makes
    `buffers.materialize` a no-op (ResNet-20's step then spent ~45% of its
    time recomputing batch-norm, residual and ReLU chains inside the
    transposes that feed its kernel gradients) and defeats remat
    (`jax.checkpoint` marks what to recompute with barriers: with them kept,
    remat cut an 8-layer GPT's compiled temporaries from 660 to 115 MiB;
    deleted, it saved nothing).
  - `xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_DOT`, where the
    step convolves (`convolutional`): YNNPACK for matmuls only, XLA's own
    kernels for convolutions, reductions and elementwise fusions (jaxlib
    0.9+). Train steps with and without it, alternated in one process on 2
    cores: ResNet-20 2.08x (8 of 8 rounds ahead), the MNIST CNN 1.88x; but
    GPT-mini 0.88x (0 of 8 ahead; XLA splits 319 of its reductions in two
    passes instead of 136) and the char LSTM 0.97x.
  """
  options = {'xla_disable_hlo_passes': 'cse_barrier_expander'}
  if convolutional and _jaxlib_version() >= _YNN_OPTION_SINCE:
    options['xla_cpu_experimental_ynn_fusion_type'] = 'LIBRARY_FUSION_TYPE_DOT'
  return options
