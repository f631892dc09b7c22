"""Tokenizers: text <-> int ids, built from a train split, saved with the run.

  tok = tokenizers.build('char', ds.texts('train'))   # or 'word', 'sentencepiece'
  ids = tok.encode('To be'); tok.decode(ids) == 'To be'
  tok.save(workdir + '/tokenizer'); tok = tokenizers.load(workdir + '/tokenizer')

Every kind has the same interface: `encode(text) -> list[int]`,
`decode(ids) -> str`, `vocab_size`, `pad_id` (always 0, never a real token,
so padded batches need no separate mask), `save(directory)`. Building is
deterministic: the same texts and options give the same ids, and for
sentencepiece the same model bytes.

  char           the sorted set of characters of the training text; a
                 character outside it raises ValueError.
  word           whitespace split; words seen >= min_count times, ids by
                 (-count, word); 0 <pad>, 1 <unk>.
  sentencepiece  a unigram (by default) subword model trained on the text's
                 lines; 0 <pad>, 1 <unk>, 2 is the newline; exact
                 decode(encode(x)) == x for text made of characters it saw.
  hf:PATH        a Hugging Face tokenizer folder, read, not built
                 (deepl/data/hf_tokenizer.py): BERT's WordPiece, GPT-2's
                 byte-level BPE. Its pad_id is None where id 0 is a real token.
"""

import collections
import io
import json

from etils import epath
import numpy as np

from deepl.errors import UserError

KINDS = ('char', 'word', 'sentencepiece')
HF_PREFIX = 'hf:'  # data.tokenizer='hf:PATH': a Hugging Face folder's tokenizer
CONFIG_FILE = 'tokenizer.json'
SPM_FILE = 'spm.model'
PAD_ID = 0


class Tokenizer:
  """The interface every kind implements."""

  kind: str = ''
  pad_id: int | None = PAD_ID  # None: no pad token, every id is a real one

  @property
  def vocab_size(self) -> int:
    raise NotImplementedError

  def encode(self, text: str) -> list[int]:
    raise NotImplementedError

  def decode(self, ids) -> str:
    raise NotImplementedError

  def encode_batch(self, texts) -> list[list[int]]:
    """encode() of each text; kinds with a faster batch path override it."""
    return [self.encode(text) for text in texts]

  def _config(self) -> dict:
    """What tokenizer.json holds besides the kind."""
    raise NotImplementedError

  def _write_files(self, directory: epath.Path) -> None:
    """Writes any file other than tokenizer.json."""

  def save(self, directory) -> None:
    """Writes the tokenizer's files into `directory` (created if needed).

    tokenizer.json is written last: a save cut short leaves a folder that
    `load` refuses with a clear error, never a tokenizer missing its model.
    """
    directory = epath.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    self._write_files(directory)
    config = {'kind': self.kind, **self._config()}
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=1))

  def _check_ids(self, ids) -> np.ndarray:
    ids = np.asarray(ids, np.int64).reshape(-1)
    bad = ids[(ids < 0) | (ids >= self.vocab_size)]
    if bad.size:
      raise ValueError(f'ids {sorted(set(bad.tolist()))[:10]} are outside '
                       f'the vocabulary [0, {self.vocab_size})')
    return ids

  def __repr__(self) -> str:
    return f'{type(self).__name__}(vocab_size={self.vocab_size})'


class CharTokenizer(Tokenizer):
  """One id per character: 0 is pad, 1.. the characters in sorted order."""

  kind = 'char'

  def __init__(self, chars: str):
    chars = ''.join(sorted(set(chars)))
    self.chars = chars
    # Code points, sorted: encoding is one vectorised searchsorted (1M
    # characters in ~20 ms) instead of a Python loop.
    self._codes = np.array([ord(c) for c in chars], np.uint32)
    self._table = np.array(['', *chars], dtype=object)

  @property
  def vocab_size(self) -> int:
    return len(self.chars) + 1

  def encode_array(self, text: str) -> np.ndarray:
    """encode() as an int32 array, without the list."""
    codes = np.frombuffer(text.encode('utf-32-le', 'surrogatepass'), np.uint32)
    if not len(self._codes):  # pylint: disable=g-explicit-length-test
      positions = np.zeros(len(codes), np.int64)
      unknown = np.ones(len(codes), bool)
    else:
      positions = np.searchsorted(self._codes, codes)
      found = self._codes[np.minimum(positions, len(self._codes) - 1)]
      unknown = found != codes
    if unknown.any():
      missing = sorted(set(chr(c) for c in codes[unknown].tolist()))
      shown = ', '.join(f'{c!r} (U+{ord(c):04X})' for c in missing[:10])
      more = f' and {len(missing) - 10} more' if len(missing) > 10 else ''
      raise ValueError(f'{len(missing)} character(s) not in the char '
                       f'vocabulary: {shown}{more}')
    return (positions + 1).astype(np.int32)

  def encode(self, text: str) -> list[int]:
    return self.encode_array(text).tolist()

  def encode_batch(self, texts) -> list[list[int]]:
    # One pass over all texts: faster, and an error names every missing
    # character of the batch, not just those of the first bad text.
    texts = list(texts)
    ids = self.encode_array(''.join(texts)).tolist()
    ends = np.cumsum([len(t) for t in texts]).tolist()
    return [ids[start:end] for start, end in zip([0, *ends[:-1]], ends)]

  def decode(self, ids) -> str:
    # Pad (id 0) decodes to nothing, so padded rows decode to their text.
    return ''.join(self._table[self._check_ids(ids)])

  def _config(self) -> dict:
    return {'chars': self.chars}


