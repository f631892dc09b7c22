"""Your own text corpus: .txt or .jsonl files, tokenized once into memory-mapped token shards.

  data.manual_dir/
    train/*.txt         and   validation/*.txt
    (or *.jsonl, one JSON object per line with a "text" field)

A document is a .txt file or a .jsonl row; the corpus is its documents in
sorted file order, each ending in a newline. Files are read in chunks and
checked as they are read: a byte that is not UTF-8 or a row without "text"
is one error naming the file and where.

Below data.in_memory_max_mb a split is read whole into a `TextSplit`, as the
built-in corpora are. Above it:
  - the tokenizer is built from a bounded sample (`TextFiles.texts`, at most
    data.tokenizer_sample_mb, spread over the files);
  - each split is tokenized once into shards of uint16 ids (uint32 when the
    vocabulary needs it) under <data_dir>/text_files/<corpus>/<tokenizer>/,
    keyed by the files (paths, sizes, times) and the tokenizer's bytes;
  - `TokenWindows` serves language-model windows straight from the
    memory-mapped shards, so memory does not grow with the corpus.
"""

import codecs
import dataclasses
import hashlib
import json
import uuid

from etils import epath
import numpy as np

from deepl.errors import UserError

SPLITS = ('train', 'validation')
EXTENSIONS = ('.txt', '.jsonl')
LAYOUT = 'train/*.txt and validation/*.txt (or .jsonl rows with a "text" field)'
CHUNK_BYTES = 8 << 20
SHARD_TOKENS = 1 << 27
MIN_SAMPLE_PER_FILE = 64 << 10


def find_splits(manual_dir) -> dict[str, list[epath.Path]]:
  """split -> its sorted files; UserError for a folder that is not `LAYOUT`."""
  if manual_dir is None:
    raise UserError(f"data.name='text_files' needs data.manual_dir: a folder with {LAYOUT}")
  root = epath.Path(manual_dir).expanduser()
  if not root.is_dir():
    raise UserError(f'data.manual_dir {manual_dir} is not a folder: point it at one with '
                    f'{LAYOUT}')
  out = {}
  for split in SPLITS:
    folder = root / split
    files = sorted((p for p in folder.iterdir() if p.suffix.lower() in EXTENSIONS and
                    not p.name.startswith('.') and p.is_file()),
                   key=lambda p: p.name) if folder.is_dir() else []
    if not files:
      raise UserError(f'{folder} has no .txt or .jsonl files: data.manual_dir needs {LAYOUT}')
    out[split] = files
  return out


def _jsonl_texts(path, text: str, first_line: int):
  for number, line in enumerate(text.splitlines(), first_line):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
    except json.JSONDecodeError as err:
      raise UserError(f'{path} line {number} is not JSON ({err.msg}): one object per '
                      'line, with a "text" field') from None
    if not isinstance(row, dict) or not isinstance(row.get('text'), str):
      raise UserError(f'{path} line {number} has no "text" string field: each row needs '
                      'one') from None
    yield row['text']


def read_documents(path, max_bytes: int | None = None):
  """Yields `path`'s documents, each ending in a newline, reading ~CHUNK_BYTES at a time.

  A .txt file is one document, yielded in pieces cut after a newline; a
  .jsonl file one per row. With `max_bytes`, stops after about that many bytes.
  """
  path = epath.Path(path)
  decoder = codecs.getincrementaldecoder('utf-8')()
  jsonl = path.suffix.lower() == '.jsonl'
  line, pending, total = 1, '', 0
  with path.open('rb') as f:
    while True:
      raw = f.read(CHUNK_BYTES if max_bytes is None else
                   max(1, min(CHUNK_BYTES, max_bytes - total)))
      try:
        text = decoder.decode(raw, final=not raw)
      except UnicodeDecodeError as err:
        raise UserError(f'{path} is not UTF-8 text (byte {total + err.start}): save it as '
                        'UTF-8, or remove it') from None
      text, pending = pending + text, ''
      if raw:  # keep the last partial line for the next chunk
        cut = text.rfind('\n') + 1
        text, pending = text[:cut], text[cut:]
      if jsonl:
        yield from _jsonl_texts(path, text, line)
        line += text.count('\n')
      elif text:
        yield text
      total += len(raw)
      if not raw or (max_bytes is not None and total >= max_bytes):
        break


