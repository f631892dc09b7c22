"""GLUE's SST-2 as array_record files, readable without TensorFlow.

`get_dataset('glue/sst2')`: the TFDS name, config 'sst2' of a builder 'glue'.
Online: TFDS's URL and sha256 for SST-2.zip. Offline, manual_dir holds either
that zip or its three TSVs (train.tsv, dev.tsv, test.tsv; sha256 below).

Differences from TFDS's glue/sst2 (2.0.0), all deliberate:
  - `sentence` is stripped: GLUE's train/dev rows end in a space before the
    tab, which TFDS keeps and every tokenizer would then have to undo.
  - `label` and `idx` are int64 Tensors (TFDS: ClassLabel, int32): 0 negative,
    1 positive, -1 for the unlabelled test split, as in TFDS.
  - A malformed row is an error naming file:line. TFDS silently drops a row
    with an empty label and fails with a bare traceback on the others; either
    way the benchmark would not be the one reported.
"""

import io
import zipfile

import numpy as np
import tensorflow_datasets as tfds

from deepl.data.builders import _manual
from deepl.errors import UserError

URL = 'https://dl.fbaipublicfiles.com/glue/data/SST-2.zip'
SPLIT_FILES = {'train': 'train.tsv', 'validation': 'dev.tsv', 'test': 'test.tsv'}
# The members of SST-2.zip, from shared/data/sst2/README.md (no upstream
# publishes per-file checksums; these are the files GLUE's zip holds).
TSV_SHA256 = {
    'train.tsv':
        '5c47819a1d04cfabc7afcc79a919c97b0b367101ad42d3ff148d67bf501384c2',
    'dev.tsv':
        '54a9c12c77e402fc14d6a66a506f24d999f596b0176eb777c972cccc2f9cc4b0',
    'test.tsv':
        '69a938605609b3e6663b4487918fe1565eb293734e6e520d0366d1d412fd2a13',
}
_LABELLED_HEADER = ['sentence', 'label']
_TEST_HEADER = ['index', 'sentence']


def read_tsv(lines, where: str, labelled: bool) -> list[tuple[str, int]]:
  """Parses one SST-2 TSV into (sentence, label) rows; label -1 if unlabelled.

  Args:
    lines: the file's lines (text), header first.
    where: the file's name for errors ("<where>:<line>: ...").
    labelled: train/dev (`sentence<TAB>label`) rather than test
      (`index<TAB>sentence`).

  Raises:
    UserError: a wrong header, a row without exactly 2 fields, or a label
      that is not 0 or 1 (an index that is not an integer, for test).
  """
  header = _LABELLED_HEADER if labelled else _TEST_HEADER
  fix = 'use the original GLUE SST-2 files'
  rows = []
  for line_number, line in enumerate(lines, 1):
    # Split by hand, not with csv: GLUE's TSVs have no quoting (TFDS reads
    # them with QUOTE_NONE), and this way errors know their line.
    fields = line.rstrip('\r\n').split('\t')
    if line_number == 1:
      if fields != header:
        raise UserError(f'{where}:1: header {fields} is not {header}: {fix}')
      continue
    if fields == ['']:  # A blank line, e.g. at the end: nothing to read.
      continue
    if len(fields) != 2:
      raise UserError(f'{where}:{line_number}: {len(fields)} tab-separated '
                      f'fields, expected 2 ({", ".join(header)}): {fix}')
    if labelled:
      sentence, label = fields
      if label not in ('0', '1'):
        raise UserError(f'{where}:{line_number}: label {label!r} is not 0 or '
                        f'1: {fix}')
      rows.append((sentence.strip(), int(label)))
    else:
      index, sentence = fields
      if not index.strip().isdigit():
        raise UserError(f'{where}:{line_number}: index {index!r} is not an '
                        f'integer: {fix}')
      rows.append((sentence.strip(), -1))
  return rows


def _read_split(binary_file, where: str, name: str) -> list[tuple[str, int]]:
  # Lines end at '\n' only: a stray '\r' inside a sentence stays text rather
  # than splitting the row in two.
  with io.TextIOWrapper(binary_file, encoding='utf-8', newline='\n') as f:
    return read_tsv(f, where, labelled=name != 'test.tsv')


class Glue(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """GLUE; only the sst2 config (binary sentiment of movie-review phrases)."""

  name = 'glue'
  # Not one of TFDS's glue versions (1.0.0, 1.0.1, 2.0.0), so a copy TFDS
  # prepared in the same data_dir is never taken for this one.
  VERSION = tfds.core.Version('1.1.0')
  RELEASE_NOTES = {'1.1.0': 'sst2 only; Text + int64 Tensor features in '
                            'array_record; stripped sentences.'}
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(
      name='sst2', description='Stanford Sentiment Treebank, binary (GLUE).')]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f'Put SST-2.zip (from {URL}) or its train.tsv, dev.tsv and test.tsv in '
      'manual_dir.')

  def _info(self):
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            # Text without an encoder is a plain utf-8 string Tensor: written
            # and read without TensorFlow (checked with tfds 4.9.10).
            'sentence': tfds.features.Text(),
            'label': tfds.features.Tensor(shape=(), dtype=np.int64),
            'idx': tfds.features.Tensor(shape=(), dtype=np.int64),
        }),
        supervised_keys=('sentence', 'label'),
        disable_shuffling=True,  # Record i is row i of the TSV.
        homepage='https://nlp.stanford.edu/sentiment/index.html',
    )

  def _split_generators(self, dl_manager):
    manual_dir = _manual.given_manual_dir(dl_manager)
    zip_name = URL.rsplit('/', 1)[-1]
    if manual_dir is None:
      zip_path = dl_manager.download(URL)
    elif (manual_dir / zip_name).exists():
      expected = _manual.expected_from_url_infos(self.url_infos, [URL])
      zip_path = _manual.check_files(manual_dir, expected,
                                     fix=self._fix())[zip_name]
    else:
      zip_path = None
      paths = _manual.check_files(manual_dir, TSV_SHA256, fix=self._fix())

    # Parse everything before TFDS writes anything, so a bad row leaves no
    # half-written split behind.
    if zip_path is not None:
      with zip_path.open('rb') as f, zipfile.ZipFile(f) as archive:
        rows = {split: _read_split(archive.open(f'SST-2/{name}'),
                                   f'{zip_name}:SST-2/{name}', name)
                for split, name in SPLIT_FILES.items()}
    else:
      rows = {split: _read_split(paths[name].open('rb'), str(paths[name]), name)
              for split, name in SPLIT_FILES.items()}
    return {split: self._generate_examples(rows[split]) for split in rows}

  def _fix(self) -> str:
    return (f'point data.manual_dir at a folder with SST-2.zip (from {URL}) or '
            'with the original GLUE train.tsv, dev.tsv and test.tsv')

  def _generate_examples(self, rows):
    for i, (sentence, label) in enumerate(rows):
      yield i, {'sentence': sentence, 'label': label, 'idx': i}
