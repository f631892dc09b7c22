"""deepl.data text: SST-2 and Tiny Shakespeare builders, tokenizers, sources.

Offline like test_data.py: builders get a manual_dir (or a faked download),
and a test data_dir, so a TFDS download can never start.
"""

import hashlib
import time
import zipfile

import numpy as np
import pytest
import tensorflow_datasets as tfds

from deepl import data
from deepl.data import text as text_lib
from deepl.data import tokenizers
from deepl.data.builders import glue
from deepl.errors import UserError

SST2_COUNTS = {'train': 67349, 'validation': 872, 'test': 1821}
SHAKESPEARE_CHARS = {'train': 1003854, 'validation': 55770, 'test': 55770}


# An accidental TFDS download fails at once (tests/conftest.py).
pytestmark = pytest.mark.usefixtures('no_network')


@pytest.fixture(scope='module')
def sst2(shared_data, tfds_data_dir):
  start = time.time()
  ds = data.get_dataset('glue/sst2', data_dir=str(tfds_data_dir),
                        manual_dir=str(shared_data / 'sst2'))
  print(f'prepare + load glue/sst2: {time.time() - start:.1f} s')
  return ds


@pytest.fixture(scope='module')
def shakespeare(shared_data, tfds_data_dir):
  return data.get_dataset('tiny_shakespeare', data_dir=str(tfds_data_dir),
                          manual_dir=str(shared_data / 'tiny_shakespeare'))


@pytest.fixture(scope='module')
def spm_shakespeare(shakespeare):
  start = time.time()
  tok = tokenizers.build('sentencepiece', shakespeare.texts('train'),
                         vocab_size=400)
  print(f'sentencepiece (400) on Shakespeare: {time.time() - start:.1f} s')
  return tok


def _copy_manual(src, tmp_path, edit=None):
  """A writable copy of the files of src (not README), `edit` name -> bytes fn."""
  manual = tmp_path / 'manual'
  manual.mkdir()
  for path in src.iterdir():
    if path.suffix != '.md':
      content = path.read_bytes()
      if edit and path.name in edit:
        content = edit[path.name](content)
      (manual / path.name).write_bytes(content)
  return manual


# --- Builders ------------------------------------------------------------------


def test_sst2_counts_rows_and_labels(sst2):
  assert {k: len(v) for k, v in sst2.splits.items()} == SST2_COUNTS
  assert (sst2.num_classes, sst2.image_shape, sst2.is_text) == (2, None, True)
  assert (sst2.train_split, sst2.eval_split) == ('train', 'validation')
  train, dev, test = (sst2.splits[s] for s in ('train', 'validation', 'test'))
  # The trailing space GLUE puts before the tab is stripped.
  assert train.texts[0] == 'hide new secretions from the parental units'
  assert dev.texts[0] == "it 's a charming and often affecting journey ."
  assert test.texts[0] == 'uneasy mishmash of styles and genres .'
  assert (train.labels[0], dev.labels[0]) == (0, 1)
  assert np.bincount(train.labels).tolist() == [29780, 37569]
  assert np.bincount(dev.labels).tolist() == [428, 444]
  assert (test.labels == -1).all() and train.labels.dtype == np.int32
  assert sst2.texts('train') is train.texts


def test_sst2_records_keep_tsv_order(sst2, tfds_data_dir):
  builder = data.datasets.get_builder('glue/sst2', str(tfds_data_dir))
  record = builder.as_data_source('validation')[5]
  assert record['idx'] == 5
  assert record['sentence'].decode() == sst2.splits['validation'].texts[5]


