"""The one train/eval loop, for every task and model.

  train_and_evaluate(config, workdir)     # config checked by deepl.config.validate

It reads top to bottom in sections: Mesh / Input / Model / Checkpoint /
Update step / Evals / Loop. What a run is made of comes from
deepl/experiment.py, what differs between kinds of problem from the task
(deepl/tasks/). Everything random derives from config.seed; a run stopped at
any moment (SIGTERM, Ctrl-C, kill -9) and started again with the same command
ends with the same params and metrics as one that was never stopped.

No non-finite state is ever saved: every step flags a non-finite loss,
gradient or updated variable on the device, and the flags are read
before every row, eval and checkpoint (train.on_nonfinite: 'stop' ends the
run there, naming the last checkpoint; 'skip' drops such updates).
"""

import functools
import sys
import time

import jax
import jax.numpy as jnp
import optax

from deepl import checkpoint as checkpoint_lib
from deepl import evaluation
from deepl import experiment as experiment_lib
from deepl import kernels
from deepl import metering
from deepl import metrics as metrics_lib
from deepl import parallel
from deepl import pretrained
from deepl import workdir as workdir_lib
from deepl.errors import UserError
from deepl.preemption import Preemption
from deepl.state import all_finite
from deepl.state import TrainState


def train_step(state: TrainState, batch, *, task, tx, axis_name=None, skip_nonfinite=False):
  """One optimizer update. Pure: the same state and batch give the same result.

  Its metric sums add 'nonfinite': 1 if the loss, a gradient or an updated
  variable is not finite, else 0. With `skip_nonfinite` such an update
  is dropped, as optax.apply_if_finite drops it (only the step count moves),
  and the step's metric sums are zeros.
  """
  rng = jax.random.fold_in(state.rng, state.step)
  if axis_name:  # pmap: each device draws its own dropout/augmentation noise
    rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
  grad_fn = jax.value_and_grad(task.loss, has_aux=True)
  (loss, (sums, model_state)), grads = grad_fn(state.params, state.model_state, batch, rng)
  if axis_name:
    grads = jax.lax.pmean(grads, axis_name)
    sums = jax.lax.psum(sums, axis_name)
    model_state = jax.lax.pmean(model_state, axis_name)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  finite = all_finite(loss, grads, params, model_state)
  if axis_name:  # each device's loss is its own: every device must agree to keep a step
    finite = jax.lax.pmin(finite.astype(jnp.int32), axis_name) > 0
  if skip_nonfinite:
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    params, model_state, opt_state = keep((params, model_state, opt_state),
                                          (state.params, state.model_state, state.opt_state))
    sums = jax.tree.map(lambda s: jnp.where(finite, s, jnp.zeros_like(s)), sums)
  sums = {**sums, 'nonfinite': 1 - finite.astype(jnp.int32)}
  return state.replace(step=state.step + 1, params=params, model_state=model_state,
                       opt_state=opt_state), sums


def train_and_evaluate(config, workdir: str, *, allow_config_change: bool = False) -> dict:
  """Trains, evaluates and checkpoints; returns the final eval metrics ({} if stopped early).

  A resume whose config differs from the run's in a key that changes the
  training is refused unless `allow_config_change` (deepl/workdir.py).
  """
  kernels.resolve_config(config)  # config.json records the layer set the run uses
  pretrained.resolve_config(config)  # and the model fields an HF init_from folder gives
  try:
    return _train_and_evaluate(config, workdir, allow_config_change)
  except UserError:
    raise
  except Exception as err:  # pylint: disable=broad-except
    storage = workdir_lib.storage_error(err, workdir)  # a full disk, a read-only folder: one line
    if storage is None:
      raise
    raise UserError(storage) from None
  finally:  # however it ends; a process's end drops it anyway
    workdir_lib.release(workdir)


