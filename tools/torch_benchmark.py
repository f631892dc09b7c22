"""JAX against PyTorch eager, side by side, on experiments/benchmarks.py's models.

  pip install -e '.[bench]'     # PyTorch, for this tool only
  python tools/torch_benchmark.py [--models=cnn,resnet20,lstm,gpt_mini]
      [--kernels=cpu,xla --steps=10 --windows=3 --warmup=2 --window_warmup=1
       --torch_threads=0 --baseline=PATH --json=side_by_side.json]

For each model: the JAX train step exactly as tools/benchmark.py builds it
(the real `deepl train` step on synthetic batches), once per layer set in
--kernels (deepl's CPU kernels, flax's stock layers), and its PyTorch twin
here: the same layers and shapes, the same parameter count (printed and
asserted), the same batch, loss, accuracy sums and SGD (momentum 0.9, lr 0.1).
Windows of `steps` steps alternate (each JAX step, then PyTorch) so all see
the same machine load; the table gives the median steps/s of each and the
ratio JAX/PyTorch, and, as this machine's speed drifts, each JAX window's
ratio to the PyTorch window after it: their range, and in how many JAX was
ahead.
Every window starts with `window_warmup` untimed steps, in both frameworks:
the first step after the other framework's window pays for what the pause
undid, not for the model. Measured here for GPT-mini, one step after 1-3 s
idle took 1.0-1.7 s against ~0.65 s, most of it system time re-faulting
XLA's step buffers: this VM's kernel hands free pages back to the host ~2 s
after they are freed, and XLA:CPU frees its temporaries after every step.
Training runs step after step and does not pay it.
Each step has a process of its own, as a user's run would: each JAX step
runs in a child process (this script with --jax_worker), compiled as `deepl
train` compiles it (the layer set's XLA options, deepl/kernels). Huge pages
for every process's big buffers (XLA's, and PyTorch's too) are the
environment's: start the tool with GLIBC_TUNABLES=glibc.malloc.hugetlb=1
(glibc 2.35+, transparent huge pages in `madvise` mode) and the workers
inherit it; the header line says which setting ran.

--baseline=PATH adds the JAX step of another checkout of deepl (e.g. `git
worktree add /tmp/base REV`; its own tools/torch_benchmark.py --jax_worker, its
default layer set) to the same alternation, as the row `baseline`, and prints
each layer set's window-by-window ratio to it: whether a change lost speed,
on a machine whose speed drifts more than the change.

Two places where the twins differ in form but not in math: PyTorch's LSTM
carries a second bias (b_hh) that only ever appears summed with b_ih; it is
frozen at zero here, so the trainable parameters are the same. And images go
in NCHW, PyTorch's native layout.
"""

import json
import os
import statistics
import subprocess
import sys
import time

from absl import flags
import jax
import numpy as np

import benchmark  # tools/benchmark.py: the JAX harness and the shared flags
from deepl import config as config_lib
from deepl.cli import main as cli

try:
  import torch
  from torch import nn
  import torch.nn.functional as F
except ImportError:
  cli.fail("PyTorch is not installed: pip install -e '.[bench]' (or pip install torch)")

VARIANTS = ('cnn', 'resnet20', 'lstm', 'gpt_mini')
flags.DEFINE_list('models', list(VARIANTS), 'Which of experiments/benchmarks.py\'s variants.')
flags.DEFINE_list('kernels', ['cpu', 'xla'], 'The JAX layer sets to time (config.kernels), each '
                  'against the same PyTorch windows.')
# On a machine something else keeps busy, PyTorch's OpenMP threads wait on each
# other at every op (measured here: the CNN at 3.5-8.9 steps/s with 2 threads,
# 11-12 with 1, while another job held a core): pass the cores really free.
flags.DEFINE_integer('torch_threads', 0, 'torch.set_num_threads (0: PyTorch\'s default).')
flags.DEFINE_integer('window_warmup', 1, 'Untimed steps at the start of every window, both '
                     'frameworks (see above).')
flags.DEFINE_string('baseline', None, 'Another checkout of deepl whose JAX step joins the '
                    'alternation (row "baseline"): was speed lost against it?')
flags.DEFINE_bool('jax_worker', False, 'Internal: the JAX side\'s own process (see jax_worker).')
FLAGS = flags.FLAGS
# sibling_config looks next to a file: any path inside experiments/ will do.
EXPERIMENTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'experiments',
                           'benchmarks.py')


