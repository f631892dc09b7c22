"""Batches for training and evaluation, the same whatever the process count.

The data order is a property of the global batch, not of the process layout:

  stream      = perm(seed, 0) ++ perm(seed, 1) ++ ...   (each a permutation of
                all indices; a new one every epoch)
  global k    = stream[k*B : (k+1)*B]
  process p   = rows [p*b : (p+1)*b] of global batch k,  b = B // P

So the P local batches of step k, concatenated, are exactly the 1-process batch
of step k, and each process only gathers its own rows. Batches run across epoch
boundaries, so no example is dropped and every batch is full.

Variable-length sources (text: a `lengths` array, and `gather(indices,
length)`) are cut to `bucket_length` of their global batch's longest example,
so short batches cost less and jit still compiles only a few shapes; the
models mask padding, so the cut changes no result. With `sort_window=W`, each
epoch's permutation is also sorted by length within chunks of W global batches
and those batches are shuffled: batches of similar lengths, little padding.

Sources that augment on the host (`source.random`, e.g. an Inception crop of
a JPEG) get one key per row, (seed, the row's position in the stream): a
batch is a function of (seed, step) alone.

With `workers=N > 0`, batches are made in N Grain worker processes
(`mp_prefetch`): worker i makes batches i, i + N, ... and they are taken in
turn, so the batches are the same, bit for bit, for any N. The iterator's
state is still the next step ({'next_index': k}); resuming starts the workers
at step k. Workers ignore SIGINT/SIGTERM (the main process stops them after
saving) and exit on their own when the main process dies, even by kill -9.
"""

import functools
import math
import os
import signal
import sys
import threading
import time

import grain
import numpy as np

from deepl.errors import UserError


def local_batch_size(global_batch_size: int, process_count: int) -> int:
  if global_batch_size <= 0 or global_batch_size % process_count:
    raise UserError(
        f'global batch size {global_batch_size} must be a positive multiple '
        f'of the process count {process_count}: change the batch size')
  return global_batch_size // process_count


def _check_process(process_index: int, process_count: int):
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index {process_index} not in [0, '
                     f'{process_count})')


def gather(source, indices: np.ndarray) -> dict[str, np.ndarray]:
  """One batch from `source`: one numpy gather if it can, else record by record."""
  if hasattr(source, 'gather'):
    return source.gather(indices)
  # An empty batch still needs the feature shapes: take them from record 0.
  records = [source[int(i)] for i in indices] or [source[0]]
  batch = {key: np.stack([r[key] for r in records]) for key in records[0]}
  if 'label' in batch:
    batch['label'] = batch['label'].astype(np.int32)
  if not len(indices):  # pylint: disable=g-explicit-length-test
    batch = {key: value[:0] for key, value in batch.items()}
  return batch


MIN_BUCKET = 8


def bucket_length(longest: int, max_length: int) -> int:
  """The padded length for a batch: a power of two >= 8, at most max_length."""
  return min(max_length, max(MIN_BUCKET, 1 << (max(int(longest), 1) - 1).bit_length()))


def _lengths(source):
  return getattr(source, 'lengths', None)


def _gather_bucketed(source, rows: np.ndarray, global_rows: np.ndarray):
  """gather(rows), cut to the bucket of the global batch `global_rows`."""
  lengths = _lengths(source)
  if lengths is None:
    return gather(source, rows)
  longest = lengths[global_rows].max() if len(global_rows) else 1
  return source.gather(rows, bucket_length(longest, source.max_length))