def _train_and_evaluate(config, workdir: str, allow_config_change: bool) -> dict:
  t_start = time.time()
  primary = jax.process_index() == 0
  num_steps, batch_size = config.train.num_steps, config.train.batch_size
  config_changes = workdir_lib.prepare(config, workdir, allow_change=allow_config_change)

  # --- Mesh ------------------------------------------------------------------
  runner = parallel.make_runner(config)

  # --- Input -----------------------------------------------------------------
  exp = experiment_lib.build(config, workdir)
  _check_batch_fits(config, exp)
  if primary and exp.dataset.label_names:  # what `deepl predict` names the classes
    experiment_lib.save_classes(exp.dataset.label_names, workdir)
  train_iter = exp.train_iterator()

  # --- Model -----------------------------------------------------------------
  state = exp.initial_state(runner)

  # --- Checkpoint ------------------------------------------------------------
  ckpt = checkpoint_lib.Checkpointer(
      workdir_lib.path(workdir) / 'checkpoints', keep=config.checkpoint.keep,
      best_metric=config.checkpoint.best_metric, best_mode=config.checkpoint.best_mode)
  start_step, state, window = _restore(config, workdir, ckpt, runner, state, train_iter,
                                       exp.init_task.model)
  workdir_lib.record_config(config, workdir, config_changes, start_step)  # the config in force

  # --- Update step -----------------------------------------------------------
  stop_on_nonfinite = config.train.on_nonfinite == 'stop'
  p_train_step = runner.compile_train(functools.partial(
      train_step, task=exp.task, tx=exp.tx, skip_nonfinite=not stop_on_nonfinite))

  # --- Evals -----------------------------------------------------------------
  evaluate = evaluation.Evaluator(exp.task, runner, config.eval.batch_size or batch_size,
                                  workers=config.data.workers)

  # --- Loop ------------------------------------------------------------------
  if primary:
    print(_header(config, runner, runner.to_saveable(state).params), flush=True)
  writer = metrics_lib.MetricWriter(workdir, total_steps=num_steps, start_step=start_step,
                                    enabled=primary)
  cost = metering.StepCost(train_step, exp, state, runner) if primary else None
  meter = metering.Meter(batch_size, cost)
  step = saved_step = start_step
  eval_metrics = None
  due = lambda every: step % every == 0 or step == num_steps
  divergence = _DivergenceWarning(writer.first_value('train', 'loss'))
  # An error or a second signal: the saves under way finish, and no temporary folders stay.
  with Preemption() as preemption, ckpt.finished_on_error(), writer.closed_on_error():
    while step < num_steps and not preemption.stop(step):
      t_start_step = time.perf_counter()
      host_batch = next(train_iter)
      batch = runner.put_batch(host_batch)
      t_placed = time.perf_counter()
      state, sums = p_train_step(state, batch)
      t_dispatched = time.perf_counter()
      runner.throttle(window.last, sums)
      window.add(sums)
      step += 1
      meter.step(host_batch, sums, (t_start_step, t_placed, t_dispatched))
      writer.advance()
      if stop_on_nonfinite and any(due(every) for every in (
          config.train.log_every_steps, config.eval.every_steps, config.checkpoint.every_steps)):
        _stop_if_nonfinite(window, step, ckpt)  # nothing non-finite is logged, evaluated or saved
      if due(config.train.log_every_steps):
        total = window.total()
        # A window of skipped steps only has no metrics to show, only its count.
        row = exp.task.summarize(metrics_lib.summarize(total)) if total['count'] else {}
        if not stop_on_nonfinite:
          row['skipped'] = total['nonfinite']
        writer.write(step, 'train', {**row, **meter.row()})
        divergence.check(row, step)
        window.clear()
      eval_metrics = None
      if due(config.eval.every_steps):
        eval_metrics = evaluate(state, exp.eval_source)
        writer.write(step, exp.dataset.eval_split, eval_metrics)
        meter.reset()  # the eval's time is not the steps'
      if due(config.checkpoint.every_steps):
        ckpt.save(step, runner.to_saveable(state), train_iter, {'window': window.total()},
                  metrics=eval_metrics)
        saved_step = step
    if step != saved_step:  # preempted between checkpoints
      if stop_on_nonfinite:
        _stop_if_nonfinite(window, step, ckpt)
      ckpt.save(step, runner.to_saveable(state), train_iter, {'window': window.total()})

  train_iter.close()  # its worker processes, if any, end here
  ckpt.close()
  writer.close()
  if preemption.requested and step < num_steps:
    print(f'deepl: stopped at step {step}; rerun the same command to resume', flush=True)
    return {}
  eval_metrics = eval_metrics or evaluate(state, exp.eval_source)  # a finished run: report only
  if primary:
    print(f'deepl: done: {_headline(exp.dataset.eval_split, eval_metrics)} after {step} steps, '
          f'{time.time() - t_start:.0f} s; run written to {workdir_lib.path(workdir)}', flush=True)
  return eval_metrics


