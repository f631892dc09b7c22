"""Text generation from any causal LM in the codebase.

A model qualifies if it has the incremental-decoding methods
  cache = model.apply(variables, batch_size, method='init_cache')
  logits, cache = model.apply(variables, tokens (b, t), cache, method='decode')
(recurrent models carry their states in the cache, transformers their keys and
values). `generate` feeds the prompt once, then one token per step; every
random draw comes from fold_in(PRNGKey(seed), position), so the same seed gives
the same text.
"""

import functools

import jax
import jax.numpy as jnp

from deepl import config as config_lib
from deepl import trained_run
from deepl.errors import UserError


def filter_logits(logits, *, temperature: float, top_k: int = 0, top_p: float = 1.0):
  """Logits (..., V) scaled by 1/temperature, outside top-k / nucleus set to -inf."""
  logits = logits.astype(jnp.float32) / temperature
  if top_k:
    kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  if top_p < 1.0:
    sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    # Keep a token if the mass of the tokens strictly ahead of it is < top_p:
    # the smallest set reaching top_p, never empty.
    ahead = jnp.cumsum(probs, axis=-1) - probs
    cutoff = jnp.min(jnp.where(ahead < top_p, sorted_logits, jnp.inf), axis=-1, keepdims=True)
    logits = jnp.where(logits < cutoff, -jnp.inf, logits)
  return logits


def generate(model, params, prompt_ids, length: int, *, temperature: float = 1.0,
             top_k: int = 0, top_p: float = 1.0, seed: int = 0) -> list[int]:
  """`length` new token ids after `prompt_ids` (a non-empty list of ints)."""
  variables = {'params': params}
  cache = model.apply(variables, 1, method='init_cache')
  prompt = jnp.asarray(prompt_ids, jnp.int32)[None]
  logits, cache = jax.jit(functools.partial(model.apply, method='decode'))(
      variables, prompt, cache)
  filt = functools.partial(filter_logits, temperature=temperature, top_k=top_k, top_p=top_p)

  @jax.jit
  def draw(logits, position):
    key = jax.random.fold_in(jax.random.PRNGKey(seed), position)
    return jax.random.categorical(key, filt(logits[:, -1]))

  @jax.jit
  def step(cache, token):
    return model.apply(variables, token[:, None], cache, method='decode')

  out = []
  for i in range(length):
    token = draw(logits, i)
    out.append(int(token[0]))
    if i + 1 < length:
      logits, cache = step(cache, token)
  return out


def _load_language_model(workdir: str, step: int | None) -> trained_run.TrainedRun:
  config = config_lib.load_run_config(workdir)
  if config.task != 'causal_lm':
    hint = ("sample from a run trained with task='causal_lm'"
            if config.task not in trained_run.PREDICTS else
            'deepl predict runs seq2seq models and classifiers on your input')
    raise UserError(f"{workdir} holds a '{config.task}' run, not a language model: {hint}")
  return trained_run.load(workdir, config, step)


def check_options(*, prompt: str, length: int, temperature: float, top_k: int, top_p: float):
  if not prompt:
    raise UserError('--prompt is empty: give some text to continue, e.g. --prompt="ROMEO:"')
  if length <= 0:
    raise UserError(f'--length={length}: give a positive number of tokens to generate')
  if not temperature > 0:
    raise UserError(f'--temperature={temperature}: use a temperature > 0 (1.0 samples '
                    'the model as is; lower is greedier)')
  if top_k < 0:
    raise UserError(f'--top_k={top_k}: use 0 (off) or a positive number of tokens')
  if not 0 < top_p <= 1:
    raise UserError(f'--top_p={top_p}: use a probability in (0, 1] (1 is off)')


def sample_text(workdir: str, *, prompt: str, length: int, temperature: float = 1.0,
                top_k: int = 0, top_p: float = 1.0, seed: int = 0,
                step: int | None = None) -> str:
  """The prompt followed by `length` generated tokens from checkpoint `step` (default newest)."""
  check_options(prompt=prompt, length=length, temperature=temperature, top_k=top_k, top_p=top_p)
  run = _load_language_model(workdir, step)
  tokenizer, model = run.tokenizer, run.task.model
  try:
    prompt_ids = tokenizer.encode(prompt)
  except ValueError as err:
    raise UserError(f'--prompt: {err}') from None
  if not prompt_ids:
    raise UserError('--prompt encodes to no tokens: give some text to continue')
  max_len = getattr(model, 'max_len', None)  # transformers have a fixed context
  if max_len and len(prompt_ids) + length - 1 > max_len:
    raise UserError(f'the prompt ({len(prompt_ids)} tokens) plus --length={length} is longer '
                    f"than the model's context of {max_len} tokens: shorten one of them")
  new = generate(model, run.variables['params'], prompt_ids, length, temperature=temperature,
                 top_k=min(top_k, tokenizer.vocab_size), top_p=top_p, seed=seed)
  return prompt + tokenizer.decode(new)
