"""Date conversion, a generated translation task with exact answers.

`get_dataset('dates')`: a calendar date written in one of nine formats (the
source) -> the same date as "July 4, 2023" (the target), e.g.

  2023-07-04      7/4/2023      07/04/2023     04.07.2023     20230704
  4 Jul 2023      4 July 2023   Jul 4, 2023    July 4th, 2023

Dates run from 1900-01-01 to 2099-12-31 (73,049 days). 52,000 distinct dates
are drawn without replacement by a fixed permutation (numpy's PCG64 seeded
with 0) and split 50,000 train / 1,000 validation / 1,000 test; each date gets
one format, drawn from the same generator. The split is by date, not by
string, so no validation or test date appears in train in any format: a model
must compose year, month and day, not recall the pair. Nothing is downloaded;
the same TFDS version always writes the same records.

US slashes (month first) and European dots (day first) are told apart by the
separator, so every source has exactly one reading.
"""

import datetime

import numpy as np
import tensorflow_datasets as tfds

SEED = 0
SPLIT_SIZES = {'train': 50_000, 'validation': 1_000, 'test': 1_000}
FIRST_DAY = datetime.date(1900, 1, 1)
LAST_DAY = datetime.date(2099, 12, 31)

MONTHS = ('January', 'February', 'March', 'April', 'May', 'June', 'July',
          'August', 'September', 'October', 'November', 'December')


def _ordinal(day: int) -> str:
  suffix = 'th' if 10 <= day % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(
      day % 10, 'th')
  return f'{day}{suffix}'


# Written out rather than through strftime, which follows the locale.
FORMATS = (
    lambda y, m, d: f'{y:04d}-{m:02d}-{d:02d}',
    lambda y, m, d: f'{m}/{d}/{y}',
    lambda y, m, d: f'{m:02d}/{d:02d}/{y}',
    lambda y, m, d: f'{d:02d}.{m:02d}.{y}',
    lambda y, m, d: f'{y:04d}{m:02d}{d:02d}',
    lambda y, m, d: f'{d} {MONTHS[m - 1][:3]} {y}',
    lambda y, m, d: f'{d} {MONTHS[m - 1]} {y}',
    lambda y, m, d: f'{MONTHS[m - 1][:3]} {d}, {y}',
    lambda y, m, d: f'{MONTHS[m - 1]} {_ordinal(d)}, {y}',
)


def target_text(date: datetime.date) -> str:
  return f'{MONTHS[date.month - 1]} {date.day}, {date.year}'


def generate(sizes=None, seed: int = SEED) -> dict[str, list[dict]]:
  """split -> [{'source', 'target', 'format'}]: the whole data set, in memory.

  Deterministic in (sizes, seed). Splits take consecutive slices of one
  permutation of the days, validation and test first, so they are disjoint by
  date and keep their examples when only the train size changes.
  """
  sizes = dict(SPLIT_SIZES if sizes is None else sizes)
  num_days = (LAST_DAY - FIRST_DAY).days + 1
  total = sum(sizes.values())
  if total > num_days:
    raise ValueError(f'{total} distinct dates asked for, only {num_days} exist')
  rng = np.random.Generator(np.random.PCG64(seed))
  days = rng.permutation(num_days)[:total]
  formats = rng.integers(len(FORMATS), size=total)
  out, start = {}, 0
  for split in ('validation', 'test', 'train'):
    rows = []
    for offset, fmt in zip(days[start:start + sizes[split]].tolist(),
                           formats[start:start + sizes[split]].tolist()):
      date = FIRST_DAY + datetime.timedelta(days=offset)
      rows.append({'source': FORMATS[fmt](date.year, date.month, date.day),
                   'target': target_text(date), 'format': fmt})
    out[split] = rows
    start += sizes[split]
  return {split: out[split] for split in SPLIT_SIZES if split in out}


class Dates(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Dates in nine formats -> "Month D, YYYY"; 50k/1k/1k, held out by date."""

  name = 'dates'
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Nine source formats, 1900-2099, PCG64 seed 0.'}

  def _info(self):
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            # Encoder-less Text: utf-8 bytes, written and read without TF.
            'source': tfds.features.Text(),
            'target': tfds.features.Text(),
            # Index into FORMATS, for per-format error analysis.
            'format': tfds.features.Tensor(shape=(), dtype=np.int64),
        }),
        supervised_keys=('source', 'target'),
        disable_shuffling=True,  # Record i is example i of generate().
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Generated: nothing to download.
    data = generate(SPLIT_SIZES)
    return {split: self._generate_examples(rows)
            for split, rows in data.items()}

  def _generate_examples(self, rows):
    for i, row in enumerate(rows):
      yield i, row
