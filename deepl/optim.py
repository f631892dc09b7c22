"""Optimizer factory: one `optim` config in, one optax transformation out.

The chain is always

  clip_by_global_norm -> base (SGD momentum | Adam moments)
    -> masked decoupled weight decay -> scale by -schedule

wrapped in `optax.MultiSteps` when `accum_steps > 1`. Weight decay is added to
the update before the learning-rate scaling, so it is scaled by the schedule
(decoupled, as in AdamW) and it never touches biases or norm scales.

Step counts in the config (`num_steps`, `warmup_steps`) count train-step
calls, i.e. micro-batches. The schedule itself counts applied updates, so with
accumulation both are divided by `accum_steps` when the schedule is built.
"""

import math
import numbers

import jax
import jax.numpy as jnp
import optax

from deepl.errors import suggest
from deepl.errors import UserError

NAMES = ('sgd', 'adamw')
SCHEDULES = ('constant', 'step', 'warmup_cosine')


def decay_mask(params):
  """True for leaves that get weight decay: ndim >= 2 (kernels, embeddings).

  Biases and norm scales/offsets are 1-D; decaying them only hurts, so they
  are left out.
  """
  return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


def make_schedule(cfg, num_steps: int) -> optax.Schedule:
  """Learning rate as a function of the number of updates applied so far.

  Args:
    cfg: the `optim` config (attribute access; keys as in deepl/config.py).
    num_steps: number of train-step calls (micro-batches) in the run.

  Returns:
    A schedule over applied updates; its horizon is num_steps // accum_steps.
  """
  k = cfg.accum_steps
  horizon = num_steps // k
  warmup = cfg.warmup_steps // k
  peak = float(cfg.lr)
  # Boundaries are fractions of the whole run, warmup included; round() so
  # that e.g. 0.29 * 100 lands on 29, not 28.
  boundaries = [round(f * horizon) for f in cfg.step_boundaries]
  end = peak * cfg.end_lr_ratio
  # Read everything now: a later edit of cfg must not change a built schedule.
  kind, factor = cfg.schedule, float(cfg.step_factor)

  def schedule(count):
    count = jnp.asarray(count, jnp.float32)
    if kind == 'constant':
      lr = jnp.full_like(count, peak)
    elif kind == 'step':
      lr = jnp.full_like(count, peak)
      for b in boundaries:
        lr = jnp.where(count >= b, lr * factor, lr)
    else:  # warmup_cosine: the cosine runs from the end of warmup to horizon.
      t = jnp.clip((count - warmup) / max(horizon - warmup, 1), 0.0, 1.0)
      lr = end + (peak - end) * 0.5 * (1.0 + jnp.cos(jnp.pi * t))
    if warmup > 0:
      lr = lr * jnp.minimum(1.0, count / warmup)
    return lr

  return schedule


def make_optimizer(cfg, num_steps: int) -> optax.GradientTransformation:
  """Builds the optimizer described by the `optim` config.

  Args:
    cfg: the `optim` config (attribute access; keys as in deepl/config.py).
    num_steps: number of train-step calls (micro-batches) in the run.

  Returns:
    An optax GradientTransformation; with accum_steps > 1 it applies the mean
    gradient of every accum_steps consecutive calls and returns zero updates
    in between. `cfg` is taken as `validate` passed it.
  """
  schedule = make_schedule(cfg, num_steps)
  parts = []
  if cfg.clip_norm > 0:
    parts.append(optax.clip_by_global_norm(cfg.clip_norm))
  if cfg.name == 'sgd':
    if cfg.momentum > 0:
      parts.append(optax.trace(decay=cfg.momentum, nesterov=cfg.nesterov))
  else:
    parts.append(optax.scale_by_adam(b1=cfg.b1, b2=cfg.b2, eps=cfg.eps))
  if cfg.weight_decay > 0:
    parts.append(optax.add_decayed_weights(cfg.weight_decay, mask=decay_mask))
  parts.append(optax.scale_by_learning_rate(schedule))
  tx = optax.chain(*parts)
  if cfg.accum_steps > 1:
    # The inner state (and so the schedule count) only advances on the calls
    # that apply an update.
    tx = optax.MultiSteps(tx, every_k_schedule=cfg.accum_steps)
    tx = tx.gradient_transformation()
  return tx


def _choice(key, value, choices):
  if value in choices:
    return
  hint = suggest(value, choices, cutoff=0.5) or ' —'
  raise UserError(f'optim.{key}={value!r} is unknown{hint} '
                  f'choose one of: {", ".join(choices)}')


def _require(ok, key, value, fix):
  if not ok:
    raise UserError(f'optim.{key}={value!r} is invalid — {fix}')


def _is_int(x):
  return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def validate(cfg, num_steps):
  """Raises UserError naming the first bad key of an `optim` config (for deepl.config.validate).

  `not x > 0` also catches NaN.
  """
  _choice('name', cfg.name, NAMES)
  _choice('schedule', cfg.schedule, SCHEDULES)
  _require(cfg.lr > 0 and math.isfinite(cfg.lr), 'lr', cfg.lr,
           'set a finite peak learning rate > 0, e.g. 0.1')
  _require(0 <= cfg.momentum < 1, 'momentum', cfg.momentum,
           'use a value in [0, 1); 0.0 means plain SGD')
  _require(0 <= cfg.b1 < 1, 'b1', cfg.b1, 'use a value in [0, 1), e.g. 0.9')
  _require(0 <= cfg.b2 < 1, 'b2', cfg.b2, 'use a value in [0, 1), e.g. 0.999')
  _require(cfg.eps > 0, 'eps', cfg.eps, 'use a small value > 0, e.g. 1e-8')
  _require(cfg.weight_decay >= 0, 'weight_decay', cfg.weight_decay,
           'use a value >= 0; 0.0 turns weight decay off')
  _require(cfg.clip_norm >= 0, 'clip_norm', cfg.clip_norm,
           'use a value >= 0; 0.0 turns clipping off')
  _require(_is_int(cfg.accum_steps) and cfg.accum_steps >= 1, 'accum_steps',
           cfg.accum_steps, 'use an integer >= 1; 1 turns accumulation off')
  if not (_is_int(num_steps) and num_steps >= cfg.accum_steps):
    raise UserError(f'num_steps={num_steps!r} is invalid — use an integer >= '
                    f'optim.accum_steps={cfg.accum_steps}, or no update is '
                    'ever applied')
  # A warmup longer than the run is allowed (the lr then never peaks): short
  # smoke runs of a long experiment should not need a second override.
  _require(_is_int(cfg.warmup_steps) and cfg.warmup_steps >= 0,
           'warmup_steps', cfg.warmup_steps, 'use an integer >= 0')
  bounds = list(cfg.step_boundaries)
  _require(all(0 <= b <= 1 for b in bounds) and bounds == sorted(bounds),
           'step_boundaries', tuple(bounds),
           'use increasing fractions of num_steps in [0, 1], e.g. (0.5, 0.75)')
  _require(cfg.step_factor > 0, 'step_factor', cfg.step_factor,
           'use a factor > 0, e.g. 0.1')
  _require(cfg.end_lr_ratio >= 0, 'end_lr_ratio', cfg.end_lr_ratio,
           'use a ratio >= 0; 0.0 decays the lr to zero')
