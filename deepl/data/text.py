"""Text splits and the token sources the pipeline batches.

  ds = get_dataset('tiny_shakespeare', manual_dir=...)
  tok = tokenizers.build('char', ds.texts('train'))
  splits = text_splits(ds, tok, kind='lm', context=128)
  it = train_iterator(splits['train'], global_batch_size=64, seed=0)

A source has `len` and `gather(indices)`, like `ArraySource`, so the existing
`train_iterator` / `eval_batches` serve text unchanged. Tokens are int32,
padded with id 0; LM windows have one shape, classification batches a few
(cut to a power-of-two bucket of their longest sequence), so jit compiles
a bounded number of programs.
"""

import dataclasses
import itertools

import numpy as np

from deepl.data import records
from deepl.data import text_files
from deepl.errors import UserError


@dataclasses.dataclass(frozen=True)
class TextSplit:
  """A split's raw texts, and labels (int32; -1 unlabelled) if it has any."""

  texts: list[str]
  labels: np.ndarray | None = None

  def __len__(self) -> int:
    return len(self.texts)

  def __repr__(self) -> str:
    chars = sum(len(t) for t in self.texts)
    return f'TextSplit({len(self)} texts, {chars} characters)'


def load_text_split(builder, split: str) -> TextSplit:
  """Reads a prepared text split: `sentence` + `label`, or `text` alone."""
  features = builder.info.features
  key = 'sentence' if 'sentence' in features else 'text'
  columns = records.read_scalar_columns(builder, split, [key, 'label'] if 'label' in features
                                        else [key])
  texts = [t.decode('utf-8') for t in columns[key]]
  labels = np.array(columns['label'], np.int32) if 'label' in columns else None
  return TextSplit(texts, labels)


class ClassificationTextSource:
  """Token sequences padded or cut to `max_length`, with their labels.

  gather -> {'tokens': int32 (b, max_length), 'length': int32 (b,),
  'label': int32 (b,)}; `lengths` lets the pipeline cut and sort batches. Longer sequences keep their first `max_length`
  tokens. `length` counts the real tokens but is at least 1: an empty text is
  one pad token, so a mean over the first `length` positions never divides by
  zero.
  """

  def __init__(self, token_ids, labels, max_length: int):
    if max_length < 1:
      raise UserError(f'max_length {max_length} must be >= 1')
    labels = np.asarray(labels, np.int32)
    if len(token_ids) != len(labels):
      raise ValueError(f'{len(token_ids)} sequences but {len(labels)} labels')
    lengths = np.fromiter(map(len, token_ids), np.int64, len(token_ids))
    flat = np.fromiter(itertools.chain.from_iterable(token_ids), np.int32,
                       int(lengths.sum()))
    # Scatter all tokens in one go: row r's tokens sit at columns 0..len-1.
    rows = np.repeat(np.arange(len(lengths)), lengths)
    cols = np.arange(len(flat)) - np.repeat(np.cumsum(lengths) - lengths,
                                            lengths)
    keep = cols < max_length
    self.tokens = np.zeros((len(lengths), max_length), np.int32)
    self.tokens[rows[keep], cols[keep]] = flat[keep]
    self.lengths = np.clip(lengths, 1, max_length).astype(np.int32)
    self.labels = labels
    self.max_length = max_length
    self.num_truncated = int((lengths > max_length).sum())

  def __len__(self) -> int:
    return len(self.labels)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    return {'tokens': self.tokens[index], 'length': self.lengths[index],
            'label': self.labels[index]}

  def gather(self, indices, length: int | None = None) -> dict[str, np.ndarray]:
    """The rows `indices`, tokens cut to `length` columns (default all).

    The pipeline passes the bucket of its batch's longest sequence, so cutting
    drops padding only.
    """
    tokens = self.tokens[indices]
    if length is not None:
      tokens = tokens[:, :length]
    return {'tokens': tokens, 'length': self.lengths[indices],
            'label': self.labels[indices]}

  def __repr__(self) -> str:
    return (f'ClassificationTextSource({len(self)} x {self.max_length}, '
            f'{self.num_truncated} truncated)')


