"""Input at scale, measured on generated data: decode throughput, peak memory, input time per step.

  python tools/data_throughput.py decode      [--images=20000 --batches=25 --workers=0,1,2]
  python tools/data_throughput.py rss_images  [--images=20000 --steps=30]
  python tools/data_throughput.py rss_text    [--text_mb=300 --steps=30]
  python tools/data_throughput.py input_ms    --shared=../shared/data [--steps=300]

decode      generates `images` JPEGs (random sizes 300-500 x 250-400 px, smooth
            colour fields plus noise, quality 90: ~ImageNet's size) into a
            temporary image folder, prepares it, and times the ImageNet train
            pipeline alone (Inception crop, flip, 224 px, mean/std) for each
            worker count, alternating, in images/s.
rss_images  peak resident memory (the `deepl train` process plus its
            workers, sampled from /proc) of a few steps on that folder,
            streamed (data.in_memory_max_mb=0) against holding the encoded
            bytes in memory; and the decoded size np.stack would need.
rss_text    the same for a generated ~`text_mb` MB corpus (Zipf-distributed
            words) through text_files with a char LSTM: token shards
            memory-mapped against the in-memory path (whole text, int32 ids),
            and streamed on a 2 MB corpus (what does not depend on the data).
input_ms    input_ms (making and placing a batch) and the step time of
            mnist_cnn and cifar10_resnet20 from the offline files, with 0
            and 2 workers.

Everything generated lives in a temporary folder, removed at the end
(--keep=DIR keeps it there instead). Figures: docs/data.md.
"""

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's deepl, also in the `deepl train` it starts
CLASSES = 10


# --- Generated data ------------------------------------------------------------