# ---------------------------------------------------------------- the twins


class CNN(nn.Module):
  """flax-examples MNIST CNN: conv32 avgpool conv64 avgpool dense256 dense10."""

  def __init__(self, num_classes=10):
    super().__init__()
    self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
    self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
    self.dense1 = nn.Linear(7 * 7 * 64, 256)
    self.dense2 = nn.Linear(256, num_classes)

  def forward(self, x):
    x = F.avg_pool2d(F.relu(self.conv1(x)), 2)
    x = F.avg_pool2d(F.relu(self.conv2(x)), 2)
    return self.dense2(F.relu(self.dense1(x.flatten(1))))


class BasicBlock(nn.Module):
  def __init__(self, cin, width, stride):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(width)
    self.proj = None
    if stride != 1 or cin != width:  # option B: 1x1 conv + BN, as deepl's
      self.proj = nn.Sequential(nn.Conv2d(cin, width, 1, stride, bias=False),
                                nn.BatchNorm2d(width))

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return F.relu(y + (x if self.proj is None else self.proj(x)))


class ResNet20(nn.Module):
  def __init__(self, num_classes=10):
    super().__init__()
    self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16),
                              nn.ReLU())
    blocks, cin = [], 16
    for i, width in enumerate((16, 32, 64)):
      for j in range(3):
        blocks.append(BasicBlock(cin, width, 2 if i > 0 and j == 0 else 1))
        cin = width
    self.blocks = nn.Sequential(*blocks)
    self.head = nn.Linear(64, num_classes)

  def forward(self, x):
    return self.head(self.blocks(self.stem(x)).mean((2, 3)))


class LSTMLM(nn.Module):
  def __init__(self, vocab=65, embed=128, hidden=512, layers=2):
    super().__init__()
    self.embed = nn.Embedding(vocab, embed)
    self.lstm = nn.LSTM(embed, hidden, layers, batch_first=True)
    for name, p in self.lstm.named_parameters():
      if name.startswith('bias_hh'):  # see the module docstring
        p.requires_grad_(False)
        p.data.zero_()
    self.head = nn.Linear(hidden, vocab)

  def forward(self, tokens):
    return self.head(self.lstm(self.embed(tokens))[0])