class WindowSource:
  """Windows of `context + 1` consecutive tokens of one long sequence.

  Window i is tokens[i*stride : i*stride + context + 1]: the task feeds
  [:, :-1] and predicts [:, 1:]. gather -> {'tokens': int32 (b, context+1)}.

  stride=1 (training): every offset is a window, so the pipeline's per-epoch
  permutation samples windows without replacement, and resuming needs only
  the step. stride=context (evaluation): consecutive windows' targets tile
  tokens[1 : 1 + len*context] exactly once; the last < context targets that
  do not fill a window are left out.
  """

  def __init__(self, token_ids, context: int, stride: int = 1):
    if context < 1 or stride < 1:
      raise UserError(f'context {context} and stride {stride} must be >= 1')
    self.token_ids = np.asarray(token_ids, np.int32)
    if self.token_ids.ndim != 1:
      raise ValueError(f'token_ids must be 1-D, not {self.token_ids.shape}')
    self.context = context
    self.stride = stride
    size = len(self.token_ids) - (context + 1)
    self._len = size // stride + 1 if size >= 0 else 0
    # A view, not a copy: gathering copies only the rows asked for.
    self._windows = np.lib.stride_tricks.sliding_window_view(
        self.token_ids, context + 1) if self._len else None

  def __len__(self) -> int:
    return self._len

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    if not 0 <= index < self._len:
      raise IndexError(f'window {index} not in [0, {self._len})')
    return {'tokens': self._windows[index * self.stride].copy()}

  def gather(self, indices) -> dict[str, np.ndarray]:
    indices = np.asarray(indices, np.int64)
    if not self._len:
      if indices.size:
        raise IndexError('no windows: the sequence is shorter than context+1')
      return {'tokens': np.zeros((0, self.context + 1), np.int32)}
    return {'tokens': self._windows[indices * self.stride]}

  def __repr__(self) -> str:
    return (f'WindowSource({len(self)} windows of {self.context}+1, stride '
            f'{self.stride}, {len(self.token_ids)} tokens)')


def encode_split(tokenizer, texts, split: str) -> list[list[int]]:
  """Tokenizes a split; an unencodable text is a UserError naming the split."""
  try:
    return tokenizer.encode_batch(texts)
  except ValueError as err:
    raise UserError(f'cannot tokenize the {split} split with the '
                    f'{tokenizer.kind} tokenizer: {err}; build it from text '
                    "that has them, or use data.tokenizer='word' or "
                    "'sentencepiece'") from None


def text_splits(dataset, tokenizer, *, kind: str, max_length: int | None = None,
                context: int | None = None,
                splits=None) -> dict[str, object]:
  """Tokenizes a text dataset's splits into sources for the pipeline.

  Args:
    dataset: a text `Dataset` (from `get_dataset`).
    tokenizer: from `deepl.data.tokenizers` (build or load).
    kind: 'classification': one padded example per text
      (`ClassificationTextSource`, needs `max_length` and labels); 'lm': each
      split's texts encoded and concatenated into one sequence, cut into
      `WindowSource`s of `context` + 1 tokens, stride 1 for the train split
      and `context` for the others.
    max_length: classification: tokens per example.
    context: lm: tokens the model sees per window.
    splits: the split names to make (default all).

  Returns:
    split name -> source.

  Raises:
    UserError: a bad kind/option, a dataset without labels for
      classification, text the tokenizer cannot encode, or a split shorter
      than one window.
  """
  if kind not in ('classification', 'lm'):
    raise UserError(f"unknown text kind {kind!r}: use 'classification' or 'lm'")
  option, value = ('max_length', max_length) if kind == 'classification' else (
      'context', context)
  if value is None or int(value) < 1:
    raise UserError(f'{kind} needs a positive data.{option}, not {value}')
  value = int(value)
  names = list(dataset.splits) if splits is None else list(splits)
  out = {}
  for name in names:
    split = dataset.splits[name]
    stride = 1 if name == dataset.train_split else value
    if isinstance(split, text_files.TextFiles):  # a corpus too big to hold: token shards
      if kind != 'lm':
        raise UserError(f'{dataset.name} has no labels and one document per file: use '
                        "task='causal_lm' with it")
      out[name] = text_files.token_windows(split, tokenizer, split=name,
                                           data_dir=dataset.data_dir, context=value,
                                           stride=stride)
      continue
    if kind == 'classification' and split.labels is None:
      raise UserError(f'{dataset.name} has no labels to classify: use a '
                      'language-modelling task with it')
    ids = encode_split(tokenizer, split.texts, name)
    if kind == 'classification':
      out[name] = ClassificationTextSource(ids, split.labels, value)
    else:
      flat = np.fromiter(itertools.chain.from_iterable(ids), np.int32)
      source = WindowSource(flat, value, stride)
      if not len(source):  # pylint: disable=g-explicit-length-test
        raise UserError(f'the {name} split has {len(flat)} tokens, fewer than '
                        f'context+1 = {value + 1}: lower data.context')
      out[name] = source
  return out
