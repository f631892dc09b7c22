"""The one train/eval loop, for every task and model.

  train_and_evaluate(config, workdir)     # config checked by deepl.config.validate

It reads top to bottom in sections: Mesh / Input / Model / Checkpoint /
Update step / Evals / Loop. What a run is made of comes from
deepl/experiment.py, what differs between kinds of problem from the task
(deepl/tasks/). Everything random derives from config.seed; a run stopped at
any moment (SIGTERM, Ctrl-C, kill -9) and started again with the same command
ends with the same params and metrics as one that was never stopped.
"""

import functools
import math
import time

import jax
import optax

from deepl import checkpoint as checkpoint_lib
from deepl import evaluation
from deepl import experiment as experiment_lib
from deepl import kernels
from deepl import metering
from deepl import metrics as metrics_lib
from deepl import parallel
from deepl import workdir as workdir_lib
from deepl.errors import UserError
from deepl.preemption import Preemption
from deepl.state import TrainState


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


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains, evaluates and checkpoints; returns the final eval metrics ({} if stopped early)."""
  kernels.resolve_config(config)  # config.json records the layer set the run uses
  try:
    return _train_and_evaluate(config, workdir)
  finally:  # however it ends; a process's end drops it anyway
    workdir_lib.release(workdir)


def _train_and_evaluate(config, workdir: str) -> dict:
  t_start = time.time()
  primary = jax.process_index() == 0
  num_steps, batch_size = config.train.num_steps, config.train.batch_size
  workdir_lib.prepare(config, workdir)

  # --- Mesh ------------------------------------------------------------------
  runner = parallel.make_runner(config)

  # --- Input -----------------------------------------------------------------
  exp = experiment_lib.build(config, workdir)
  if primary and exp.dataset.label_names:  # what `deepl predict` names the classes
    experiment_lib.save_classes(exp.dataset.label_names, workdir)
  train_iter = exp.train_iterator()

  # --- Model -----------------------------------------------------------------
  state = exp.initial_state(runner)

  # --- Checkpoint ------------------------------------------------------------
  ckpt = checkpoint_lib.Checkpointer(
      workdir_lib.path(workdir) / 'checkpoints', keep=config.checkpoint.keep,
      best_metric=config.checkpoint.best_metric, best_mode=config.checkpoint.best_mode)
  start_step, state, window = _restore(config, workdir, ckpt, runner, state, train_iter)

  # --- Update step -----------------------------------------------------------
  p_train_step = runner.compile_train(functools.partial(train_step, task=exp.task, tx=exp.tx))

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
  with Preemption() as preemption:
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
      if due(config.train.log_every_steps):
        row = exp.task.summarize(metrics_lib.summarize(window.total()))
        _check_finite(row, step, ckpt)
        writer.write(step, 'train', {**row, **meter.row()})
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


def _restore(config, workdir, ckpt, runner, state, train_iter):
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
    params, fresh = checkpoint_lib.init_from(config.init_from, saveable.params)
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


def _check_finite(row: dict, step: int, ckpt) -> None:
  if not math.isfinite(row['loss']):
    raise UserError(f'the train loss became {row["loss"]} by step {step}: lower '
                    'optim.lr or set optim.clip_norm (the last good checkpoint is '
                    f'step {ckpt.latest_step()})')


def _headline(split: str, metrics: dict) -> str:
  """'test accuracy 98.33% (loss 0.0512)': the accuracy first where the task has one."""
  if 'accuracy' not in metrics:
    return f'{split} {metrics_lib.format_metrics(metrics)}'
  rest = metrics_lib.format_metrics({k: v for k, v in metrics.items() if k != 'accuracy'})
  return f'{split} accuracy {100 * metrics["accuracy"]:.2f}% ({rest})'