def _write_images(args) -> int:
  """Writes images [start, stop) of a folder; a worker process's share."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  root, split, start, stop = args
  rng = np.random.default_rng(start)
  for i in range(start, stop):
    label = i % CLASSES
    width, height = int(rng.integers(300, 501)), int(rng.integers(250, 401))
    # A smooth colour field (upsampled 8x8 noise) plus pixel noise: JPEG sizes and
    # decode costs near real photos', unlike flat colour or pure noise.
    small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    field = np.asarray(Image.fromarray(small).resize((width, height), Image.BILINEAR))
    pixels = np.clip(field + rng.normal(0, 12, field.shape), 0, 255).astype(np.uint8)
    folder = pathlib.Path(root) / split / f'class{label:02d}'
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(folder / f'{i:06d}.jpg', quality=90)
  return stop - start


def make_image_folder(root: pathlib.Path, count: int, test: int = 500) -> pathlib.Path:
  """root/{train,test}/class<k>/*.jpg; a folder kept from an earlier run (--keep) is reused."""
  if (root / 'done').exists():
    return root
  jobs = []
  for split, n in (('train', count), ('test', test)):
    jobs += [(str(root), split, s, min(s + 1000, n)) for s in range(0, n, 1000)]
  ctx = multiprocessing.get_context('spawn')
  with concurrent.futures.ProcessPoolExecutor(os.cpu_count(), mp_context=ctx) as pool:
    assert sum(pool.map(_write_images, jobs)) == count + test
  (root / 'done').write_text(str(count))
  return root


def make_corpus(root: pathlib.Path, megabytes: float, files: int = 10) -> pathlib.Path:
  """train/ of `files` .txt files summing to ~megabytes, validation/ one of 1 MB."""
  if (root / 'done').exists():
    return root
  rng = np.random.default_rng(0)
  letters = np.array(list('abcdefghijklmnopqrstuvwxyz'))
  words = [''.join(rng.choice(letters, rng.integers(1, 10))) for _ in range(5000)]
  p = 1.0 / np.arange(1, len(words) + 1)
  p /= p.sum()

  def text(nbytes: int) -> str:
    out, size = [], 0
    while size < nbytes:
      line = ' '.join(np.array(words)[rng.choice(len(words), 12, p=p)]) + '.\n'
      out.append(line.capitalize())
      size += len(line)
    return ''.join(out)

  block = text(4 << 20)  # 4 MB of sentences, reused with a shift: generating is the slow part
  for split, n, size in (('train', files, megabytes / files), ('validation', 1, 1)):
    (root / split).mkdir(parents=True, exist_ok=True)
    for f in range(n):
      with open(root / split / f'part{f:03d}.txt', 'w') as out:
        written, shift = 0, f * 7919
        while written < size * 2**20:
          piece = block[shift % len(block):] + block[:shift % len(block)]
          out.write(piece)
          written += len(piece)
          shift += 104729
  (root / 'done').write_text(str(megabytes))
  return root


# --- Measurements -----------------------------------------------------------------


def decode(args, tmp: pathlib.Path) -> dict:
  from absl import flags  # pylint: disable=g-import-not-at-top
  from deepl import data  # pylint: disable=g-import-not-at-top
  flags.FLAGS.mark_as_parsed()
  t = time.time()
  folder = make_image_folder(tmp / 'images', args.images)
  generated = time.time() - t
  size = sum(p.stat().st_size for p in (folder / 'train').rglob('*.jpg'))
  t = time.time()
  image = data.ImagePreprocess(size=224, augment='inception_crop', normalize='imagenet')
  ds = data.get_dataset('image_folder', data_dir=str(tmp / 'tfds'), manual_dir=str(folder),
                        image=image, in_memory_max_mb=0)
  prepared = time.time() - t
  print(f'generated {args.images} JPEGs ({size / 2**20:.0f} MB) in {generated:.0f} s, '
        f'prepared in {prepared:.0f} s', flush=True)
  rates = {w: [] for w in args.workers}
  for round_ in range(args.rounds):
    for workers in args.workers:
      it = data.train_iterator(ds.splits['train'], global_batch_size=args.batch,
                               seed=round_, workers=workers)
      next(it)  # workers started, first batch made
      t = time.perf_counter()
      for _ in range(args.batches):
        next(it)
      rates[workers].append(args.batches * args.batch / (time.perf_counter() - t))
      if workers:
        it.close()
      print(f'round {round_}: {workers} workers: {rates[workers][-1]:.0f} images/s', flush=True)
  return {'images': args.images, 'megabytes': round(size / 2**20),
          'images_per_sec': {w: round(float(np.median(r)), 1) for w, r in rates.items()}}


class _PeakRSS:
  """The peak summed RSS of a process and its descendants, sampled from /proc every 0.1 s."""

  def __init__(self, pid: int):
    self.pid, self.peak, self.peak_main = pid, 0, 0
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True)
    self._thread.start()

  def _tree(self):
    parents = {}
    for entry in os.listdir('/proc'):
      if entry.isdigit():
        try:
          with open(f'/proc/{entry}/stat') as f:
            parents[int(entry)] = int(f.read().rsplit(')', 1)[1].split()[1])
        except OSError:
          pass
    tree, frontier = {self.pid}, [self.pid]
    while frontier:
      frontier = [p for p, parent in parents.items() if parent in frontier and p not in tree]
      tree.update(frontier)
    return tree

  @staticmethod
  def _rss(pid: int) -> int:
    try:
      with open(f'/proc/{pid}/status') as f:
        for line in f:
          if line.startswith('VmRSS:'):
            return int(line.split()[1]) * 1024
    except OSError:
      pass
    return 0

  def _run(self):
    while not self._stop.is_set():
      total = sum(self._rss(p) for p in self._tree())
      self.peak = max(self.peak, total)
      self.peak_main = max(self.peak_main, self._rss(self.pid))
      time.sleep(0.1)

  def stop(self):
    self._stop.set()
    self._thread.join()


def deepl_train(workdir, *flags_) -> dict:
  """Runs `deepl train` in a fresh `workdir`; returns {peak_mb, peak_main_mb, wall_s}."""
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS='cpu')
  shutil.rmtree(workdir, ignore_errors=True)  # a fresh run, not a resume of a kept one
  t = time.time()
  proc = subprocess.Popen([sys.executable, '-m', 'deepl.cli.main', 'train',
                           f'--workdir={workdir}', *flags_], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  sampler = _PeakRSS(proc.pid)
  out, err = proc.communicate()
  sampler.stop()
  if proc.returncode:
    raise SystemExit(f'deepl train failed:\n{err[-3000:]}')
  del out
  return {'peak_mb': round(sampler.peak / 2**20), 'peak_main_mb': round(sampler.peak_main / 2**20),
          'wall_s': round(time.time() - t, 1)}


def rss_images(args, tmp: pathlib.Path) -> dict:
  folder = make_image_folder(tmp / 'images', args.images)
  common = [f'--config.data.data_dir={tmp}/tfds', '--config.data.name=image_folder',
            f'--config.data.manual_dir={folder}', '--config.data.image_size=64',
            '--config.data.augment=inception_crop', '--config.data.workers=1',
            f'--config.train.num_steps={args.steps}', '--config.train.batch_size=64',
            '--config.eval.every_steps=1000000', '--config.checkpoint.every_steps=1000000',
            '--config.eval.batch_size=500']
  out = {}
  # Prepare first, so both runs time and measure training, not preparing.
  deepl_train(tmp / 'images_prepare', *common, '--config.train.num_steps=1')
  for name, threshold in (('streamed', 0), ('in_memory', 100000)):
    out[name] = deepl_train(tmp / f'images_{name}', *common,
                            f'--config.data.in_memory_max_mb={threshold}')
    print(name, out[name], flush=True)
  out['decoded_mb_np_stack'] = round((args.images + 500) * 224 * 224 * 3 / 2**20)
  return out


def rss_text(args, tmp: pathlib.Path) -> dict:
  corpus = make_corpus(tmp / 'corpus', args.text_mb)
  size = sum(p.stat().st_size for p in (corpus / 'train').iterdir())
  common = [f'--config={ROOT}/experiments/shakespeare_lstm.py', '--config.data.name=text_files',
            f'--config.data.data_dir={tmp}/tfds', f'--config.data.manual_dir={corpus}',
            '--config.model.embed_dim=16', '--config.model.hidden_dim=64',
            '--config.model.num_layers=1', '--config.data.context=64',
            f'--config.train.num_steps={args.steps}', '--config.eval.every_steps=1000000',
            '--config.checkpoint.every_steps=1000000', '--config.train.batch_size=32']
  out = {'train_mb': round(size / 2**20)}
  for name, threshold in (('streamed', 0), ('in_memory', 100000)):
    out[name] = deepl_train(tmp / f'text_{name}', *common,
                            f'--config.data.in_memory_max_mb={threshold}')
    print(name, out[name], flush=True)
  # The same run on a 2 MB corpus: what does not depend on the data.
  tiny = make_corpus(tmp / 'corpus_tiny', 2, files=1)
  out['tiny_2mb_streamed'] = deepl_train(tmp / 'text_tiny', *common,
                                         f'--config.data.manual_dir={tiny}',
                                         '--config.data.in_memory_max_mb=0')
  return out


def input_ms(args, tmp: pathlib.Path) -> dict:
  runs = {'mnist_cnn': ('mnist', args.steps), 'cifar10_resnet20': ('cifar10_subset',
                                                                   args.steps // 5)}
  out = {}
  for experiment, (folder, steps) in runs.items():
    for workers in (0, 2):
      workdir = tmp / f'{experiment}_{workers}'
      deepl_train(workdir, f'--config={ROOT}/experiments/{experiment}.py',
                  f'--config.data.data_dir={tmp}/tfds',
                  f'--config.data.manual_dir={args.shared}/{folder}',
                  f'--config.data.workers={workers}', f'--config.train.num_steps={steps}',
                  f'--config.train.log_every_steps={steps // 5}',
                  '--config.eval.every_steps=1000000', '--config.checkpoint.every_steps=1000000')
      rows = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
      rows = [r for r in rows if r['split'] == 'train'][1:]  # the first window holds compiling
      step_ms = float(np.mean([1e3 / r['steps_per_sec'] for r in rows]))
      out[f'{experiment}, {workers} workers'] = {
          'input_ms': round(float(np.mean([r['input_ms'] for r in rows])), 2),
          'step_ms': round(step_ms, 1)}
      print(experiment, workers, out[f'{experiment}, {workers} workers'], flush=True)
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('what', choices=('decode', 'rss_images', 'rss_text', 'input_ms'))
  parser.add_argument('--images', type=int, default=20000)
  parser.add_argument('--batch', type=int, default=128)
  parser.add_argument('--batches', type=int, default=25)
  parser.add_argument('--rounds', type=int, default=2)
  parser.add_argument('--workers', default='0,1,2')
  parser.add_argument('--steps', type=int, default=30)
  parser.add_argument('--text_mb', type=float, default=300)
  parser.add_argument('--shared', default=str(ROOT.parent / 'shared' / 'data'))
  parser.add_argument('--keep', help='a folder to keep the generated data in')
  args = parser.parse_args()
  args.workers = [int(w) for w in args.workers.split(',')]
  tmp = pathlib.Path(args.keep or tempfile.mkdtemp(prefix='deepl_data_'))
  tmp.mkdir(parents=True, exist_ok=True)
  try:
    result = globals()[args.what](args, tmp)
  finally:
    if not args.keep:
      shutil.rmtree(tmp, ignore_errors=True)
  print(json.dumps({args.what: result}))


if __name__ == '__main__':
  main()
