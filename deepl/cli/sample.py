"""`deepl sample`: text from a trained causal language model.

  deepl sample --workdir=runs/shakespeare_lstm --prompt="ROMEO:" --length=500 \
      [--temperature=0.8 --top_k=40 --top_p=0.9 --seed=0 --step=1000]

Prints the prompt and its continuation; the same seed gives the same text
(deepl.inference.decoding.generate).
"""

from deepl.errors import UserError
from deepl.inference import decoding
from deepl.inference import trained_run

READS_A_RUN = '<a language-model run>, e.g. --workdir=runs/shakespeare_lstm'


def run(config, workdir: str, flags) -> None:
  print(sample_text(config, workdir, prompt=flags.prompt or '', length=flags.length,
                    temperature=flags.temperature, top_k=flags.top_k, top_p=flags.top_p,
                    seed=flags.seed, step=flags.step))


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


def sample_text(config, workdir: str, *, prompt: str, length: int, temperature: float = 1.0,
                top_k: int = 0, top_p: float = 1.0, seed: int = 0,
                step: int | None = None) -> str:
  """The prompt followed by `length` generated tokens from checkpoint `step` (default newest).

  `config` is the run's config.json.
  """
  check_options(prompt=prompt, length=length, temperature=temperature, top_k=top_k, top_p=top_p)
  if config.task != 'causal_lm':
    hint = ("sample from a run trained with task='causal_lm'"
            if config.task not in trained_run.PREDICTS else
            'deepl predict runs seq2seq models and classifiers on your input')
    raise UserError(f"{workdir} holds a '{config.task}' run, not a language model: {hint}")
  trained = trained_run.load(workdir, config, step)
  tokenizer, model = trained.tokenizer, trained.task.model
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
  new = decoding.generate(model, trained.variables['params'], prompt_ids, length,
                          temperature=temperature, top_k=min(top_k, tokenizer.vocab_size),
                          top_p=top_p, seed=seed)
  return prompt + tokenizer.decode(new)
