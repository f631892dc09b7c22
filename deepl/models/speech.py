"""Speech models on log-mel features: a keyword classifier and a CTC recognizer.

Both take features (b, T, M), e.g. `deepl.data.audio_features.log_mel`, with
the valid frames per utterance (b,). Padding never changes an output: every
layer's activations past an utterance's valid frames are set to zero before
the next layer reads them, so a padded frame holds the same zero whatever the
batch was padded to, and pooling and the recurrent layers stop at the valid
length.

  SpeechCNN (classification): 3x3 convolutions with ReLU and 2x2 max pooling,
    `widths` channels per stage, then the mean and the max over valid time
    and all frequency positions, a hidden dense layer, the logits.
  SpeechCTC (recognition): convolutional subsampling, a 3x3 convolution
    (stride 2 in frequency) then a 3-frame one with stride `time_stride` in
    time (and 2 in frequency), a linear projection, a bidirectional LSTM
    stack, and per-frame logits over the vocabulary whose id 0 is the CTC
    blank (deepl.ctc). Returns the logits and each utterance's frames after
    subsampling, ceil(frames / time_stride).

  model = SpeechCTC(vocab_size=12)
  variables = model.init(rng, features, frames, train=False)
  logits, out_frames = model.apply(variables, features, frames, train=False)
"""

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from deepl.models import checks
from deepl.models import layers
from deepl.models import rnn


def _check_inputs(model: str, features, lengths):
  checks.expect(features, model, 'features (batch, frames, mels)', ndim=3, kind='floating')
  checks.expect(lengths, model, 'frame lengths (batch,)', ndim=1, kind='integer')


def _masked(x, lengths):
  """x (b, T, ...) with positions >= lengths zeroed."""
  valid = jnp.arange(x.shape[1])[None, :] < lengths[:, None]
  return jnp.where(valid.reshape(valid.shape + (1,) * (x.ndim - 2)), x, 0)


def _conv(model, features: int, **kwargs) -> nn.Module:
  return layers.get(model.kernels).Conv(
      features, dtype=model.dtype, param_dtype=model.param_dtype,
      kernel_init=layers.axes(nn.initializers.lecun_normal(), None, None, 'conv_in', 'conv_out'),
      bias_init=layers.axes(nn.initializers.zeros, 'conv_out'), **kwargs)


def _dense(model, features: int, axes: tuple[str, str], **kwargs) -> nn.Module:
  return layers.get(model.kernels).Dense(
      features, dtype=model.dtype, param_dtype=model.param_dtype,
      kernel_init=layers.axes(nn.initializers.lecun_normal(), *axes),
      bias_init=layers.axes(nn.initializers.zeros, axes[1]), **kwargs)


def _ceil_div(lengths, stride: int):
  return (lengths + stride - 1) // stride


class SpeechCNN(nn.Module):
  """Keyword / spoken-digit classifier; see the module docstring.

  Attributes:
    num_classes: number of output logits.
    widths: channels of each conv stage (each halves time and frequency).
    hidden_dim: the dense layer before the logits.
    dropout: before the hidden and the output layer, train only.
    dtype, param_dtype: compute and parameter dtypes; logits are float32.
    kernels: the layer set (deepl.models.layers).
  """
  num_classes: int = 10
  widths: Sequence[int] = (16, 32, 64)
  hidden_dim: int = 64
  dropout: float = 0.0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernels: str = 'xla'

  @nn.compact
  def __call__(self, features, lengths, *, train: bool):
    """Maps features (b, T, M) with valid frames (b,) to float32 logits (b, num_classes)."""
    _check_inputs('SpeechCNN', features, lengths)
    maps = lambda x: layers.constrain(x, 'batch', None, None, None)
    x = _masked(features.astype(self.dtype), lengths)[..., None]
    for width in self.widths:
      x = nn.relu(maps(_conv(self, width, kernel_size=(3, 3))(x)))
      # Zeros past the end (the ReLU's floor) pool like the padding of any other batch.
      x = _masked(x, lengths)
      x = jnp.pad(x, ((0, 0), (0, x.shape[1] % 2), (0, x.shape[2] % 2), (0, 0)))
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
      lengths = _ceil_div(lengths, 2)
    count = (jnp.maximum(lengths, 1) * x.shape[2]).astype(jnp.float32)[:, None]
    mean = jnp.sum(x.astype(jnp.float32), axis=(1, 2)) / count
    peak = jnp.max(x, axis=(1, 2)).astype(jnp.float32)  # ReLU outputs: padding's 0 never wins
    x = jnp.concatenate([mean, peak], axis=-1)
    drop = functools.partial(nn.Dropout, self.dropout, deterministic=not train)
    x = nn.relu(_dense(self, self.hidden_dim, ('embed', 'mlp'))(drop()(x)))
    x = _dense(self, self.num_classes, ('mlp', 'classes'))(drop()(x))
    return x.astype(jnp.float32)


class SpeechCTC(nn.Module):
  """Convolutional subsampling + bidirectional LSTM, per-frame logits; see the module docstring.

  Attributes:
    vocab_size: outputs per frame, the CTC blank (id 0) included.
    channels: channels of both subsampling convolutions.
    time_stride: frames per output frame. CTC needs at least one output
      frame per label (two for a label repeated): 2 or 3 for 10 ms frames.
    embed_dim: the projection the LSTM reads.
    hidden_dim: each direction's LSTM state.
    num_layers: stacked bidirectional LSTM layers.
    dropout: after the projection, between layers and before the logits.
    dtype, param_dtype: compute and parameter dtypes; logits are float32.
    kernels: the layer set (deepl.models.layers).
  """
  vocab_size: int
  channels: int = 16
  time_stride: int = 3
  embed_dim: int = 96
  hidden_dim: int = 96
  num_layers: int = 2
  dropout: float = 0.0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernels: str = 'xla'

  @nn.compact
  def __call__(self, features, lengths, *, train: bool):
    """(logits float32 (b, T', vocab_size), output frames int32 (b,)), T' = ceil(T / time_stride)."""
    _check_inputs('SpeechCTC', features, lengths)
    maps = lambda x: layers.constrain(x, 'batch', None, None, None)
    x = _masked(features.astype(self.dtype), lengths)[..., None]
    x = nn.relu(maps(_conv(self, self.channels, kernel_size=(3, 3), strides=(1, 2),
                           padding=((1, 1), (1, 1)))(x)))
    x = _masked(x, lengths)
    # Output frame j reads frames s*j .. s*j + s - 1 (explicit padding after the end only):
    # the alignment of output frames never depends on how far the batch is padded.
    stride = self.time_stride
    x = nn.relu(maps(_conv(self, self.channels, kernel_size=(stride, 3), strides=(stride, 2),
                           padding=((0, stride - 1), (1, 1)))(x)))
    lengths = _ceil_div(lengths, stride).astype(jnp.int32)
    x = x.reshape(x.shape[:2] + (-1,))
    drop = functools.partial(nn.Dropout, self.dropout, deterministic=not train)
    x = drop()(_dense(self, self.embed_dim, ('mlp', 'embed'))(x))
    x, _ = rnn.RNNStack('lstm', self.hidden_dim, self.num_layers, bidirectional=True,
                        dropout=self.dropout, dtype=self.dtype, param_dtype=self.param_dtype,
                        kernels=self.kernels, name='rnn')(_masked(x, lengths), lengths,
                                                          train=train)
    x = _dense(self, self.vocab_size, ('embed', 'vocab'))(drop()(x))
    return _masked(x.astype(jnp.float32), lengths), lengths