class GPTBlock(nn.Module):
  def __init__(self, width, heads):
    super().__init__()
    self.heads = heads
    self.ln_attn = nn.LayerNorm(width)
    self.qkv = nn.Linear(width, 3 * width)
    self.out = nn.Linear(width, width)
    self.ln_mlp = nn.LayerNorm(width)
    self.mlp_in = nn.Linear(width, 4 * width)
    self.mlp_out = nn.Linear(4 * width, width)

  def forward(self, x):
    b, t, w = x.shape
    q, k, v = self.qkv(self.ln_attn(x)).split(w, dim=-1)
    q, k, v = (z.view(b, t, self.heads, w // self.heads).transpose(1, 2) for z in (q, k, v))
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    x = x + self.out(y.transpose(1, 2).reshape(b, t, w))
    return x + self.mlp_out(F.gelu(self.mlp_in(self.ln_mlp(x))))  # exact erf GELU


class GPT(nn.Module):
  """Learned positions, pre-LN blocks, final LN, output tied to the embedding."""

  def __init__(self, vocab=65, layers=4, heads=4, width=256, max_len=256):
    super().__init__()
    self.token_embed = nn.Embedding(vocab, width)
    self.position_embed = nn.Embedding(max_len, width)
    self.blocks = nn.Sequential(*[GPTBlock(width, heads) for _ in range(layers)])
    self.ln_f = nn.LayerNorm(width)

  def forward(self, tokens):
    x = self.token_embed(tokens) + self.position_embed.weight[:tokens.shape[1]]
    return self.ln_f(self.blocks(x)) @ self.token_embed.weight.T


# ------------------------------------------------------------------ the steps


class TorchBench:
  """One PyTorch eager train step per call, on a fixed random batch."""

  def __init__(self, variant: str, config, vocab: int):
    torch.manual_seed(0)
    b = config.train.batch_size
    self.lm = config.task == 'causal_lm'
    if variant == 'cnn':
      self.model = CNN()
      self.inputs = torch.randint(0, 256, (b, 1, 28, 28), dtype=torch.uint8)
    elif variant == 'resnet20':
      self.model = ResNet20()
      self.inputs = torch.randint(0, 256, (b, 3, 32, 32), dtype=torch.uint8)
    elif variant == 'lstm':
      self.model = LSTMLM(vocab)
    else:
      self.model = GPT(vocab, max_len=config.model.max_len)
    if self.lm:
      self.inputs = torch.from_numpy(benchmark.zipf_tokens(
          np.random.default_rng(0), 1, vocab, (b, config.data.context + 1))).long()
    else:
      self.labels = torch.randint(0, 10, (b,))
    self.model.train()
    self.params = [p for p in self.model.parameters() if p.requires_grad]
    self.num_params = sum(p.numel() for p in self.params)
    self.opt = torch.optim.SGD(self.params, lr=config.optim.lr, momentum=config.optim.momentum)

  def step(self):
    if self.lm:
      inputs, targets = self.inputs[:, :-1], self.inputs[:, 1:]
      logits = self.model(inputs).flatten(0, 1)
      targets = targets.flatten()
    else:  # the JAX task scales uint8 images inside its step too
      logits = self.model(self.inputs.float() / 255.0)
      targets = self.labels
    loss = F.cross_entropy(logits, targets)
    self.opt.zero_grad(set_to_none=True)
    loss.backward()
    self.opt.step()
    with torch.no_grad():  # the metric sums the JAX step returns
      return loss.detach(), (logits.argmax(-1) == targets).sum()

  def window(self, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
      self.step()
    return steps / (time.perf_counter() - start)


def jax_worker(variant: str) -> None:
  """The JAX side, in its own process: one window of FLAGS.steps per 'window' line on stdin.

  Replies on stdout, one JSON value per line: the parameter count once ready, each window's
  steps/s, and on end of input the MFU of all windows.
  """
  config = config_lib.sibling_config(EXPERIMENTS, 'benchmarks', variant)
  config.kernels = FLAGS.kernels[0]
  harness = benchmark.Harness(config, vocab_size=FLAGS.vocab_size, warmup=FLAGS.warmup)
  print(json.dumps(harness.num_params), flush=True)
  rates = []
  for _ in sys.stdin:
    if FLAGS.window_warmup:
      harness.window(FLAGS.window_warmup)
    rates.append(harness.window(FLAGS.steps))
    print(json.dumps(rates[-1]), flush=True)
  print(json.dumps(harness.report(rates)['mfu']), flush=True)


class JaxWorker:
  """This script as a `--jax_worker` child process, asked for one window at a time."""

  def __init__(self, variant: str, kernels: str | None, root: str | None = None):
    """kernels: the layer set (None: the checkout's default); root: another checkout's."""
    args = [f'--models={variant}', f'--steps={FLAGS.steps}', f'--warmup={FLAGS.warmup}',
            f'--window_warmup={FLAGS.window_warmup}']
    args += [f'--kernels={kernels}'] if kernels else []
    if FLAGS.vocab_size:
      args.append(f'--vocab_size={FLAGS.vocab_size}')
    script, env = __file__, None
    if root:  # its own code, from its own folder
      script = os.path.join(root, 'tools', 'torch_benchmark.py')
      env = dict(os.environ, PYTHONPATH=os.path.abspath(root))
    self.process = subprocess.Popen([sys.executable, script, '--jax_worker', *args], cwd=root,
                                    env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    text=True)
    self.num_params = self._reply()

  def _reply(self):
    line = self.process.stdout.readline()
    if not line:  # its traceback went to our stderr
      raise RuntimeError(f'the JAX worker exited with code {self.process.wait()}')
    return json.loads(line)

  def window(self) -> float:
    self.process.stdin.write('window\n')
    self.process.stdin.flush()
    return self._reply()

  def finish(self) -> float:
    """The worker's MFU over its windows; it exits."""
    self.process.stdin.close()
    mfu = self._reply()
    self.process.wait()
    return mfu


def side_by_side(variant: str, *, steps: int, windows: int, warmup: int) -> list[dict]:
  """One row per layer set: its JAX windows against the PyTorch windows between them."""
  config = config_lib.sibling_config(EXPERIMENTS, 'benchmarks', variant)
  workers = {k: JaxWorker(variant, k) for k in FLAGS.kernels}
  if FLAGS.baseline:
    workers['baseline'] = JaxWorker(variant, None, FLAGS.baseline)
  twin = TorchBench(variant, config, benchmark.text_vocab_size(config, FLAGS.vocab_size))
  for kernels, worker in workers.items():
    print(f'{variant}: parameters JAX (kernels={kernels}) {worker.num_params:,}, PyTorch '
          f'{twin.num_params:,}', file=sys.stderr, flush=True)
    assert worker.num_params == twin.num_params, (variant, worker.num_params, twin.num_params)
  if warmup:
    twin.window(warmup)
  jax_rates, torch_rates = {k: [] for k in workers}, []
  for _ in range(windows):
    for kernels, worker in workers.items():
      jax_rates[kernels].append(worker.window())  # its untimed steps first, as here
    if FLAGS.window_warmup:
      twin.window(FLAGS.window_warmup)
    torch_rates.append(twin.window(steps))
  rows = []
  for kernels, worker in workers.items():
    paired = [j / t for j, t in zip(jax_rates[kernels], torch_rates)]
    row = {'model': variant, 'kernels': kernels, 'num_params': worker.num_params,
           'jax_steps_per_sec': statistics.median(jax_rates[kernels]),
           'torch_steps_per_sec': statistics.median(torch_rates),
           'jax_windows': jax_rates[kernels], 'torch_windows': torch_rates,
           'window_ratios': paired, 'mfu': worker.finish()}
    row['ratio'] = row['jax_steps_per_sec'] / row['torch_steps_per_sec']
    if FLAGS.baseline and kernels != 'baseline':
      row['baseline_ratios'] = [a / b for a, b in zip(jax_rates[kernels], jax_rates['baseline'])]
    rows.append(row)
  return rows


def main(argv):
  benchmark.parse_flags(argv, (sys.modules[__name__], benchmark))
  unknown = [m for m in FLAGS.models if m not in VARIANTS]
  if unknown:
    cli.fail(f'--models: unknown {", ".join(unknown)}; choose from {", ".join(VARIANTS)}')
  bad = [k for k in FLAGS.kernels if k not in config_lib.KERNELS or k == 'auto']
  if bad or not FLAGS.kernels:
    cli.fail(f'--kernels: unknown {", ".join(bad) or "(none given)"}; choose from xla, cpu')
  if FLAGS.window_warmup < 0:
    cli.fail(f'--window_warmup={FLAGS.window_warmup} must be >= 0')
  if FLAGS.baseline and not os.path.isfile(os.path.join(FLAGS.baseline, 'tools',
                                                         'torch_benchmark.py')):
    cli.fail(f'--baseline={FLAGS.baseline} is not a checkout of deepl (no tools/torch_benchmark.py)')
  if FLAGS.jax_worker:
    jax_worker(FLAGS.models[0])
    return
  if FLAGS.torch_threads > 0:
    torch.set_num_threads(FLAGS.torch_threads)
  huge = 'glibc.malloc.hugetlb=1' in os.environ.get('GLIBC_TUNABLES', '')
  print(f'PyTorch {torch.__version__} ({torch.get_num_threads()} threads), JAX {jax.__version__}, '
        f'{FLAGS.steps} steps x {FLAGS.windows} windows each, huge pages '
        f'{"on" if huge else "off"}', flush=True)
  rows = [row for m in FLAGS.models
          for row in side_by_side(m, steps=FLAGS.steps, windows=FLAGS.windows,
                                  warmup=FLAGS.warmup)]
  print(f'{"model":<10} {"kernels":<8} {"params":>10} {"JAX steps/s":>12} {"PyTorch steps/s":>16} '
        f'{"JAX/PyTorch":>12} {"JAX MFU":>8} {"window pairs: ratios, JAX ahead":>32}')
  for r in rows:
    mfu = f"{100 * r['mfu']:.1f}%" if r['mfu'] else '?'
    paired = r['window_ratios']
    ahead = f"{min(paired):.2f}-{max(paired):.2f}, {sum(x > 1 for x in paired)} of {len(paired)}"
    print(f"{r['model']:<10} {r['kernels']:<8} {r['num_params']:>10,} "
          f"{r['jax_steps_per_sec']:>12.3f} {r['torch_steps_per_sec']:>16.3f} {r['ratio']:>12.2f} "
          f"{mfu:>8} {ahead:>32}")
  for r in rows:
    if 'baseline_ratios' in r:
      print(f"{r['model']}: kernels={r['kernels']} / baseline, window by window: "
            f"{benchmark.ratio_summary(r['baseline_ratios'])}")
  if FLAGS.json:
    with open(FLAGS.json, 'w') as f:
      json.dump(rows, f, indent=2)


if __name__ == '__main__':
  main(sys.argv)
