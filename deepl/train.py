"""The one train/eval loop, for every task and model.

  train_and_evaluate(config, workdir)

Sections: Workdir / Input, model, optimizer / State / Checkpoint / Update step
/ Evals / Loop. Everything random derives from config.seed; a run stopped at any moment
(SIGTERM, Ctrl-C, kill -9) and started again with the same command ends with
the same params and metrics as one that was never stopped.
"""

import copy
import dataclasses
import functools
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from typing import Any

import jax
from jax.experimental import multihost_utils
import numpy as np
import optax

from deepl import checkpoint as checkpoint_lib
from deepl import config as config_lib
from deepl import data as data_lib
from deepl import flops as flops_lib
from deepl import init_from
from deepl import kernels
from deepl import metrics as metrics_lib
from deepl import models
from deepl import optim
from deepl import parallel
from deepl import run_lock
from deepl import tasks
from deepl.data import augment
from deepl.data import seq2seq_text
from deepl.errors import UserError
from deepl.state import TrainState

# What identifies a run: a workdir whose config.json differs in these belongs
# to another experiment, and resuming from it would be wrong.
_IDENTITY_KEYS = ('model', 'task', 'data.name')


def check_before_data(config) -> list[str]:
  """The model's fields, once its name, fields, heads, remat and the augmentation are checked.

  Runs before any data is prepared: a download can take minutes, and a typo
  in the config should not wait for it.
  """
  fields = models.check_config(config.model.name, config_lib.model_kwargs(config))
  if config.train.remat and 'remat' not in fields:
    raise UserError(f"model {config.model.name!r} has no remat option (the transformers "
                    'have): set train.remat=False')
  augment.check_name(config.data.augment)
  return fields


def make_task(config, num_classes: int | None, tokenizer=None):
  """(task, init_task): the task the step runs, and the one to initialise with.

  They differ only under pmap, where BatchNorm averages statistics over the
  pmap axis, which does not exist outside pmap: init uses the same module
  minus the axis name (identical parameters).
  """
  model_kwargs = config_lib.model_kwargs(config)
  fields = check_before_data(config)
  if 'num_classes' in fields and num_classes:
    model_kwargs.setdefault('num_classes', num_classes)
  seq2seq = config.task == 'seq2seq'
  if 'vocab_size' in fields and tokenizer is not None:
    model_kwargs.setdefault('vocab_size', seq2seq_text.model_vocab_size(tokenizer)
                            if seq2seq else tokenizer.vocab_size)
  if seq2seq and 'max_len' in fields:
    # The encoder reads max_length tokens, the decoder BOS + max_target.
    model_kwargs.setdefault('max_len', max(config.data.max_length, config.data.max_target + 1))
  if 'dtype' in fields:
    model_kwargs.setdefault('dtype', jax.numpy.dtype(config.train.compute_dtype))
  if config.train.remat:
    model_kwargs.setdefault('remat', True)
  # The layer set and attention as deepl.kernels resolves them for this process.
  resolved = config.copy_and_resolve_references()
  kernels.resolve_config(resolved)
  if 'kernels' in fields:
    model_kwargs.setdefault('kernels', resolved.kernels)
  if 'attention_implementation' in fields:
    model_kwargs.setdefault('attention_implementation', resolved.attention)
  task_cls = tasks.get(config.task)
  options = dict(augment=config.data.augment, mask_rate=config.train.mask_rate,
                 tokens_are_chars=tokenizer is not None and config.data.tokenizer == 'char')
  if seq2seq:
    bos, eos = seq2seq_text.special_ids(tokenizer)
    options.update(bos=bos, eos=eos, beam_size=config.eval.beam_size,
                   length_penalty=config.eval.length_penalty)
  init_task = task_cls(models.build(config.model.name, **model_kwargs), **options)
  if config.parallel == 'pmap' and 'bn_axis_name' in fields:
    model = models.build(config.model.name, **model_kwargs, bn_axis_name=parallel.PMAP_AXIS)
    return task_cls(model, **options), init_task
  return init_task, init_task


def _save_tokenizer(tokenizer, path: str) -> None:
  """Process 0 saves aside and renames: other processes see all of it or none."""
  if jax.process_index() != 0:
    return
  aside = path + '.tmp'
  shutil.rmtree(aside, ignore_errors=True)
  tokenizer.save(aside)
  os.rename(aside, path)