class WordTokenizer(Tokenizer):
  """Whitespace-separated words: 0 <pad>, 1 <unk>, then by (-count, word)."""

  kind = 'word'
  UNK = '<unk>'
  unk_id = 1

  def __init__(self, words):
    self.words = ['<pad>', self.UNK, *words]
    self._ids = {word: i for i, word in enumerate(self.words)}
    if len(self._ids) != len(self.words):
      raise ValueError('word vocabulary has duplicates')

  @classmethod
  def train(cls, texts, min_count: int = 1) -> 'WordTokenizer':
    counts = collections.Counter()
    for text in texts:
      counts.update(text.split())
    # Sorting by (-count, word) fixes ids whatever the order of the texts;
    # the most frequent words get the smallest ids.
    ranked = sorted((-n, word) for word, n in counts.items() if n >= min_count)
    # A real '<pad>' or '<unk>' word would collide with the special ids.
    return cls([word for _, word in ranked if word not in ('<pad>', cls.UNK)])

  @property
  def vocab_size(self) -> int:
    return len(self.words)

  def encode(self, text: str) -> list[int]:
    get, unk = self._ids.get, self.unk_id
    return [get(word, unk) for word in text.split()]

  def decode(self, ids) -> str:
    """Words joined by single spaces; pads dropped, unknowns as <unk>."""
    words = self.words
    return ' '.join(words[i] for i in self._check_ids(ids).tolist() if i)

  def _config(self) -> dict:
    return {'words': self.words[2:]}


class SentencePieceTokenizer(Tokenizer):
  """A sentencepiece model: 0 <pad>, 1 <unk>, 2 newline, then the pieces."""

  kind = 'sentencepiece'

  def __init__(self, model_bytes: bytes):
    spm = _import_sentencepiece()
    self.model_bytes = bytes(model_bytes)
    self._sp = spm.SentencePieceProcessor(model_proto=self.model_bytes)
    if self._sp.pad_id() != PAD_ID:
      raise ValueError(f'sentencepiece model has pad id {self._sp.pad_id()}, '
                       f'not {PAD_ID}')

  # No sampling, no dropout, identity normalisation: the same text always
  # gives the same ids and decodes back to itself.
  DEFAULTS = dict(
      model_type='unigram',
      character_coverage=1.0,
      normalization_rule_name='identity',
      remove_extra_whitespaces=False,
      # A word at the start of a line keeps no invented leading space, so
      # newlines and spaces round-trip exactly.
      add_dummy_prefix=False,
      byte_fallback=False,
      # Training output depends on the thread count (partial sums), so fix it.
      num_threads=1,
      input_sentence_size=0,  # All lines: no random sampling.
  )

  @classmethod
  def train(cls, texts, vocab_size: int = 8000,
            **options) -> 'SentencePieceTokenizer':
    """Trains on the lines of `texts`.

    Args:
      texts: the training texts; each is cut into lines (sentencepiece skips
        lines over 4,192 bytes, so a whole book cannot be one "sentence").
        The newline is a piece of its own, so it survives encode/decode.
      vocab_size: the number of ids, specials included; sentencepiece fails
        (UserError) if the text cannot fill it.
      **options: sentencepiece trainer flags overriding `DEFAULTS`, e.g.
        model_type='bpe' or byte_fallback=True (exact round trip of any text,
        at the cost of 256 ids).
    """
    spm = _import_sentencepiece()
    settings = {**cls.DEFAULTS, **options}
    lines = [line for text in texts for line in text.splitlines(keepends=True)]
    if not lines:
      raise UserError('cannot train sentencepiece on an empty text')
    model = io.BytesIO()
    spm.set_random_generator_seed(0)  # Belt and braces: nothing samples.
    try:
      spm.SentencePieceTrainer.train(
          sentence_iterator=iter(lines), model_writer=model,
          vocab_size=vocab_size, pad_id=PAD_ID, unk_id=1, bos_id=-1, eos_id=-1,
          user_defined_symbols=['\n'], minloglevel=2, **settings)
    except RuntimeError as err:
      message = str(err).strip().splitlines()[-1]
      raise UserError(f'sentencepiece could not train a {vocab_size}-piece '
                      f'vocabulary ({message}): change data.vocab_size') from None
    return cls(model.getvalue())

  @property
  def vocab_size(self) -> int:
    return self._sp.get_piece_size()

  def encode(self, text: str) -> list[int]:
    return self._sp.encode(text)

  def encode_batch(self, texts) -> list[list[int]]:
    return self._sp.encode(list(texts))

  def decode(self, ids) -> str:
    return self._sp.decode(self._check_ids(ids).tolist())

  def _config(self) -> dict:
    return {'model': SPM_FILE}

  def _write_files(self, directory: epath.Path) -> None:
    (directory / SPM_FILE).write_bytes(self.model_bytes)


