"""`deepl plot`: learning curves of one run or several, as a PNG.

  deepl plot --workdir=runs/digits_cnn --out=curves.png
  deepl plot --workdir=runs/a,runs/b --out=compare.png

From each run's metrics.jsonl: the train and eval loss, the accuracy where
the task has one, and the speed (tokens/s where logged, else examples/s),
against the step; one colour per run, train solid and eval dashed. A loss
that spans more than a decade is drawn on a log scale.
"""

import os

from deepl import metrics
from deepl import workdir as workdir_lib
from deepl.errors import UserError

READS_A_RUN = '<a run, or several: --workdir=runs/a,runs/b>'


def run(config, workdir: str, flags) -> None:
  del config, workdir  # several runs: the flag's own list
  out = os.path.expanduser(flags.out or 'curves.png')
  plot_runs([w.strip() for w in flags.workdir.split(',') if w.strip()], out)
  print(f'deepl: wrote {out}')


def plot_runs(workdirs: list[str], out: str) -> None:
  if not out.lower().endswith('.png'):
    raise UserError(f'--out={out}: name a .png file')
  folder = os.path.dirname(os.path.abspath(out))
  if not os.path.isdir(folder):
    raise UserError(f'--out={out}: folder {folder} does not exist')
  runs = {}
  for workdir, name in zip(workdirs, _names(workdirs)):
    workdir = os.path.expanduser(workdir)
    rows = metrics.read_rows(workdir) if workdir_lib.path(workdir).is_dir() else None
    if not rows:
      raise UserError(f'{workdir} holds no logged rows (metrics.jsonl): pass the --workdir '
                      'of a deepl train run')
    runs[name] = rows
  _draw(runs, out)


def _names(workdirs) -> list[str]:
  """Each run's folder name, with its parent's where two share a name."""
  names = [os.path.basename(os.path.normpath(w)) for w in workdirs]
  return [os.path.join(os.path.basename(os.path.dirname(os.path.normpath(w))), n)
          if names.count(n) > 1 else n for w, n in zip(workdirs, names)]


def _series(rows, split_is_train: bool, key: str):
  points = [(r['step'], r[key]) for r in rows
            if (r['split'] == 'train') == split_is_train and key in r]
  return [p[0] for p in points], [p[1] for p in points]


def _draw(runs: dict, out: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')  # files only: no display needed
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  from matplotlib.lines import Line2D  # pylint: disable=g-import-not-at-top

  all_rows = [r for rows in runs.values() for r in rows]
  speed = 'tokens_per_sec' if any(r.get('tokens_per_sec') for r in all_rows) else \
      'examples_per_sec'
  panels = [('loss', 'loss')]
  if any('accuracy' in r for r in all_rows):
    panels.append(('accuracy', 'accuracy (%)'))
  if any(r.get(speed) for r in all_rows):
    panels.append((speed, speed.replace('_per_sec', '/s')))
  fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False)
  colors = plt.rcParams['axes.prop_cycle'].by_key()['color']
  eval_splits = sorted({r['split'] for r in all_rows if r['split'] != 'train'})
  for ax, (key, label) in zip(axes[0], panels):
    values = []
    for index, rows in enumerate(runs.values()):
      color = colors[index % len(colors)]
      scale = 100.0 if key == 'accuracy' else 1.0
      for train in (True, False) if key != speed else (True,):
        steps, ys = _series(rows, train, key)
        ys = [scale * y for y in ys]
        values += ys
        ax.plot(steps, ys, color=color, linestyle='-' if train else '--',
                marker=None if train else 'o', markersize=3, linewidth=1.4)
    positive = [v for v in values if v > 0]
    if key == 'loss' and positive and len(positive) == len(values) and \
        max(positive) / min(positive) > 10:
      ax.set_yscale('log')  # the loss spans decades
    ax.set_xlabel('step')
    ax.set_ylabel(label)
    ax.set_title(label)
    ax.grid(True, alpha=0.3)
  handles = [Line2D([], [], color=colors[i % len(colors)], linewidth=2, label=name)
             for i, name in enumerate(runs)]
  handles.append(Line2D([], [], color='gray', linestyle='-', label='train'))
  handles += [Line2D([], [], color='gray', linestyle='--', marker='o', markersize=3,
                     label=split) for split in eval_splits]
  axes[0][0].legend(handles=handles, fontsize='small')
  fig.tight_layout()
  fig.savefig(out, dpi=100)
  plt.close(fig)
