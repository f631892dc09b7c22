"""The one train/eval loop, for every task and model.

  train_and_evaluate(config, workdir)

Sections: Workdir / Input / Model / State / Update step / Checkpoint / Evals /
Loop. Everything random derives from config.seed; a run stopped at any moment
(SIGTERM, Ctrl-C, kill -9) and started again with the same command ends with
the same params and metrics as one that was never stopped.
"""

import functools
import json
import os
import signal
import time

import jax
import numpy as np
import optax

from deepl import checkpoint as checkpoint_lib
from deepl import config as config_lib
from deepl import data as data_lib
from deepl import metrics as metrics_lib
from deepl import models
from deepl import optim
from deepl import parallel
from deepl import tasks
from deepl.errors import UserError
from deepl.state import TrainState

# What identifies a run: a workdir whose config.json differs in these belongs
# to another experiment, and resuming from it would be wrong.
_IDENTITY_KEYS = ('model', 'task', 'data.name')


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


def _get(config, dotted):
  for part in dotted.split('.'):
    config = config[part]
  return config.to_dict() if hasattr(config, 'to_dict') else config


def prepare_workdir(config, workdir: str) -> None:
  """Creates workdir and writes config.json, refusing another run's workdir."""
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, '.write_test')
    with open(probe, 'w') as f:
      f.write('ok')
    os.remove(probe)
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
  if jax.process_index() == 0:
    with open(path, 'w') as f:
      f.write(config_lib.to_json(config))


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
    if self.requested:  # a second Ctrl-C: stop now (the last checkpoint stands)
      raise KeyboardInterrupt
    self.requested = True
    print(f'\ndeepl: {signal.Signals(signum).name}: saving a checkpoint, then exiting',
          flush=True)

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains, evaluates and checkpoints; returns the final eval metrics."""
  t_start = time.time()
  primary = jax.process_index() == 0

  # --- Workdir ---------------------------------------------------------------
  prepare_workdir(config, workdir)

  # --- Input -----------------------------------------------------------------
  runner = parallel.make_runner(config.parallel)
  batch_size = config.train.batch_size
  eval_batch_size = config.eval.batch_size or batch_size
  parallel.check_batch_size(batch_size, config.parallel)
  parallel.check_batch_size(eval_batch_size, config.parallel, 'eval.batch_size')
  dataset = data_lib.get_dataset(config.data.name, data_dir=config.data.data_dir,
                                 manual_dir=config.data.manual_dir)
  where = dict(process_index=jax.process_index(), process_count=jax.process_count())
  train_iter = data_lib.train_iterator(dataset.splits[dataset.train_split],
                                       global_batch_size=batch_size, seed=config.seed,
                                       **where)

  # --- Model -----------------------------------------------------------------
  model_kwargs = config_lib.model_kwargs(config)
  fields = models.field_names(config.model.name)
  if 'num_classes' in fields:
    model_kwargs.setdefault('num_classes', dataset.num_classes)
  init_model = models.build(config.model.name, **model_kwargs)
  model = init_model
  if config.parallel == 'pmap' and 'bn_axis_name' in fields:
    model = models.build(config.model.name, **model_kwargs, bn_axis_name=parallel.PMAP_AXIS)
  task_cls = tasks.get(config.task)
  task = task_cls(model, augment=config.data.augment)
  tx = optim.make_optimizer(config.optim, config.train.num_steps)

  # --- State -----------------------------------------------------------------
  # BatchNorm with a pmap axis name cannot run outside pmap: initialise with
  # the same module minus the axis name (identical parameters).
  init_fn = functools.partial(init_state, task=task_cls(init_model), tx=tx)
  example = task.example_batch(dataset.image_shape)
  state = runner.init(init_fn, jax.random.PRNGKey(config.seed), example)
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
  del restored

  # --- Update step -----------------------------------------------------------
  p_train_step = runner.compile_train(functools.partial(train_step, task=task, tx=tx))
  p_eval_step = runner.compile_eval(functools.partial(eval_step, task=task))

  # --- Evals -----------------------------------------------------------------
  def evaluate(state) -> dict:
    sums = None
    for batch in data_lib.eval_batches(dataset.splits[dataset.eval_split],
                                       global_batch_size=eval_batch_size, **where):
      out = p_eval_step(state, runner.put_batch(batch))
      if runner.sync_each_step:
        jax.block_until_ready(out)
      sums = metrics_lib.add_sums(sums, out)
    return metrics_lib.summarize(runner.fetch(sums))

  # --- Loop ------------------------------------------------------------------
  num_steps = config.train.num_steps
  writer = metrics_lib.MetricWriter(workdir, total_steps=num_steps, start_step=start_step,
                                    enabled=primary)
  if primary:
    print(f'deepl: {config.model.name} ({num_params:,} params) on {config.data.name}, '
          f'{num_steps} steps of batch {batch_size}, {jax.device_count()} '
          f'{jax.devices()[0].platform} device(s), parallel={config.parallel}', flush=True)
  window = loop_state['window']  # host numpy sums carried over a resume
  pending = []                   # this window's per-step sums, still on device
  step = saved_step = start_step
  eval_metrics = None
  t_window, steps_in_window = None, 0

  def window_sums():
    # Python floats (float64) so the sums survive the JSON checkpoint exactly
    # and a resumed window adds up to the same numbers.
    total = window
    for sums in runner.fetch(pending):
      total = metrics_lib.add_sums(total, {k: float(v) for k, v in sums.items()})
    return total

  with _Preemption() as preemption:
    while step < num_steps and not preemption.requested:
      batch = runner.put_batch(next(train_iter))
      state, sums = p_train_step(state, batch)
      step += 1
      pending.append(sums)
      if runner.sync_each_step:
        jax.block_until_ready(sums)
      if t_window is None:  # time from the first finished step: compile excluded
        jax.block_until_ready(sums)
        t_window, steps_in_window = time.time(), 0
      else:
        steps_in_window += 1
      writer.advance()

      if step % config.train.log_every_steps == 0 or step == num_steps:
        row = metrics_lib.summarize(window_sums())
        if not np.isfinite(row['loss']):
          raise UserError(f'the train loss became {row["loss"]} by step {step}: lower '
                          'optim.lr or set optim.clip_norm (the last good checkpoint is '
                          f'step {ckpt.latest_step()})')
        elapsed = time.time() - t_window
        if steps_in_window:
          row['steps_per_sec'] = steps_in_window / elapsed
          row['examples_per_sec'] = row['steps_per_sec'] * batch_size
        writer.write(step, 'train', row)
        window, pending = None, []
        t_window, steps_in_window = time.time(), 0

      eval_metrics = None
      if step % config.eval.every_steps == 0 or step == num_steps:
        eval_metrics = evaluate(state)
        writer.write(step, dataset.eval_split, eval_metrics)
        t_window, steps_in_window = time.time(), 0

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