def _import_sentencepiece():
  try:
    import sentencepiece  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise UserError('the sentencepiece tokenizer needs the sentencepiece '
                    'package: pip install sentencepiece') from None
  return sentencepiece


def build(kind: str, texts, *, vocab_size: int | None = None,
          min_count: int | None = None, **options) -> Tokenizer:
  """Builds a tokenizer of `kind` from the training texts.

  Options a kind does not use are ignored (one config can switch kinds):
  `vocab_size` is for sentencepiece, `min_count` for word.

  Args:
    kind: 'char', 'word' or 'sentencepiece'; or 'hf:PATH', a Hugging Face
      folder's tokenizer, which is read, not built (`texts` unused).
    texts: an iterable of training texts (e.g. `dataset.texts('train')`).
    vocab_size: sentencepiece's number of ids (default 8000).
    min_count: word: rarer words become <unk> (default 1).
    **options: sentencepiece trainer flags, see `SentencePieceTokenizer`.

  Raises:
    UserError: an unknown kind, or a sentencepiece training failure.
  """
  if kind == 'char':
    chars = set()
    for text in texts:
      chars.update(text)
    return CharTokenizer(''.join(chars))
  if kind == 'word':
    min_count = 1 if min_count is None else int(min_count)
    if min_count < 1:
      raise UserError(f'min_count {min_count} must be >= 1')
    return WordTokenizer.train(texts, min_count)
  if kind == 'sentencepiece':
    return SentencePieceTokenizer.train(
        texts, vocab_size=8000 if vocab_size is None else int(vocab_size),
        **options)
  if kind.startswith(HF_PREFIX):
    from deepl.data import hf_tokenizer  # pylint: disable=g-import-not-at-top  # imports this
    return hf_tokenizer.from_folder(kind[len(HF_PREFIX):])
  raise UserError(f'unknown tokenizer {kind!r}: use one of {", ".join(KINDS)}, or '
                  f'{HF_PREFIX}PATH for a Hugging Face tokenizer folder')


def is_known(kind: str) -> bool:
  """Whether data.tokenizer names a kind, or a Hugging Face folder as 'hf:PATH'."""
  return kind in KINDS or (kind.startswith(HF_PREFIX) and len(kind) > len(HF_PREFIX))


def load(directory) -> Tokenizer:
  """Loads what `Tokenizer.save(directory)` wrote, whatever its kind."""
  directory = epath.Path(directory)
  path = directory / CONFIG_FILE
  if not path.exists():
    raise UserError(f'{directory} holds no {CONFIG_FILE}: delete the folder to '
                    'build the tokenizer again, or point at a saved one')
  config = json.loads(path.read_text())
  kind = config.get('kind')
  if kind == 'char':
    return CharTokenizer(config['chars'])
  if kind == 'word':
    return WordTokenizer(config['words'])
  if kind == 'sentencepiece':
    return SentencePieceTokenizer((directory / config['model']).read_bytes())
  if kind == 'hf':
    from deepl.data import hf_tokenizer  # pylint: disable=g-import-not-at-top  # imports this
    return hf_tokenizer.from_saved(directory, config)
  raise UserError(f'{path}: unknown tokenizer kind {kind!r} (known: '
                  f'{", ".join(KINDS)})')

