"""Source -> target text pairs and the token sources a seq2seq task batches.

  ds = get_dataset('dates')
  tok = tokenizers.build('char', ds.texts('train'))    # sources + targets
  splits = seq2seq_splits(ds, tok, max_source=24, max_target=20)
  bos, eos = special_ids(tok)                          # model vocab: eos + 1
  it = train_iterator(splits['train'], global_batch_size=64, seed=0)

Every batch has fixed shapes:

  inputs        int32 (b, S)      source ids, padded with 0
  input_length  int32 (b,)        real source tokens (>= 1)
  targets       int32 (b, T + 1)  [BOS] target ids [EOS] 0 ...

with S = max_source and T + 1 = max_target + 2, so the decoder reads
targets[:, :-1] (T positions, BOS first) and predicts targets[:, 1:].

BOS and EOS get the two ids just past the tokenizer's vocabulary
(`special_ids`): the tokenizers keep 0 for padding and have no other
specials, and ids of their own would mean changing every saved tokenizer.
The model's vocabulary is therefore `tokenizer.vocab_size + 2`; turn its
output back into text with `decode_target`, which stops at EOS (the
tokenizer's own `decode` refuses the two extra ids).
"""

import dataclasses

import numpy as np

from deepl.data import records
from deepl.data import text as text_lib
from deepl.errors import UserError

NUM_SPECIAL = 2  # BOS, EOS


@dataclasses.dataclass(frozen=True)
class PairSplit:
  """A split's raw (source, target) text pairs."""

  sources: list[str]
  targets: list[str]

  def __post_init__(self):
    if len(self.sources) != len(self.targets):
      raise ValueError(f'{len(self.sources)} sources but {len(self.targets)} '
                       'targets')

  @property
  def texts(self) -> list[str]:
    """Sources then targets: what a shared tokenizer is built from."""
    return self.sources + self.targets

  def __len__(self) -> int:
    return len(self.sources)

  def __repr__(self) -> str:
    return f'PairSplit({len(self)} pairs)'


def load_pair_split(builder, split: str) -> PairSplit:
  """Reads a prepared split with `source` and `target` Text features."""
  columns = records.read_scalar_columns(builder, split, ['source', 'target'])
  return PairSplit(*([t.decode('utf-8') for t in columns[k]] for k in ('source', 'target')))


def special_ids(tokenizer) -> tuple[int, int]:
  """(bos, eos): the ids just past the tokenizer's vocabulary."""
  return tokenizer.vocab_size, tokenizer.vocab_size + 1


def model_vocab_size(tokenizer) -> int:
  """The vocabulary a seq2seq model needs: the tokenizer's plus BOS and EOS."""
  return tokenizer.vocab_size + NUM_SPECIAL


def decode_target(tokenizer, ids) -> str:
  """Generated ids -> text: up to the first EOS, BOS and pads dropped."""
  bos, eos = special_ids(tokenizer)
  ids = np.asarray(ids).reshape(-1).tolist()
  if eos in ids:
    ids = ids[:ids.index(eos)]
  return tokenizer.decode([i for i in ids if i != bos])


def _pad(ids: list[list[int]], width: int, offset: int = 0) -> np.ndarray:
  """Rows of ids written at columns offset.. of a zero (b, width) array."""
  out = np.zeros((len(ids), width), np.int32)
  for row, seq in enumerate(ids):
    out[row, offset:offset + len(seq)] = seq
  return out


class Seq2SeqSource:
  """Padded (source, target) token pairs with BOS/EOS placed; see the module.

  gather -> {'inputs': int32 (b, max_source), 'input_length': int32 (b,),
  'targets': int32 (b, max_target + 2)}. A pair longer than the limits is an
  error, not a silent cut: a truncated target would teach the model to stop
  early, and a truncated source asks it to guess.
  """

  def __init__(self, source_ids, target_ids, *, max_source: int,
               max_target: int, bos: int, eos: int, split: str = 'data'):
    if max_source < 1 or max_target < 1:
      raise UserError(f'max_source {max_source} and max_target {max_target} '
                      'must be >= 1')
    if len(source_ids) != len(target_ids):
      raise ValueError(f'{len(source_ids)} sources but {len(target_ids)} '
                       'targets')
    for name, ids, limit in (('source', source_ids, max_source),
                             ('target', target_ids, max_target)):
      longest = max(map(len, ids), default=0)
      if longest > limit:
        raise UserError(f'the {split} split has a {name} of {longest} tokens, '
                        f'more than data.max_{name}={limit}: raise '
                        f'data.max_{name} to at least {longest}')
    self.max_source, self.max_target = max_source, max_target
    self.inputs = _pad(source_ids, max_source)
    # At least 1: an empty source is one pad token, so the encoder's padding
    # mask never hides every key.
    self.input_length = np.maximum(
        np.fromiter(map(len, source_ids), np.int32, len(source_ids)), 1)
    self.targets = _pad([[bos, *t, eos] for t in target_ids], max_target + 2)

  def __len__(self) -> int:
    return len(self.inputs)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    return {'inputs': self.inputs[index],
            'input_length': self.input_length[index],
            'targets': self.targets[index]}

  def gather(self, indices) -> dict[str, np.ndarray]:
    return {'inputs': self.inputs[indices],
            'input_length': self.input_length[indices],
            'targets': self.targets[indices]}

  def __repr__(self) -> str:
    return (f'Seq2SeqSource({len(self)} pairs, source {self.max_source}, '
            f'target {self.max_target} + BOS/EOS)')


def seq2seq_splits(dataset, tokenizer, *, max_source: int, max_target: int,
                   splits=None) -> dict[str, Seq2SeqSource]:
  """Tokenizes a pair dataset's splits into `Seq2SeqSource`s.

  Args:
    dataset: a `Dataset` whose splits are `PairSplit`s.
    tokenizer: from `deepl.data.tokenizers`, built on `dataset.texts(train)`
      (sources and targets share it and the model's embedding).
    max_source: S, source tokens per example.
    max_target: target tokens per example, BOS/EOS not counted.
    splits: the split names to make (default all).

  Raises:
    UserError: a split that is not text pairs, text the tokenizer cannot
      encode, or a pair longer than the limits.
  """
  bos, eos = special_ids(tokenizer)
  names = list(dataset.splits) if splits is None else list(splits)
  out = {}
  for name in names:
    split = dataset.splits[name]
    if not isinstance(split, PairSplit):
      raise UserError(f'{dataset.name} is not a source -> target data set: '
                      "task 'seq2seq' needs one, e.g. data.name='dates'")
    out[name] = Seq2SeqSource(
        text_lib.encode_split(tokenizer, split.sources, name),
        text_lib.encode_split(tokenizer, split.targets, name),
        max_source=int(max_source), max_target=int(max_target), bos=bos,
        eos=eos, split=name)
  return out