def _documents(files, max_bytes=None):
  for path in files:
    for text in read_documents(path, max_bytes):
      yield text if text.endswith('\n') else text + '\n'


@dataclasses.dataclass(frozen=True)
class TextFiles:
  """A split kept on disk: its files, and a bounded sample to build a tokenizer from."""

  files: tuple
  sample_bytes: int

  def __len__(self) -> int:
    return len(self.files)

  @property
  def texts(self) -> list[str]:
    """At most ~sample_bytes of text: the start of every file, each getting an equal share."""
    share = max(self.sample_bytes // len(self.files), MIN_SAMPLE_PER_FILE)
    out, total = [], 0
    for path in self.files:
      for text in _documents([path], share):
        out.append(text)
        total += len(text)
      if total >= self.sample_bytes:
        break
    return out

  @property
  def num_bytes(self) -> int:
    return sum(p.stat().length for p in self.files)

  def fingerprint(self) -> str:
    """Changes when any file is added, removed, resized or rewritten."""
    digest = hashlib.sha256()
    for path in self.files:
      stat = path.stat()
      digest.update(f'{path}\0{stat.length}\0{stat.mtime}\0'.encode())
    return digest.hexdigest()[:16]

  def __repr__(self) -> str:
    return f'TextFiles({len(self)} files, {self.num_bytes:,} bytes)'


def read_whole(files) -> str:
  """The split as one string (the in-memory path), checked as `read_documents` checks."""
  return ''.join(_documents(files))


def token_dtype(vocab_size: int):
  return np.uint16 if vocab_size <= 1 << 16 else np.uint32


def _encode(tokenizer, text: str, split: str) -> np.ndarray:
  from deepl.data import text as text_lib  # pylint: disable=g-import-not-at-top  (a cycle)
  if hasattr(tokenizer, 'encode_array'):  # char: vectorised, no lists
    try:
      return tokenizer.encode_array(text)
    except ValueError:
      pass  # encode_split words the error
  ids = text_lib.encode_split(tokenizer, [text], split)[0]
  return np.asarray(ids, np.int64)


def tokenize(files: TextFiles, tokenizer, split: str, folder: epath.Path,
             shard_tokens: int = SHARD_TOKENS) -> dict:
  """Writes `split`'s token shards into folder (once); returns its index.

  The index (<split>.json: dtype, shards and their token counts) is written
  last, after the shards, by a rename: a folder with it is complete. (The
  train loop has process 0 tokenize first; processes that still race each
  write their own shards, and the first rename wins.)
  """
  index_path = folder / f'{split}.json'
  if index_path.exists():
    return json.loads(index_path.read_text())
  folder.mkdir(parents=True, exist_ok=True)
  dtype = token_dtype(tokenizer.vocab_size)
  tag = uuid.uuid4().hex[:8]
  shards, current, count = [], None, 0

  def close():
    if current is not None:
      current.close()
      shards.append({'file': name, 'tokens': count})

  for text in _documents(files.files):
    ids = _encode(tokenizer, text, split).astype(dtype)
    while len(ids):
      if current is None or count >= shard_tokens:
        close()
        name = f'{split}-{len(shards):05d}.{tag}.bin'
        current, count = (folder / name).open('wb'), 0
      take = ids[:shard_tokens - count]
      current.write(take.tobytes())
      count += len(take)
      ids = ids[len(take):]
  close()
  index = {'dtype': np.dtype(dtype).name, 'shards': shards,
           'tokens': sum(s['tokens'] for s in shards)}
  aside = folder / f'{split}.json.{tag}'
  aside.write_text(json.dumps(index))
  if index_path.exists():  # another process finished first: use its shards
    aside.unlink()
    for shard in shards:
      (folder / shard['file']).unlink()
    return json.loads(index_path.read_text())
  aside.rename(index_path)
  return index


class TokenWindows:
  """Windows of `context + 1` tokens from memory-mapped token shards.

  Like `text.WindowSource` (gather -> {'tokens': int32 (b, context + 1)}),
  over several shards: window i lies inside one shard, at stride `stride`.
  The shards are mapped on first use in each process (a pickled source, as
  Grain's workers get it, maps its own), so only the pages of the windows
  read are ever in memory.
  """

  def __init__(self, folder, index: dict, context: int, stride: int = 1):
    self._folder = str(folder)
    self._files = [s['file'] for s in index['shards']]
    self._dtype = np.dtype(index['dtype'])
    self.context, self.stride = context, stride
    sizes = np.array([s['tokens'] for s in index['shards']], np.int64)
    counts = np.where(sizes >= context + 1, (sizes - (context + 1)) // stride + 1, 0)
    self._starts = np.concatenate([[0], np.cumsum(counts)])
    self.num_tokens = int(sizes.sum())
    self._maps = None

  def __len__(self) -> int:
    return int(self._starts[-1])

  def __getstate__(self):
    return {**self.__dict__, '_maps': None}

  def _shards(self):
    if self._maps is None:
      self._maps = [_open_shard(epath.Path(self._folder) / f, self._dtype) for f in self._files]
    return self._maps

  def gather(self, indices) -> dict[str, np.ndarray]:
    indices = np.asarray(indices, np.int64).reshape(-1)
    if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
      raise IndexError(f'windows {indices.min()}..{indices.max()} not in [0, {len(self)})')
    shard = np.searchsorted(self._starts, indices, side='right') - 1
    starts = (indices - self._starts[shard]) * self.stride
    width = self.context + 1
    out = np.empty((len(indices), width), np.int32)
    maps = self._shards()
    for row, (s, start) in enumerate(zip(shard.tolist(), starts.tolist())):
      out[row] = maps[s][start:start + width]
    return {'tokens': out}

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    return {'tokens': self.gather([index])['tokens'][0]}

  def __repr__(self) -> str:
    return (f'TokenWindows({len(self)} windows of {self.context}+1, stride {self.stride}, '
            f'{self.num_tokens:,} {self._dtype.name} tokens in {len(self._files)} shard(s))')


class _RemoteShard:
  """A shard in a bucket: each window is one ranged read (np.memmap needs a local file)."""

  def __init__(self, path: epath.Path, dtype):
    self._path, self._dtype, self._file = path, dtype, None

  def __getitem__(self, window: slice) -> np.ndarray:
    if self._file is None:
      self._file = self._path.open('rb')
    size = self._dtype.itemsize
    self._file.seek(window.start * size)
    return np.frombuffer(self._file.read((window.stop - window.start) * size), self._dtype)


def _open_shard(path: epath.Path, dtype):
  if '://' in str(path):
    return _RemoteShard(path, dtype)
  return np.memmap(path, dtype=dtype, mode='r')


def tokenizer_fingerprint(tokenizer) -> str:
  """A hash of what the tokenizer saves: equal hashes, equal ids."""
  import tempfile  # pylint: disable=g-import-not-at-top
  digest = hashlib.sha256()
  with tempfile.TemporaryDirectory() as tmp:
    tokenizer.save(tmp)
    for path in sorted(epath.Path(tmp).iterdir(), key=lambda p: p.name):
      digest.update(path.name.encode() + b'\0' + path.read_bytes())
  return digest.hexdigest()[:16]


def token_windows(files: TextFiles, tokenizer, *, split: str, data_dir, context: int,
                  stride: int) -> TokenWindows:
  """`split` tokenized (cached under data_dir) and cut into windows."""
  folder = (epath.Path(data_dir) / 'text_files' / files.fingerprint() /
            tokenizer_fingerprint(tokenizer))
  index = tokenize(files, tokenizer, split, folder)
  source = TokenWindows(folder, index, context, stride)
  if not len(source):  # pylint: disable=g-explicit-length-test
    raise UserError(f'the {split} split has {index["tokens"]} tokens, fewer than context+1 = '
                    f'{context + 1} in any shard: lower data.context')
  return source