def _restore(config, workdir, ckpt, runner, state, train_iter, model):
  """(first step, state, train sums since the last row): resumed from the newest checkpoint,
  else started from config.init_from's parameters, else fresh."""
  restored = ckpt.restore_latest(runner.abstract(runner.to_saveable(state)), train_iter)
  if restored is not None:
    start_step, saved_state, loop_state = restored
    print(f'deepl: resuming from step {start_step} in {workdir}', flush=True)
    return (start_step, runner.from_saveable(saved_state),
            metrics_lib.TrainSums(loop_state['window'], runner.fetch))
  if config.init_from:
    saveable = runner.to_saveable(state)
    params, fresh = pretrained.init_params(config, model, saveable.params)
    state = runner.from_saveable(saveable.replace(params=params))
    if jax.process_index() == 0:
      print(f'deepl: parameters from {config.init_from}; fresh: '
            f'{", ".join(fresh) or "none"}', flush=True)
  return 0, state, metrics_lib.TrainSums(None, runner.fetch)


def _header(config, runner, params) -> str:
  """The run's first lines: what trains on what, and where (with the sharding's notes)."""
  num_params = sum(x.size for x in jax.tree.leaves(params))
  mesh = getattr(runner, 'mesh', None)
  layout = f' (mesh {", ".join(f"{k}={v}" for k, v in mesh.shape.items())})' if mesh else ''
  lines = [f'deepl: {config.model.name} ({num_params:,} params) on {config.data.name}, '
           f'{config.train.num_steps} steps of batch {config.train.batch_size}, '
           f'{jax.device_count()} {jax.devices()[0].platform} device(s), '
           f'parallel={config.parallel}{layout}, kernels={config.kernels}, '
           f'attention={config.attention}']
  lines += [f'deepl: note: {note}' for note in getattr(runner, 'notes', ())]
  return '\n'.join(lines)


def _check_batch_fits(config, exp) -> None:
  size = len(exp.train_source) if hasattr(exp.train_source, '__len__') else None
  if size is not None and config.train.batch_size > size:
    raise UserError(f'config.train.batch_size={config.train.batch_size} is larger than the '
                    f'{size:,} examples of the {exp.dataset.train_split} split of '
                    f'{config.data.name}: use a batch of at most {size:,}')


def _stop_if_nonfinite(window, step: int, ckpt) -> None:
  """UserError if a step since the last row was non-finite, naming the newest checkpoint.

  Every checkpoint was checked this way before it was saved, so every one is finite.
  """
  if not (window.total() or {}).get('nonfinite'):
    return
  ckpt.wait()  # the newest named is one that exists
  last = ckpt.latest_step()
  resume = ('nothing was saved before it' if last is None else
            f'the last checkpoint, step {last}, is finite: rerun with the change and '
            '--allow_config_change to resume from it')
  raise UserError(f'the train loss or gradients became non-finite (inf or nan) by step {step} '
                  f'and nothing of it was saved; {resume}; lower optim.lr, set '
                  "optim.clip_norm, or set train.on_nonfinite='skip' to drop such steps")


class _DivergenceWarning:
  """Warns, once, when a logged train loss (a whole log window's mean) passes 100x the first."""

  FACTOR = 100

  def __init__(self, first):
    self._first, self._warned = first, False

  def check(self, row: dict, step: int) -> None:
    loss = row.get('loss')
    if loss is None or self._warned:
      return
    if self._first is None:
      self._first = (loss, step)
    elif self._first[0] > 0 and loss > self.FACTOR * self._first[0]:
      self._warned = True
      print(f'deepl: warning: the run is diverging: the train loss of the window to step '
            f'{step} is {loss:.4g}, over {self.FACTOR}x its first logged value '
            f'({self._first[0]:.4g} at step {self._first[1]}); lower optim.lr or set '
            'optim.clip_norm', file=sys.stderr, flush=True)


def _headline(split: str, metrics: dict) -> str:
  """'test accuracy 98.33% (loss 0.0512)': the accuracy first where the task has one."""
  if 'accuracy' not in metrics:
    return f'{split} {metrics_lib.format_metrics(metrics)}'
  rest = metrics_lib.format_metrics({k: v for k, v in metrics.items() if k != 'accuracy'})
  return f'{split} accuracy {100 * metrics["accuracy"]:.2f}% ({rest})'