def _sort_chunks(perm, lengths, rng, *, start: int, chunk: int, block: int):
  """perm with perm[start:] sorted by length within chunks, blocks shuffled.

  Blocks of `block` rows from `start` are whole global batches; shuffling only
  whole blocks (a short last block stays last) keeps them aligned.
  """
  out = perm.copy()
  for lo in range(start, len(perm), chunk):
    hi = min(lo + chunk, len(perm))
    rows = perm[lo:hi][np.argsort(lengths[perm[lo:hi]], kind='stable')]
    full = (hi - lo) // block
    order = np.concatenate([rng.permutation(full), np.arange(full, -(-(hi - lo) // block))])
    out[lo:hi] = np.concatenate([rows[b * block:(b + 1) * block] for b in order])
  return out


# Above this many rows an epoch's permutation is not held as an array (8 bytes a
# row: 2.6 GB for the stride-1 windows of a 320M-token corpus, twice over), but
# computed per index by Grain's index_shuffle (a Feistel network, O(1) memory).
# The order depends only on (seed, size), so both data paths share it.
LAZY_PERMUTATION_ROWS = 1 << 24


class _EpochPermutations:
  """perm(seed, epoch), keeping the last two (a batch can straddle two).

  With `lengths` and `sort_window`, each permutation is length-sorted in chunks
  of `sort_window` global batches (see `_sort_chunks`); the chunks start where
  the epoch's first whole global batch does.
  """

  def __init__(self, size: int, seed: int, *, lengths=None, sort_window: int = 0,
               global_batch: int = 1):
    self._size = size
    self._seed = int(seed) % 2**63
    self._cache = {}
    self._lengths = lengths if sort_window else None
    self._chunk = sort_window * global_batch
    self._block = global_batch
    self._lazy = size > LAZY_PERMUTATION_ROWS and self._lengths is None

  def _epoch_seed(self, epoch: int) -> int:
    return int(np.random.SeedSequence([self._seed, epoch]).generate_state(1)[0])

  def _lazy_rows(self, start: int, stop: int) -> np.ndarray:
    shuffle = grain.experimental.index_shuffle
    epochs, within = np.divmod(np.arange(start, stop, dtype=np.int64), self._size)
    seeds = {e: self._epoch_seed(e) for e in np.unique(epochs).tolist()}
    return np.array([shuffle(i, max_index=self._size - 1, seed=seeds[e], rounds=4)
                     for i, e in zip(within.tolist(), epochs.tolist())], np.int64)

  def __call__(self, epoch: int) -> np.ndarray:
    perm = self._cache.get(epoch)
    if perm is None:
      # SeedSequence mixes (seed, epoch) well: unlike grain's `shuffle`, whose
      # epoch e uses seed + e, seeds 0 and 1 do not share epochs shifted by one.
      rng = np.random.default_rng(np.random.SeedSequence([self._seed, epoch]))
      perm = rng.permutation(self._size)
      if self._lengths is not None:
        # The rows before the first batch boundary finish the previous epoch's batch.
        start = -epoch * self._size % self._block
        perm = _sort_chunks(perm, self._lengths, rng, start=start, chunk=self._chunk,
                            block=self._block)
      self._cache = {e: p for e, p in self._cache.items() if e >= epoch - 1}
      self._cache[epoch] = perm
    return perm

  def rows(self, start: int, stop: int) -> np.ndarray:
    """stream[start:stop], at most two epochs' worth."""
    if self._lazy:
      return self._lazy_rows(start, stop)
    first, last = start // self._size, (stop - 1) // self._size
    if first == last:
      offset = first * self._size
      return self(first)[start - offset:stop - offset]
    parts = [self(e) for e in range(first, last + 1)]
    offset = first * self._size
    return np.concatenate(parts)[start - offset:stop - offset]


class _TrainBatch:
  """Maps a step number to this process's batch of that step."""

  def __init__(self, source, order, global_batch, local_batch, process_index, seed):
    self._source = source
    self._order = order
    self._offset = process_index * local_batch
    self._global_batch = global_batch
    self._local_batch = local_batch
    self._seed = int(seed) % 2**63

  def __call__(self, step: int) -> dict[str, np.ndarray]:
    first = step * self._global_batch
    global_rows = self._order.rows(first, first + self._global_batch)
    rows = global_rows[self._offset:self._offset + self._local_batch]
    if getattr(self._source, 'random', False):
      start = first + self._offset  # the rows' positions in the global stream
      keys = [(self._seed, start + j) for j in range(len(rows))]
      return self._source.gather(rows, keys)
    return _gather_bucketed(self._source, rows, global_rows)


AUTO_WORKERS = -1


def resolve_workers(workers: int, source) -> int:
  """data.workers: -1 (auto) is one per core but one, at most 16, for a source that decodes
  (`source.parallel`), and 0 for an in-memory array (a gather costs less than a hand-off)."""
  if workers != AUTO_WORKERS:
    return workers
  if not getattr(source, 'parallel', False):
    return 0
  cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
  return max(1, min(16, (cores or 1) - 1))


def _exit_with_parent(parent: int, worker_index: int, worker_count: int) -> None:
  """In each worker: leave signals to the main process `parent`, and exit when it is gone.

  `parent` is the pid the main process passed, not os.getppid() here: a
  parent killed while the worker was still importing has already been
  replaced by the process that adopted it.
  """
  del worker_index, worker_count
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  signal.signal(signal.SIGTERM, signal.SIG_IGN)

  def watch():
    while os.getppid() == parent:  # a dead parent's children are adopted: the ppid changes
      time.sleep(0.25)
    os._exit(0)  # pylint: disable=protected-access

  threading.Thread(target=watch, daemon=True, name='deepl-parent-watch').start()


class WorkerBatches:
  """batch_fn(k) for k in [start, stop), made by `workers` Grain processes, in order.

  An iterator with `get_state()` -> {'next_index': k} and `set_state`, like
  Grain's own over a range of steps, so checkpoints do not depend on the
  worker count. The workers start on the first `next` and stop on `close`,
  `set_state` or the process's exit.
  """

  def __init__(self, batch_fn, *, stop: int, workers: int, start: int = 0, buffer: int = 2):
    if workers < 1:
      raise ValueError(f'workers {workers} must be >= 1')
    self._fn, self._stop, self._workers, self._buffer = batch_fn, stop, workers, buffer
    self._next = start
    self._it = None

  def _start(self):
    from absl import flags  # pylint: disable=g-import-not-at-top
    if not flags.FLAGS.is_parsed():  # grain reads its options from absl flags
      flags.FLAGS.mark_as_parsed()
    steps = grain.MapDataset.range(self._next, self._stop).map(self._fn)
    options = grain.MultiprocessingOptions(
        num_workers=self._workers, per_worker_buffer_size=self._buffer)
    self._it = iter(steps.to_iter_dataset().mp_prefetch(
        options, worker_init_fn=functools.partial(_exit_with_parent, os.getpid())))

  def __iter__(self):
    return self

  def __next__(self):
    if self._next >= self._stop:
      raise StopIteration
    if self._it is None:
      self._start()
    batch = next(self._it)
    self._next += 1
    return batch

  def get_state(self) -> dict:
    return {'next_index': self._next}

  def set_state(self, state: dict) -> None:
    self.close()
    self._next = int(state['next_index'])

  def close(self) -> None:
    if getattr(self, '_it', None) is not None:
      self._it.close()
      self._it = None

  def __del__(self):
    self.close()


def train_iterator(source, *, global_batch_size: int, seed: int,
                   process_index: int = 0, process_count: int = 1,
                   sort_window: int = 0, prefetch: int = 0, workers: int = 0):
  """An endless, checkpointable iterator over this process's train batches.

  Args:
    source: a split, ideally an `ArraySource` (one gather per batch); any
      random-access source of {'image', 'label'} dicts works, more slowly.
    global_batch_size: B, summed over processes.
    seed: fixes the order; same seed, same batches, for any process count.
    process_index: p, this process.
    process_count: P; each batch has B // P rows.
    sort_window: variable-length sources only: sort each epoch by length
      within chunks of this many global batches (0: random batches).
    prefetch: batches to prepare ahead in a background thread. 0 (default)
      makes them on demand: an in-memory batch costs ~0.1 ms, less than a
      thread hand-off, and a thread competes with XLA for the 2 cores here.
    workers: batches made in this many worker processes (0: in this one;
      -1: `resolve_workers`). The batches are the same for any count.

  Returns:
    An iterator of {'image': uint8 (b, H, W, C), 'label': int32 (b,)} (or
    the source's fields). `get_state()` / `set_state()` resume it exactly.
    Without workers it is a `grain.DatasetIterator`, which also works with
    `grain.checkpoint.CheckpointSave` / `CheckpointRestore` in Orbax; with
    workers, a `WorkerBatches`.
  """
  _check_process(process_index, process_count)
  local = local_batch_size(global_batch_size, process_count)
  if len(source) == 0:  # pylint: disable=g-explicit-length-test
    raise UserError('the train split is empty: check the dataset')
  if sort_window < 0:
    raise UserError(f'sort_window {sort_window} must be >= 0')
  order = _EpochPermutations(len(source), seed, lengths=_lengths(source),
                             sort_window=sort_window, global_batch=global_batch_size)
  batch_fn = _TrainBatch(source, order, global_batch_size, local, process_index, seed)
  workers = resolve_workers(workers, source)
  # The index is the step number: resuming at step k is `next_index = k`, and
  # the whole state is that one integer.
  if workers:
    return WorkerBatches(batch_fn, stop=sys.maxsize // global_batch_size, workers=workers)
  steps = grain.MapDataset.range(sys.maxsize // global_batch_size)
  read_options = grain.ReadOptions(num_threads=1 if prefetch else 0,
                                   prefetch_buffer_size=prefetch)
  return iter(steps.map(batch_fn).to_iter_dataset(read_options))


class EvalBatches:
  """The whole split once, in order, as fixed-size masked local batches.

  Every process yields `len(self)` batches of exactly b rows; rows past the end
  of the split are zeros with mask 0, so across processes each example counts
  exactly once and all processes run the same number of (jitted) steps.
  """

  def __init__(self, source, *, global_batch_size: int, process_index: int = 0,
               process_count: int = 1, workers: int = 0):
    _check_process(process_index, process_count)
    self._source = source
    self._global_batch = global_batch_size
    self._local_batch = local_batch_size(global_batch_size, process_count)
    self._offset = process_index * self._local_batch
    self._workers = resolve_workers(workers, source)

  def __len__(self) -> int:
    return math.ceil(len(self._source) / self._global_batch)

  def __call__(self, k: int) -> dict[str, np.ndarray]:
    """Batch k of this process."""
    size, b = len(self._source), self._local_batch
    first = k * self._global_batch
    start = min(first + self._offset, size)
    stop = min(start + b, size)
    batch = _gather_bucketed(self._source, np.arange(start, stop),
                             np.arange(first, min(first + self._global_batch, size)))
    real = stop - start
    if real < b:
      batch = {key: np.concatenate(
          [value, np.zeros((b - real,) + value.shape[1:], value.dtype)])
               for key, value in batch.items()}
    mask = np.zeros(b, np.float32)
    mask[:real] = 1
    batch['mask'] = mask
    return batch

  def __iter__(self):
    if not self._workers:
      yield from map(self, range(len(self)))
      return
    batches = WorkerBatches(self, stop=len(self), workers=self._workers)
    try:
      yield from batches
    finally:
      batches.close()


def eval_batches(source, *, global_batch_size: int, process_index: int = 0,
                 process_count: int = 1, workers: int = 0) -> EvalBatches:
  """See `EvalBatches`: {'image', 'label', 'mask' float32 (b,)} batches."""
  return EvalBatches(source, global_batch_size=global_batch_size,
                     process_index=process_index, process_count=process_count,
                     workers=workers)