def make_sources(config, dataset, workdir: str):
  """(splits, tokenizer): random-access sources per split, ready to batch.

  Images are ready as they are. Text is tokenized with the tokenizer saved in
  workdir/tokenizer: the init_from run's if there is one, else built from the
  train split on the first run.
  """
  if dataset.image_shape is not None:
    return dataset.splits, None
  from deepl.data import tokenizers  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, 'tokenizer')
  # A fine-tuning run must see the token ids its parameters were trained on.
  pretrained = config.init_from and init_from.tokenizer_dir(config.init_from)
  if os.path.isdir(path):
    tokenizer = tokenizers.load(path)
  elif pretrained:
    tokenizer = tokenizers.load(pretrained)
    _save_tokenizer(tokenizer, path)
  else:
    tokenizer = tokenizers.build(
        config.data.tokenizer, dataset.texts(dataset.train_split),
        vocab_size=config.data.vocab_size, min_count=config.data.min_count)
    _save_tokenizer(tokenizer, path)
  if config.task == 'seq2seq':
    splits = seq2seq_text.seq2seq_splits(dataset, tokenizer, max_source=config.data.max_length,
                                         max_target=config.data.max_target)
    return splits, tokenizer
  kind = 'lm' if config.task == 'causal_lm' else 'classification'
  splits = data_lib.text_splits(dataset, tokenizer, kind=kind,
                                max_length=config.data.max_length, context=config.data.context)
  return splits, tokenizer


def init_state(rng, batch, *, task, tx) -> TrainState:
  variables = dict(task.init(rng, batch))
  params = variables.pop('params')
  return TrainState(step=jax.numpy.zeros((), jax.numpy.int32), params=params,
                    model_state=variables, opt_state=tx.init(params),
                    rng=jax.random.fold_in(rng, 1))


def train_step(state: TrainState, batch, *, task, tx, axis_name=None):
  """One optimizer update. Pure: the same state and batch give the same result."""
  rng = jax.random.fold_in(state.rng, state.step)
  if axis_name:  # pmap: each device draws its own dropout/augmentation noise
    rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
  grad_fn = jax.value_and_grad(task.loss, has_aux=True)
  (_, (sums, model_state)), grads = grad_fn(state.params, state.model_state, batch, rng)
  if axis_name:
    grads = jax.lax.pmean(grads, axis_name)
    sums = jax.lax.psum(sums, axis_name)
    model_state = jax.lax.pmean(model_state, axis_name)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  return state.replace(step=state.step + 1, params=params, model_state=model_state,
                       opt_state=opt_state), sums


def eval_step(state: TrainState, batch, *, task, axis_name=None):
  sums = task.eval_sums(state.params, state.model_state, batch)
  return jax.lax.psum(sums, axis_name) if axis_name else sums


def evaluate_split(state, *, source, batch_size: int, task, runner, p_eval_step) -> dict:
  """The task's metrics over all of `source`, each example counted once."""
  sums = None
  for batch in data_lib.eval_batches(source, global_batch_size=batch_size,
                                     process_index=jax.process_index(),
                                     process_count=jax.process_count()):
    out = p_eval_step(state, runner.put_batch(batch))
    if runner.sync_each_step:
      jax.block_until_ready(out)
    sums = metrics_lib.add_sums(sums, out)
  return task.summarize(metrics_lib.summarize(runner.fetch(sums)))


def _get(config, dotted):
  for part in dotted.split('.'):
    config = config[part]
  return config.to_dict() if hasattr(config, 'to_dict') else config


def prepare_workdir(config, workdir: str) -> None:
  """Creates workdir and writes config.json, refusing another run's workdir.

  Also takes the workdir's lock (deepl/run_lock.py) for this process: a second
  `deepl train` on the same workdir is refused while this one runs.
  """
  try:
    os.makedirs(workdir, exist_ok=True)
    # A private probe: processes sharing a workdir must not remove each other's.
    with tempfile.NamedTemporaryFile(dir=workdir, prefix='.write_test'):
      pass
  except OSError as err:
    raise UserError(f'cannot write to workdir {workdir} ({err.strerror}): '
                    'pass a --workdir you can write to') from None
  path = os.path.join(workdir, 'config.json')
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
    for key in _IDENTITY_KEYS:
      before, now = _get(old, key), _get(config, key)
      if before != now:
        raise UserError(f'workdir {workdir} holds a run with {key}={before}, not {now}: '
                        'use a new --workdir (or the config that wrote it) to resume')
  run_lock.hold(workdir, jax.process_index())  # before config.json, which may be a live run's
  if jax.process_index() == 0:
    # Written aside and renamed, so another process never reads half a file.
    with open(path + '.tmp', 'w') as f:
      f.write(config_lib.to_json(config))
    os.replace(path + '.tmp', path)