def test_shakespeare_splits_match_tfds(shakespeare, shared_data):
  text = (shared_data / 'tiny_shakespeare' / 'input.txt').read_text()
  lengths = {k: len(v.texts[0]) for k, v in shakespeare.splits.items()}
  assert lengths == SHAKESPEARE_CHARS
  assert all(len(v) == 1 for v in shakespeare.splits.values())
  assert ''.join(shakespeare.texts(s)[0] for s in SHAKESPEARE_CHARS) == text
  assert shakespeare.texts('train')[0].startswith(
      'First Citizen:\nBefore we proceed any further, hear me speak.')
  assert (shakespeare.num_classes, shakespeare.eval_split) == (None, 'validation')
  assert shakespeare.splits['train'].labels is None


def _flip_middle_byte(content):
  content = bytearray(content)
  content[len(content) // 2] ^= 0x01
  return bytes(content)


@pytest.mark.parametrize('name,folder,file', [
    ('glue/sst2', 'sst2', 'dev.tsv'),
    ('tiny_shakespeare', 'tiny_shakespeare', 'input.txt'),
])
def test_manual_dir_bad_checksum(shared_data, tmp_path, name, folder, file):
  manual = _copy_manual(shared_data / folder, tmp_path,
                        edit={file: _flip_middle_byte})
  with pytest.raises(UserError, match=rf'{file} has sha256 .* point data\.manual_dir'):
    data.get_dataset(name, data_dir=str(tmp_path / 'tfds'), manual_dir=str(manual))
  assert not data.datasets.get_builder(name, str(tmp_path / 'tfds')).is_prepared()


def test_sst2_missing_file(shared_data, tmp_path):
  manual = _copy_manual(shared_data / 'sst2', tmp_path)
  (manual / 'test.tsv').unlink()
  with pytest.raises(UserError, match=r'has no test\.tsv'):
    data.get_dataset('glue/sst2', data_dir=str(tmp_path / 'tfds'),
                     manual_dir=str(manual))


def test_sst2_malformed_row_names_file_and_line(shared_data, tmp_path, monkeypatch):
  def break_line_3(content):
    lines = content.split(b'\n')
    lines[2] = lines[2].replace(b'\t', b'\tx\t')
    return b'\n'.join(lines)
  manual = _copy_manual(shared_data / 'sst2', tmp_path,
                        edit={'dev.tsv': break_line_3})
  # The checksum would catch the edit first: pretend it is the expected file.
  fake = hashlib.sha256((manual / 'dev.tsv').read_bytes()).hexdigest()
  monkeypatch.setitem(glue.TSV_SHA256, 'dev.tsv', fake)
  with pytest.raises(UserError, match=r'dev\.tsv:3: 3 tab-separated fields, '
                     r'expected 2 \(sentence, label\)'):
    data.get_dataset('glue/sst2', data_dir=str(tmp_path / 'tfds'),
                     manual_dir=str(manual))
  assert not data.datasets.get_builder('glue/sst2', str(tmp_path / 'tfds')).is_prepared()


@pytest.mark.parametrize('lines,labelled,message', [
    (['sentence\tlabel\n', 'good \t1\n', 'bad \tpositive\n'], True,
     r"f\.tsv:3: label 'positive' is not 0 or 1"),
    (['sentence\tlabel\n', 'no tab here\n'], True, r'f\.tsv:2: 1 tab-separated'),
    (['sentence\tlabel\n', 'fine\t2\n'], True, r"f\.tsv:2: label '2'"),
    (['index\tsentence\n', 'x\tsome text\n'], False, r"f\.tsv:2: index 'x'"),
    (['label\tsentence\n'], True, r"f\.tsv:1: header \['label', 'sentence'\]"),
])
def test_read_tsv_errors(lines, labelled, message):
  with pytest.raises(UserError, match=message):
    glue.read_tsv(lines, 'f.tsv', labelled=labelled)


def test_read_tsv_strips_and_skips_blank_lines():
  rows = glue.read_tsv(['sentence\tlabel\n', 'a b \t1\r\n', '\n'], 'f', True)
  assert rows == [('a b', 1)]
  assert glue.read_tsv(['index\tsentence\n', '0\tc d\n'], 'f', False) == [('c d', -1)]


def _fake_download(monkeypatch, path):
  asked = []

  def fake_download(self, url):
    del self
    asked.append(url)
    return path

  monkeypatch.setattr(tfds.download.DownloadManager, 'download', fake_download)
  return asked


def test_sst2_online_path_reads_the_zip(tmp_path, monkeypatch):
  zip_path = tmp_path / 'SST-2.zip'
  with zipfile.ZipFile(zip_path, 'w') as archive:
    archive.writestr('SST-2/train.tsv', 'sentence\tlabel\na \t1\nb c \t0\n')
    archive.writestr('SST-2/dev.tsv', 'sentence\tlabel\nd \t0\n')
    archive.writestr('SST-2/test.tsv', 'index\tsentence\n0\te f\n')
    archive.writestr('SST-2/original/README.txt', 'ignored')
  asked = _fake_download(monkeypatch, zip_path)
  ds = data.get_dataset('glue/sst2', data_dir=str(tmp_path / 'tfds'))
  assert asked == [glue.URL]
  assert ds.texts('train') == ['a', 'b c'] and ds.splits['train'].labels.tolist() == [1, 0]
  assert ds.texts('test') == ['e f'] and ds.splits['test'].labels.tolist() == [-1]


def test_shakespeare_online_path_splits_90_5_5(tmp_path, monkeypatch):
  path = tmp_path / 'input.txt'
  path.write_text(''.join(chr(ord('a') + i % 26) for i in range(1001)))
  asked = _fake_download(monkeypatch, path)
  ds = data.get_dataset('tiny_shakespeare', data_dir=str(tmp_path / 'tfds'))
  assert asked == ['https://raw.githubusercontent.com/karpathy/char-rnn/master/'
                   'data/tinyshakespeare/input.txt']
  assert [len(ds.texts(s)[0]) for s in ('train', 'validation', 'test')] == [900, 50, 51]


def test_known_names_include_text_sets():
  assert {'glue/sst2', 'tiny_shakespeare'} <= set(data.known_names())


# --- Tokenizers ----------------------------------------------------------------


def test_char_round_trip_and_vocab(shakespeare):
  tok = tokenizers.build('char', shakespeare.texts('train'))
  assert tok.vocab_size == 66 and tok.pad_id == 0  # 65 characters + pad
  assert tok.chars == ''.join(sorted(set(shakespeare.texts('train')[0])))
  text = shakespeare.texts('validation')[0]
  ids = tok.encode(text)
  assert min(ids) >= 1 and len(ids) == len(text)
  assert tok.decode(ids) == text
  assert tok.decode([0, *tok.encode('To be'), 0]) == 'To be'  # pads vanish


def test_char_unknown_characters_are_named():
  tok = tokenizers.build('char', ['abc'])
  with pytest.raises(ValueError, match=r"2 character\(s\) not in the char "
                     r"vocabulary: 'd' \(U\+0064\), '☃' \(U\+2603\)"):
    tok.encode('ab☃d')


def test_word_vocab_order_unk_and_min_count():
  texts = ['the cat sat', 'the dog sat', 'a cat']
  tok = tokenizers.build('word', texts)
  # (-count, word): the 2, cat 2, sat 2, then a, dog.
  assert tok.words == ['<pad>', '<unk>', 'cat', 'sat', 'the', 'a', 'dog']
  assert tok.encode('the  cat\tflew') == [4, 2, 1]
  assert tok.decode(tok.encode('the cat flew')) == 'the cat <unk>'
  assert tokenizers.build('word', texts, min_count=2).words[2:] == ['cat', 'sat', 'the']
  shuffled = texts[::-1]
  assert tokenizers.build('word', shuffled).words == tok.words


def test_word_on_sst2(sst2):
  start = time.time()
  tok = tokenizers.build('word', sst2.texts('train'))
  print(f'word tokenizer on SST-2 train: {time.time() - start:.2f} s')
  assert tok.words[2:4] == ['the', ',']  # the most frequent tokens
  sentence = sst2.texts('validation')[0]
  assert tok.decode(tok.encode(sentence)) == sentence


def test_sentencepiece_round_trip(spm_shakespeare, shakespeare):
  tok = spm_shakespeare
  assert tok.vocab_size == 400 and tok.pad_id == 0
  text = shakespeare.texts('validation')[0]
  ids = tok.encode(text)
  assert 0 not in ids and 1 not in ids  # no pad, no unknown
  assert len(ids) < 0.6 * len(text)  # subwords, not characters
  assert tok.decode(ids) == text
  for sample in ['  two  spaces  ', '\n\nA line.\n', '']:
    assert tok.decode(tok.encode(sample)) == sample


def test_sentencepiece_is_deterministic(spm_shakespeare, shakespeare):
  again = tokenizers.build('sentencepiece', shakespeare.texts('train'),
                           vocab_size=400)
  assert again.model_bytes == spm_shakespeare.model_bytes


def test_sentencepiece_vocab_too_large_is_a_user_error():
  with pytest.raises(UserError, match=r'sentencepiece could not train a '
                     r'5000-piece vocabulary .*data\.vocab_size'):
    tokenizers.build('sentencepiece', ['a tiny text\n'] * 3, vocab_size=5000)


@pytest.mark.parametrize('kind', ['char', 'word', 'sentencepiece'])
def test_save_load_gives_identical_encodings(kind, sst2, tmp_path):
  texts = sst2.texts('train')[:3000]
  tok = tokenizers.build(kind, texts, vocab_size=300, min_count=1)
  tok.save(tmp_path / 'tok')
  loaded = tokenizers.load(str(tmp_path / 'tok'))
  assert type(loaded) is type(tok) and loaded.vocab_size == tok.vocab_size
  sample = texts[-50:]
  assert loaded.encode_batch(sample) == tok.encode_batch(sample)
  assert [loaded.encode(t) for t in sample] == tok.encode_batch(sample)
  again = tokenizers.build(kind, texts, vocab_size=300, min_count=1)
  again.save(tmp_path / 'again')
  for path in (tmp_path / 'tok').iterdir():  # building is deterministic
    assert path.read_bytes() == (tmp_path / 'again' / path.name).read_bytes()


def test_load_and_build_errors(tmp_path):
  with pytest.raises(UserError, match='holds no tokenizer.json'):
    tokenizers.load(tmp_path)
  with pytest.raises(UserError, match="unknown tokenizer 'bpe'"):
    tokenizers.build('bpe', ['x'])


# --- Sources -------------------------------------------------------------------


def test_classification_source_pads_truncates_and_counts():
  source = text_lib.ClassificationTextSource(
      [[5, 6, 7], [], [1, 2, 3, 4, 5, 6]], [1, 0, 1], max_length=4)
  batch = source.gather(np.array([0, 1, 2]))
  np.testing.assert_array_equal(
      batch['tokens'], [[5, 6, 7, 0], [0, 0, 0, 0], [1, 2, 3, 4]])
  # The empty text counts one pad token, so no mean divides by zero.
  assert batch['length'].tolist() == [3, 1, 4]
  assert batch['label'].tolist() == [1, 0, 1]
  assert {k: v.dtype for k, v in batch.items()} == {
      'tokens': np.int32, 'length': np.int32, 'label': np.int32}
  assert len(source) == 3 and source.num_truncated == 1
  assert source[2]['length'] == 4


def test_window_source_windows_are_shifted_by_one():
  tokens = np.arange(1, 21, dtype=np.int32)  # 20 tokens
  train = text_lib.WindowSource(tokens, context=4)
  assert len(train) == 16  # offsets 0..15, each with 4 + 1 tokens
  batch = train.gather(np.arange(len(train)))['tokens']
  assert batch.shape == (16, 5) and batch.dtype == np.int32
  np.testing.assert_array_equal(batch[:, 0], tokens[:16])
  # Window i's targets are window i+1's inputs.
  np.testing.assert_array_equal(batch[:-1, 1:], batch[1:, :-1])
  evals = text_lib.WindowSource(tokens, context=4, stride=4)
  assert len(evals) == 4  # starts 0, 4, 8, 12 (12 + 5 <= 20)
  targets = evals.gather(np.arange(4))['tokens'][:, 1:].reshape(-1)
  np.testing.assert_array_equal(targets, tokens[1:17])  # each target once
  assert len(text_lib.WindowSource(tokens[:4], context=4)) == 0
  with pytest.raises(IndexError):
    evals[4]  # pylint: disable=pointless-statement


def test_text_splits_classification(sst2):
  tok = tokenizers.build('word', sst2.texts('train'))
  start = time.time()
  splits = data.text_splits(sst2, tok, kind='classification', max_length=32)
  print(f'word-tokenize all of SST-2: {time.time() - start:.2f} s')
  assert {k: len(v) for k, v in splits.items()} == SST2_COUNTS
  batch = splits['validation'].gather(np.arange(8))
  assert batch['tokens'].shape == (8, 32) and batch['length'].min() >= 1
  assert tok.decode(batch['tokens'][0]) == sst2.texts('validation')[0]
  np.testing.assert_array_equal(batch['label'], sst2.splits['validation'].labels[:8])


def test_text_splits_lm(shakespeare):
  tok = tokenizers.build('char', shakespeare.texts('train'))
  start = time.time()
  splits = data.text_splits(shakespeare, tok, kind='lm', context=64)
  print(f'char-tokenize all of Shakespeare: {time.time() - start:.2f} s')
  assert len(splits['train']) == SHAKESPEARE_CHARS['train'] - 64
  assert len(splits['validation']) == (SHAKESPEARE_CHARS['validation'] - 1) // 64
  window = splits['train'].gather(np.array([10]))['tokens'][0]
  assert tok.decode(window) == shakespeare.texts('train')[0][10:75]


def test_text_splits_errors(sst2, shakespeare):
  char = tokenizers.build('char', sst2.texts('train'))
  with pytest.raises(UserError, match=r"validation split with the char tokenizer: "
                     r"3 character\(s\) .*'%'.*'à'.*'ö'"):
    data.text_splits(sst2, char, kind='classification', max_length=8)
  with pytest.raises(UserError, match='has no labels'):
    data.text_splits(shakespeare, char, kind='classification', max_length=8,
                     splits=['validation'])
  with pytest.raises(UserError, match=r'fewer than context\+1'):
    data.text_splits(shakespeare, tokenizers.build('word', shakespeare.texts('train')),
                     kind='lm', context=20000)
  with pytest.raises(UserError, match='positive data.max_length'):
    data.text_splits(sst2, char, kind='classification')


# --- Pipeline integration --------------------------------------------------------


def _take(it, n):
  return [next(it) for _ in range(n)]


@pytest.mark.parametrize('make', ['windows', 'classification'])
def test_train_iterator_is_deterministic_and_resumes(make):
  rng = np.random.default_rng(0)
  if make == 'windows':
    source = text_lib.WindowSource(np.arange(1, 301), context=8)  # 292
  else:
    ids = [list(rng.integers(1, 50, rng.integers(0, 12))) for _ in range(70)]
    source = text_lib.ClassificationTextSource(ids, rng.integers(0, 2, 70), 10)
  first = _take(data.train_iterator(source, global_batch_size=32, seed=3), 20)
  again = data.train_iterator(source, global_batch_size=32, seed=3)
  head = _take(again, 7)
  state = again.get_state()
  resumed = data.train_iterator(source, global_batch_size=32, seed=3)
  resumed.set_state(state)
  for a, b in zip(first, head + _take(resumed, 13)):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  other = next(data.train_iterator(source, global_batch_size=32, seed=4))
  assert not np.array_equal(other['tokens'], first[0]['tokens'])
  if make == 'windows':  # The first epoch starts every window exactly once.
    starts = np.concatenate([b['tokens'][:, 0] for b in first])[:len(source)]
    assert sorted(starts.tolist()) == list(range(1, len(source) + 1))

def test_eval_batches_cover_the_eval_windows_once():
  tokens = np.arange(1, 101, dtype=np.int32)
  source = text_lib.WindowSource(tokens, context=10, stride=10)  # 9 windows
  batches = list(data.eval_batches(source, global_batch_size=4))
  assert len(batches) == 3 and all(b['tokens'].shape == (4, 11) for b in batches)
  mask = np.concatenate([b['mask'] for b in batches])
  assert mask.tolist() == [1] * 9 + [0] * 3
  targets = np.concatenate([b['tokens'][:, 1:] for b in batches])[mask == 1]
  np.testing.assert_array_equal(targets.reshape(-1), tokens[1:91])



# --- Length buckets ------------------------------------------------------------------


def test_bucket_length_is_a_power_of_two_capped_by_max_length():
  got = [data.bucket_length(n, 64) for n in (0, 1, 8, 9, 16, 17, 33, 64)]
  assert got == [8, 8, 8, 16, 16, 32, 64, 64]
  assert data.bucket_length(33, 40) == 40


def _varied_source(n=200, max_length=48):
  rng = np.random.default_rng(7)
  ids = [list(rng.integers(1, 90, rng.integers(0, 45))) for _ in range(n)]
  # label = row index, so each batch names its rows.
  return text_lib.ClassificationTextSource(ids, np.arange(n), max_length)


def _check_cut(source, batch, rows):
  width = batch['tokens'].shape[1]
  assert width == data.bucket_length(source.lengths[rows].max(), source.max_length)
  np.testing.assert_array_equal(batch['tokens'], source.tokens[batch['label'], :width])
  assert not source.tokens[batch['label'], width:].any()  # only padding was cut


@pytest.mark.parametrize('sort_window', [0, 4])
def test_train_batches_are_cut_to_their_bucket_for_any_process_count(sort_window):
  source = _varied_source()
  make = lambda **kw: data.train_iterator(source, global_batch_size=16, seed=1,
                                          sort_window=sort_window, **kw)
  single = _take(make(), 40)  # 640 rows: three whole epochs of 200 and a part
  stream = np.concatenate([b['label'] for b in single])
  for e in range(3):
    assert sorted(stream[e * 200:(e + 1) * 200]) == list(range(200))
  for b in single:
    _check_cut(source, b, b['label'])
  halves = [_take(make(process_index=p, process_count=2), 40) for p in range(2)]
  for k, want in enumerate(single):
    for key in want:
      np.testing.assert_array_equal(
          np.concatenate([halves[0][k][key], halves[1][k][key]]), want[key])


def test_sort_window_shortens_batches():
  source = _varied_source()
  width = lambda w: np.mean([b['tokens'].shape[1] for b in _take(
      data.train_iterator(source, global_batch_size=16, seed=1, sort_window=w), 40)])
  assert width(8) < 0.8 * width(0)


def test_eval_batches_are_cut_to_their_bucket():
  source = _varied_source(n=37)
  batches = list(data.eval_batches(source, global_batch_size=16))
  mask = np.concatenate([b['mask'] for b in batches])
  assert mask.tolist() == [1] * 37 + [0] * 11
  for k, b in enumerate(batches):
    real = b['mask'] == 1
    assert b['label'][real].tolist() == list(range(16 * k, min(16 * k + 16, 37)))
    _check_cut(source, {key: v[real] for key, v in b.items()}, b['label'][real])
