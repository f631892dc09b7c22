"""Your own data, no code: image_folder and text_files, on tiny folders generated here.

Preparing, the classes, streamed token shards against the in-memory path, the
one-line errors for bad input, and (slow) `deepl train` / `predict` end to end.
"""

import json
import pathlib

import numpy as np
import pytest

from deepl import data
from deepl.data import text_files
from deepl.data import tokenizers
from deepl.errors import UserError
from tests import helpers
from tests.test_cli_errors import _assert_user_error

pytestmark = pytest.mark.usefixtures('fast_compile')  # short runs, compared among themselves

CLASSES = ('cat', 'dog', 'emu')


def _image(rng, label: int, size):
  """A picture whose colour says its class, with noise, so a model can learn it."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  base = np.zeros((size[1], size[0], 3), np.float32)
  base[..., label % 3] = 200
  pixels = np.clip(base + rng.normal(0, 30, base.shape), 0, 255).astype(np.uint8)
  return Image.fromarray(pixels)


def make_image_folder(root, *, train: int, test: int, classes=CLASSES, seed: int = 0):
  """root/{train,test}/<class>/ with `train`/`test` images per class: JPEGs and PNGs of
  several sizes. Returns root."""
  rng = np.random.default_rng(seed)
  root = pathlib.Path(root)
  for split, count in (('train', train), ('test', test)):
    for label, name in enumerate(classes):
      folder = root / split / name
      folder.mkdir(parents=True)
      for i in range(count):
        size = (int(rng.integers(20, 48)), int(rng.integers(20, 48)))
        suffix = '.png' if i % 3 == 0 else '.jpg'
        _image(rng, label, size).save(folder / f'{i:03d}{suffix}')
  return root


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
  return make_image_folder(tmp_path_factory.mktemp('images'), train=5, test=2)


def _get(root, tmp_path, **kwargs):
  return data.get_dataset('image_folder', data_dir=str(tmp_path / 'tfds'),
                          manual_dir=str(root), **kwargs)


# --- image_folder ------------------------------------------------------------


def test_image_folder_classes_and_encoded_records(folder, tmp_path):
  ds = _get(folder, tmp_path, image=data.ImagePreprocess(size=16))
  assert ds.label_names == CLASSES and ds.num_classes == 3
  assert ds.eval_split == 'test' and ds.image_shape == (16, 16, 3)
  train = ds.splits['train']
  assert len(train) == 15 and len(ds.splits['test']) == 6
  # Kept encoded, byte for byte, in sorted order: record 0 is cat/000.png.
  record = train._read([0])[0]  # pylint: disable=protected-access
  assert record['image'] == (folder / 'train' / 'cat' / '000.png').read_bytes()
  batch = train.gather(np.arange(15))
  assert batch['image'].shape == (15, 16, 16, 3) and batch['image'].dtype == np.uint8
  assert batch['label'].tolist() == [0] * 5 + [1] * 5 + [2] * 5
  # The colour survives decoding: the class's channel is the brightest.
  assert (batch['image'].mean(axis=(1, 2)).argmax(-1) == batch['label']).all()
  # Small enough: the encoded bytes in memory, decoded per batch all the same.
  in_memory = _get(folder, tmp_path, image=data.ImagePreprocess(size=16))
  np.testing.assert_array_equal(in_memory.splits['train'].gather(np.arange(15))['image'],
                                batch['image'])


def test_inception_crop_draws_from_the_key_and_eval_is_fixed(folder, tmp_path):
  image = data.ImagePreprocess(size=16, augment='inception_crop')
  ds = _get(folder, tmp_path, image=image)
  train, test = ds.splits['train'], ds.splits['test']
  assert train.random and not test.random
  one = train.gather([3, 4], keys=[(0, 1), (0, 2)])['image']
  np.testing.assert_array_equal(train.gather([3, 4], keys=[(0, 1), (0, 2)])['image'], one)
  assert not np.array_equal(train.gather([3, 4], keys=[(0, 5), (0, 6)])['image'], one)
  np.testing.assert_array_equal(test.gather([1])['image'], test.gather([1])['image'])


@pytest.mark.parametrize('layout,message', [
    ({}, 'has no split folders'),
    ({'train/cat/a.jpg': 'good', 'test/cat/b.jpg': 'good', 'train/dog/readme.txt': 'x'},
     'has no images'),
    ({'train/a.jpg': 'good', 'test/cat/b.jpg': 'good'}, 'holds images directly'),
    ({'train/cat/a.jpg': 'good'}, 'it needs train/<class>'),
    ({'train/cat/a.jpg': 'good', 'test/cow/b.jpg': 'good'}, 'a class that train/ does not have'),
])
def test_image_folder_layout_errors(tmp_path, layout, message):
  root = tmp_path / 'data'
  root.mkdir()
  rng = np.random.default_rng(0)
  for name, kind in layout.items():
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == 'good':
      _image(rng, 0, (8, 8)).save(path)
    else:
      path.write_text(kind)
  with pytest.raises(UserError, match=message):
    _get(root, tmp_path)


def test_unreadable_images_are_skipped_with_a_count_or_fail(folder, tmp_path, capsys):
  root = tmp_path / 'copy'
  for path in folder.rglob('*.*'):
    target = root / path.relative_to(folder)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(path.read_bytes())
  (root / 'train' / 'dog' / 'broken.jpg').write_bytes(b'\xff\xd8 not a jpeg')
  with pytest.raises(UserError, match=r'1 of 16 train images cannot be decoded'):
    _get(root, tmp_path / 'strict')
  ds = _get(root, tmp_path / 'lenient', max_unreadable=0.1)
  assert len(ds.splits['train']) == 15
  assert 'skipped 1 unreadable train image(s) of 16' in capsys.readouterr().err


def test_image_folder_needs_a_manual_dir():
  with pytest.raises(UserError, match='needs data.manual_dir'):
    data.get_dataset('image_folder')


def _tar(path, members: dict):
  """A tar at `path` of name -> bytes."""
  import io  # pylint: disable=g-import-not-at-top
  import tarfile  # pylint: disable=g-import-not-at-top
  with tarfile.open(path, 'w') as tar:
    for name, content in members.items():
      info = tarfile.TarInfo(name)
      info.size = len(content)
      tar.addfile(info, io.BytesIO(content))


def test_imagenet2012_from_its_manual_tars(tmp_path):
  from deepl.data.builders import imagenet2012  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)

  def jpeg(label):
    import io  # pylint: disable=g-import-not-at-top
    out = io.BytesIO()
    _image(rng, label, (12, 10)).save(out, format='JPEG')
    return out.getvalue()

  synsets = imagenet2012.synsets()
  root = tmp_path / 'manual'
  root.mkdir()
  inner = {}
  for synset in (synsets[0], synsets[7]):
    _tar(tmp_path / f'{synset}.tar', {f'{synset}_{i}.JPEG': jpeg(i) for i in range(2)})
    inner[f'{synset}.tar'] = (tmp_path / f'{synset}.tar').read_bytes()
  _tar(root / imagenet2012.TRAIN_TAR, inner)
  _tar(root / imagenet2012.VAL_TAR,
       {f'ILSVRC2012_val_{n:08d}.JPEG': jpeg(n) for n in (1, 2, 3)})
  ds = data.get_dataset('imagenet2012', data_dir=str(tmp_path / 'tfds'), manual_dir=str(root),
                        image=data.ImagePreprocess(size=8))
  assert ds.num_classes == 1000 and ds.label_names[:2] == ('n01440764', 'n01443537')
  assert ds.eval_split == 'validation'
  assert ds.splits['train'].gather(np.arange(4))['label'].tolist() == [0, 0, 7, 7]
  # TFDS's validation labels: ILSVRC2012_val_00000001 is n01751748, ...
  want = [synsets.index(s) for s in imagenet2012.validation_synsets()[:3]]
  batch = ds.splits['validation'].gather(np.arange(3))
  assert batch['label'].tolist() == want and batch['image'].shape == (3, 8, 8, 3)
  (tmp_path / 'empty').mkdir()
  with pytest.raises(UserError, match='has no ILSVRC2012_img_train.tar'):
    data.get_dataset('imagenet2012', data_dir=str(tmp_path / 'other'),
                     manual_dir=str(tmp_path / 'empty'))


# --- text_files --------------------------------------------------------------

TEXT = ('First Citizen:\nBefore we proceed any further, hear me speak.\n\n'
        'All:\nSpeak, speak.\n') * 20


def make_corpus(root):
  """train/: two .txt files (one without a final newline) and a .jsonl; validation/: one .txt."""
  root = pathlib.Path(root)
  (root / 'train').mkdir(parents=True)
  (root / 'validation').mkdir()
  (root / 'train' / 'a.txt').write_text(TEXT)
  (root / 'train' / 'b.txt').write_text(TEXT[:500].rstrip('\n'))
  rows = [{'text': TEXT[i:i + 90], 'id': i} for i in range(0, 900, 90)]
  (root / 'train' / 'c.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
  (root / 'validation' / 'v.txt').write_text(TEXT[:700])
  return root


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
  return make_corpus(tmp_path_factory.mktemp('corpus'))


def test_text_files_streamed_windows_are_the_in_memory_ones(corpus, tmp_path):
  in_memory = data.get_dataset('text_files', manual_dir=str(corpus), data_dir=str(tmp_path))
  streamed = data.get_dataset('text_files', manual_dir=str(corpus), data_dir=str(tmp_path),
                              in_memory_max_mb=0)
  assert isinstance(in_memory.splits['train'], data.TextSplit)
  assert isinstance(streamed.splits['train'], data.TextFiles)
  # Documents in file order, each ending in a newline: a.txt, b.txt (given one), c.jsonl's rows.
  rows = ''.join(TEXT[i:i + 90] + ('' if TEXT[i:i + 90].endswith('\n') else '\n')
                 for i in range(0, 900, 90))
  assert in_memory.splits['train'].texts == [TEXT + TEXT[:500].rstrip('\n') + '\n' + rows]
  tok = tokenizers.build('char', in_memory.texts('train'))
  want = data.text_splits(in_memory, tok, kind='lm', context=16)
  got = data.text_splits(streamed, tok, kind='lm', context=16)
  for split in ('train', 'validation'):
    assert isinstance(got[split], data.TokenWindows) and len(got[split]) == len(want[split])
    rows = np.random.default_rng(0).integers(0, len(want[split]), 50)
    np.testing.assert_array_equal(got[split].gather(rows)['tokens'],
                                  want[split].gather(rows)['tokens'])
  # Tokenized once, as uint16; the second time reads the shards back.
  shards = sorted(tmp_path.glob('text_files/*/*/train-*.bin'))
  assert len(shards) == 1 and shards[0].stat().st_size == 2 * len(want['train'].token_ids)
  again = data.text_splits(streamed, tok, kind='lm', context=16)['train']
  assert sorted(tmp_path.glob('text_files/*/*/train-*.bin')) == shards and len(again)


def test_token_shards_hold_the_stream_and_windows_stay_inside_one(corpus, tmp_path):
  files = text_files.TextFiles(tuple(text_files.find_splits(corpus)['train']), 1 << 20)
  tok = tokenizers.build('char', files.texts)
  index = text_files.tokenize(files, tok, 'train', tmp_path, shard_tokens=100)
  assert index['dtype'] == 'uint16' and len(index['shards']) > 5
  assert [s['tokens'] for s in index['shards'][:-1]] == [100] * (len(index['shards']) - 1)
  flat = np.concatenate([np.fromfile(tmp_path / s['file'], np.uint16) for s in index['shards']])
  np.testing.assert_array_equal(flat, tok.encode_array(text_files.read_whole(files.files)))
  windows = text_files.TokenWindows(tmp_path, index, context=9, stride=3)
  assert len(windows) == sum((s['tokens'] - 10) // 3 + 1 for s in index['shards'])
  got = windows.gather(np.arange(len(windows)))['tokens']
  joined = {tuple(flat[i:i + 10]) for i in range(len(flat) - 9)}
  assert all(tuple(row) in joined for row in got)


def test_the_tokenizer_sample_is_bounded_and_spread(corpus, monkeypatch):
  files = text_files.TextFiles(tuple(text_files.find_splits(corpus)['train']), 1 << 20)
  # All of it: a.txt, b.txt (read as its whole lines, then its last), c.jsonl's 10 rows.
  assert len(files.texts) == 13 and ''.join(files.texts) == text_files.read_whole(files.files)
  monkeypatch.setattr(text_files, 'MIN_SAMPLE_PER_FILE', 1)
  small = text_files.TextFiles(files.files, 300)
  # 100 bytes of each file, whole lines only: a.txt's and b.txt's first lines, and no
  # row of c.jsonl (each is longer).
  cut = TEXT[:100].rfind('\n') + 1
  assert small.texts == [TEXT[:cut]] * 2
  assert small.fingerprint() == files.fingerprint()


@pytest.mark.parametrize('name,content,message', [
    ('train/bad.txt', b'ok\n\xff\xfe broken', r'bad.txt is not UTF-8 text \(byte 3\)'),
    ('train/bad.jsonl', b'{"text": "a"}\n{"body": "b"}\n', r'bad.jsonl line 2 has no "text"'),
    ('train/bad.jsonl', b'{"text": "a"}\nnot json\n', r'bad.jsonl line 2 is not JSON'),
])
def test_text_files_errors(corpus, tmp_path, name, content, message):
  root = tmp_path / 'c'
  make_corpus(root)
  (root / name).write_bytes(content)
  with pytest.raises(UserError, match=message):
    data.get_dataset('text_files', manual_dir=str(root), data_dir=str(tmp_path))


def test_text_files_layout_errors(tmp_path):
  with pytest.raises(UserError, match='needs data.manual_dir'):
    data.get_dataset('text_files')
  (tmp_path / 'train').mkdir()
  with pytest.raises(UserError, match=r'train has no .txt or .jsonl files'):
    data.get_dataset('text_files', manual_dir=str(tmp_path))


# --- End to end --------------------------------------------------------------


@pytest.mark.slow
def test_image_folder_trains_and_predicts_with_workers(tmp_path):
  root = make_image_folder(tmp_path / 'images', train=16, test=4)
  workdir = tmp_path / 'run'
  result = helpers.deepl_here(
      f'--workdir={workdir}', f'--config.data.data_dir={tmp_path}/tfds',
      '--config.data.name=image_folder', f'--config.data.manual_dir={root}',
      '--config.data.image_size=16', '--config.data.augment=inception_crop',
      '--config.data.normalize=imagenet', '--config.data.workers=2',
      '--config.train.batch_size=12', '--config.train.num_steps=40',
      '--config.eval.every_steps=40', '--config.checkpoint.every_steps=40',
      '--config.optim.warmup_steps=5', '--config.optim.lr=0.02')
  assert result.returncode == 0, result.stderr
  assert json.loads((workdir / 'classes.json').read_text()) == list(CLASSES)
  assert 'test accuracy 100.00%' in result.stdout
  predicted = helpers.deepl_here(f'--workdir={workdir}', f'--input={root}/test/emu/001.jpg',
                            command='predict')
  assert predicted.returncode == 0, predicted.stderr
  assert predicted.stdout.startswith('emu\t')


@pytest.mark.slow
def test_text_files_trains_a_language_model_from_shards(corpus, tmp_path):
  workdir = tmp_path / 'run'
  result = helpers.deepl_here(
      f'--workdir={workdir}', f'--config.data.data_dir={tmp_path}/tfds',
      f'--config={helpers.EXPERIMENTS}/shakespeare_lstm.py', '--config.data.name=text_files',
      f'--config.data.manual_dir={corpus}', '--config.data.in_memory_max_mb=0',
      '--config.model.embed_dim=16', '--config.model.hidden_dim=32',
      '--config.model.num_layers=1', '--config.data.context=16',
      '--config.train.num_steps=20', '--config.eval.every_steps=20',
      '--config.checkpoint.every_steps=20', '--config.optim.warmup_steps=5')
  assert result.returncode == 0, result.stderr
  assert (workdir / 'tokenizer' / 'tokenizer.json').exists()
  assert list((tmp_path / 'tfds').glob('text_files/*/*/train.json'))


def test_a_bad_image_folder_is_one_line_from_the_cli(tmp_path):
  (tmp_path / 'empty').mkdir()
  result = helpers.deepl_here(f'--workdir={tmp_path}/run', f'--config.data.data_dir={tmp_path}/tfds',
                         '--config.data.name=image_folder',
                         f'--config.data.manual_dir={tmp_path}/empty')
  _assert_user_error(result, 'has no split folders')


def _imagenet_config(arg=None):
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location(
      'imagenet_resnet50', helpers.EXPERIMENTS / 'imagenet_resnet50.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def test_the_imagenet_recipe():
  from deepl import config as config_lib  # pylint: disable=g-import-not-at-top
  for arg, name in ((None, 'imagenet2012'), ('folders', 'image_folder')):
    c = _imagenet_config(arg)
    config_lib.validate(c)
    assert c.data.name == name and c.model.name == 'resnet50'
  assert (c.data.augment, c.data.normalize, c.data.image_size) == ('inception_crop', 'imagenet',
                                                                    224)
  assert c.task_options.label_smoothing == 0.1 and c.optim.nesterov and c.optim.lr == 0.4
  assert c.optim.schedule == 'warmup_cosine' and c.train.num_steps == 112_602
  assert c.optim.warmup_steps == 6_255


@pytest.mark.slow
def test_the_imagenet_recipe_runs_on_a_tiny_folder(tmp_path):
  root = make_image_folder(tmp_path / 'images', train=4, test=2)
  result = helpers.deepl_here(
      f'--config={helpers.EXPERIMENTS}/imagenet_resnet50.py:folders', f'--workdir={tmp_path}/run',
      f'--config.data.data_dir={tmp_path}/tfds', f'--config.data.manual_dir={root}',
      '--config.model.name=resnet18',
      '--config.data.image_size=32', '--config.train.batch_size=6',
      '--config.train.num_steps=3', '--config.optim.warmup_steps=1',
      '--config.eval.every_steps=3', '--config.checkpoint.every_steps=3',
      '--config.eval.batch_size=6', '--config.train.compute_dtype=float32', timeout=600)
  assert result.returncode == 0, result.stderr
  assert 'deepl: done: test accuracy' in result.stdout