class _Preemption:
  """SIGTERM/SIGINT set a flag; the loop saves a checkpoint and exits cleanly."""

  def __init__(self):
    self.requested = False
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    if self.requested:  # a second signal: stop now; finished checkpoints stand
      print(f'\ndeepl: second {signal.Signals(signum).name}: stopping without saving',
            flush=True)
      raise SystemExit(128 + signum)
    self.requested = True
    print(f'\ndeepl: {signal.Signals(signum).name}: saving a checkpoint, then exiting',
          flush=True)

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def _prepare_dataset(config):
  """Process 0 prepares first, so hosts sharing a data_dir never race on it."""
  get = functools.partial(data_lib.get_dataset, config.data.name,
                          data_dir=config.data.data_dir, manual_dir=config.data.manual_dir)
  if jax.process_count() == 1:
    return get()
  dataset = get() if jax.process_index() == 0 else None
  multihost_utils.sync_global_devices('deepl: dataset prepared')
  return dataset or get()


@dataclasses.dataclass
class Setup:
  """What a run is made of, before any step: shared by the loop and the tools."""
  dataset: Any
  splits: dict          # split name -> random-access source (gather)
  tokenizer: Any        # None for non-text data
  task: Any
  init_task: Any
  tx: Any


def build(config, workdir: str) -> Setup:
  """Data, tokenizer, task and optimizer for `config` (workdir holds the tokenizer)."""
  dataset = _prepare_dataset(config)
  splits, tokenizer = make_sources(config, dataset, workdir)
  task, init_task = make_task(config, dataset.num_classes, tokenizer)
  tx = optim.make_optimizer(config.optim, config.train.num_steps)
  return Setup(dataset, splits, tokenizer, task, init_task, tx)


def initial_state(setup: Setup, config, runner) -> TrainState:
  init_fn = functools.partial(init_state, task=setup.init_task, tx=setup.tx)
  example = setup.splits[setup.dataset.train_split].gather(np.zeros(1, np.int64))
  return runner.init(init_fn, jax.random.PRNGKey(config.seed), example)


def _with_xla_attention(task):
  """`task` whose model attends through XLA: a fused kernel (a custom call) counts 0 FLOPs
  to XLA, while its matmuls are the XLA path's."""
  if getattr(task.model, 'attention_implementation', None) in (None, 'xla'):
    return task
  counted = copy.copy(task)
  counted.model = task.model.clone(attention_implementation='xla')
  return counted


class StepCost:
  """Tokens and FLOPs of one global train step, by the shape of its batch.

  Text batches come in a few bucket widths, so each width is counted once
  (deepl.flops, from shapes only) and looked up after. A failed count only
  warns, once: a run must never stop for its speed report.
  """

  def __init__(self, setup: Setup, config, runner, state):
    self._fn = functools.partial(train_step, task=_with_xla_attention(setup.init_task),
                                 tx=setup.tx)
    self._state = jax.eval_shape(runner.to_saveable, state)
    self._task = setup.task
    self._batch_size = config.train.batch_size
    self._dtype = config_lib.compute_dtype(config)
    self._known = {}
    self.failed = False
    self.peak = None
    try:
      # The CPU's peak is a matmul timed now: wait until the state's init has
      # run, or it shares the cores with it (a peak of 109 GFLOP/s, not ~200).
      jax.block_until_ready(state)
      self.peak = flops_lib.system_peak_flops(self._dtype)
    except Exception as err:  # pylint: disable=broad-except
      self._warn(err)

  def second_look(self) -> None:
    """On a CPU, times the peak again and keeps the faster reading.

    This VM's host at times takes one of the two cores for ~0.5 s: 12 of 52
    back-to-back readings read 103-110 GFLOP/s instead of ~200, which doubles
    an MFU. Call it with the device idle, outside any timing, seconds after
    the first reading (after the compile, say), so one stall rarely hits both.
    """
    if self.peak:  # GPUs and TPUs: the same published figure again
      self.peak = max(self.peak, flops_lib.system_peak_flops(self._dtype, again=True))

  def _warn(self, err):
    if not self.failed:
      print(f'deepl: warning: no FLOP count or MFU for this run ({type(err).__name__}: '
            f'{err})', file=sys.stderr, flush=True)
    self.failed = True

  def __call__(self, host_batch) -> tuple[float, float]:
    """(tokens, FLOPs) of the global step whose local batch is `host_batch`."""
    return self.counts(host_batch)[:2]

  def counts(self, host_batch) -> tuple[float, float, float]:
    """(tokens, FLOPs, XLA's own FLOP count with each scan body once)."""
    key = tuple((k, v.shape[1:], str(v.dtype)) for k, v in sorted(host_batch.items()))
    if key not in self._known:
      # init_task: pmap's task names an axis that only exists inside pmap.
      batch = {k: jax.ShapeDtypeStruct((self._batch_size,) + v.shape[1:], v.dtype)
               for k, v in host_batch.items()}
      flops = xla = float('nan')
      if not self.failed:
        try:
          flops, xla = flops_lib.flop_counts(self._fn, self._state, batch)
        except Exception as err:  # pylint: disable=broad-except
          self._warn(err)
      tokens = self._task.tokens_per_example(host_batch)
      self._known[key] = ((tokens or 0) * self._batch_size, flops, xla)
    return self._known[key]


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains, evaluates and checkpoints; returns the final eval metrics."""
  try:
    return _train_and_evaluate(config, workdir)
  finally:  # however it ends; a process's end drops it anyway
    run_lock.release(workdir, jax.process_index())


def _train_and_evaluate(config, workdir: str) -> dict:
  t_start = time.time()
  primary = jax.process_index() == 0

  # --- Workdir ---------------------------------------------------------------
  check_before_data(config)
  kernels.resolve_config(config)  # config.json records the layer set the run uses
  prepare_workdir(config, workdir)

  # --- Input, model, optimizer -----------------------------------------------
  runner = parallel.make_runner(config.parallel, kernels.compiler_options(config.kernels),
                                config.mesh, config.mesh.rules, model=config.model.name)
  batch_size = config.train.batch_size
  eval_batch_size = config.eval.batch_size or batch_size
  runner.check_batch(batch_size)
  runner.check_batch(eval_batch_size, 'eval.batch_size')
  setup = build(config, workdir)
  dataset, splits, task = setup.dataset, setup.splits, setup.task
  where = dict(process_index=jax.process_index(), process_count=jax.process_count())
  train_iter = data_lib.train_iterator(splits[dataset.train_split],
                                       global_batch_size=batch_size, seed=config.seed,
                                       sort_window=config.data.sort_window,
                                       prefetch=config.data.prefetch, **where)

  # --- State -----------------------------------------------------------------
  state = initial_state(setup, config, runner)
  num_params = sum(x.size for x in jax.tree.leaves(runner.to_saveable(state).params))

  # --- Checkpoint ------------------------------------------------------------
  ckpt = checkpoint_lib.Checkpointer(
      os.path.join(workdir, 'checkpoints'), keep=config.checkpoint.keep,
      best_metric=config.checkpoint.best_metric, best_mode=config.checkpoint.best_mode)
  loop_state = {'window': None}  # train-metric sums since the last logged row
  restored = ckpt.restore_latest(runner.abstract(runner.to_saveable(state)), train_iter)
  if restored is not None:
    start_step, saved_state, loop_state = restored
    state = runner.from_saveable(saved_state)
    print(f'deepl: resuming from step {start_step} in {workdir}', flush=True)
  else:
    start_step = 0
    if config.init_from:
      saveable = runner.to_saveable(state)
      params, fresh = init_from.load_params(config.init_from, saveable.params)
      state = runner.from_saveable(saveable.replace(params=params))
      if primary:
        print(f'deepl: parameters from {config.init_from}; fresh: '
              f'{", ".join(fresh) or "none"}', flush=True)
  del restored

  # --- Update step -----------------------------------------------------------
  p_train_step = runner.compile_train(functools.partial(train_step, task=task, tx=setup.tx))
  p_eval_step = runner.compile_eval(functools.partial(eval_step, task=task))

  # --- Evals -----------------------------------------------------------------
  evaluate = functools.partial(evaluate_split, source=splits[dataset.eval_split],
                               batch_size=eval_batch_size, task=task, runner=runner,
                               p_eval_step=p_eval_step)

  # --- Loop ------------------------------------------------------------------
  num_steps = config.train.num_steps
  if primary:
    mesh = getattr(runner, 'mesh', None)
    layout = f' (mesh {", ".join(f"{k}={v}" for k, v in mesh.shape.items())})' if mesh else ''
    print(f'deepl: {config.model.name} ({num_params:,} params) on {config.data.name}, '
          f'{num_steps} steps of batch {batch_size}, {jax.device_count()} '
          f'{jax.devices()[0].platform} device(s), parallel={config.parallel}{layout}, '
          f'kernels={config.kernels}, attention={config.attention}', flush=True)
    for note in getattr(runner, 'notes', ()):
      print(f'deepl: note: {note}', flush=True)
  writer = metrics_lib.MetricWriter(workdir, total_steps=num_steps, start_step=start_step,
                                    enabled=primary)
  window = loop_state['window']  # host numpy sums carried over a resume
  pending = []                   # this window's per-step sums, still on device
  step = saved_step = start_step
  eval_metrics = None
  t_window, steps_in_window = None, 0
  step_cost = StepCost(setup, config, runner, state) if primary else None
  window_cost = np.zeros(2)  # tokens, FLOPs of the timed steps of this window
  # Where the window's wall time went, per step: making and placing the
  # batch, dispatching the step, waiting for the device. A loop that cannot
  # keep the device busy shows it here (logged as *_ms).
  host_time = np.zeros(3)

  def window_sums():
    # Python floats (float64) so the sums survive the JSON checkpoint exactly
    # and a resumed window adds up to the same numbers.
    total = window
    for sums in runner.fetch(pending):
      total = metrics_lib.add_sums(total, {k: float(v) for k, v in sums.items()})
    return total

  with _Preemption() as preemption:
    while step < num_steps and not preemption.requested:
      t0 = time.perf_counter()
      host_batch = next(train_iter)
      batch = runner.put_batch(host_batch)
      t1 = time.perf_counter()
      state, sums = p_train_step(state, batch)
      t2 = time.perf_counter()
      step += 1
      # Keep at most one step queued behind the running one: the host still
      # overlaps the next batch with compute, but a SIGTERM is answered within
      # a step or two instead of after every queued step has run.
      if pending and not runner.sync_each_step:
        jax.block_until_ready(pending[-1])
      pending.append(sums)
      if runner.sync_each_step:
        jax.block_until_ready(sums)
      host_time += (t1 - t0, t2 - t1, time.perf_counter() - t2)
      if t_window is None:  # time from the first finished step: compile excluded
        jax.block_until_ready(sums)
        if step_cost:
          step_cost(host_batch)  # the first count of a shape happens outside the timing
          step_cost.second_look()
        t_window, steps_in_window, window_cost, host_time = time.time(), 0, np.zeros(2), np.zeros(3)
      else:
        steps_in_window += 1
        if step_cost:
          window_cost += step_cost(host_batch)
      writer.advance()

      if step % config.train.log_every_steps == 0 or step == num_steps:
        row = task.summarize(metrics_lib.summarize(window_sums()))
        if not np.isfinite(row['loss']):
          raise UserError(f'the train loss became {row["loss"]} by step {step}: lower '
                          'optim.lr or set optim.clip_norm (the last good checkpoint is '
                          f'step {ckpt.latest_step()})')
        elapsed = time.time() - t_window
        if steps_in_window:
          row['steps_per_sec'] = steps_in_window / elapsed
          row['examples_per_sec'] = row['steps_per_sec'] * batch_size
          tokens, flops = window_cost / elapsed
          if tokens:
            row['tokens_per_sec'] = tokens
          if np.isfinite(flops) and flops:
            row['flops_per_sec'] = flops
            if step_cost.peak:
              row['mfu'] = flops / step_cost.peak
          row.update(zip(('input_ms', 'dispatch_ms', 'wait_ms'),
                         1e3 * host_time / steps_in_window))
        writer.write(step, 'train', row)
        window, pending = None, []
        t_window, steps_in_window, window_cost, host_time = time.time(), 0, np.zeros(2), np.zeros(3)

      eval_metrics = None
      if step % config.eval.every_steps == 0 or step == num_steps:
        eval_metrics = evaluate(state)
        writer.write(step, dataset.eval_split, eval_metrics)
        t_window, steps_in_window, window_cost, host_time = time.time(), 0, np.zeros(2), np.zeros(3)

      if step % config.checkpoint.every_steps == 0 or step == num_steps:
        ckpt.save(step, runner.to_saveable(state), train_iter,
                  {'window': window_sums()}, metrics=eval_metrics)
        saved_step = step
    if step != saved_step:  # preempted between checkpoints
      ckpt.save(step, runner.to_saveable(state), train_iter, {'window': window_sums()})

  ckpt.wait()
  ckpt.close()
  writer.close()
  if preemption.requested and step < num_steps:
    print(f'deepl: stopped at step {step}; rerun the same command to resume', flush=True)
    return {}
  if eval_metrics is None:  # the run had already finished: report, log nothing
    eval_metrics = evaluate(state)
  if primary:
    shown = ', '.join(f'{k} {v:.4f}' for k, v in eval_metrics.items())
    acc = eval_metrics.get('accuracy')
    head = f'{dataset.eval_split} accuracy {100 * acc:.2f}%' if acc is not None else dataset.eval_split
    print(f'deepl: done: {head} ({shown}) after {step} steps, {time.time() - t_start:.0f} s; '
          f'run written to {os.path.abspath(workdir)}', flush=True)
  return eval_metrics
