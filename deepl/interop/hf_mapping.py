"""How deepl's models map onto Hugging Face's: parameters both ways, config values.

A family (hf_gpt2, hf_bert) lists one `Rule` per deepl parameter: its path in
deepl's params, the HF key holding it, and how the two arrays' layouts
differ. `to_deepl` and `to_hf` read the same rules in opposite directions, so
loading and saving can never disagree about a name or a transposition.

Layouts: deepl keeps a kernel as (inputs..., outputs...), e.g. an attention
query (W, h, d) and its output (h, d, W). HF keeps a matrix 2-D: torch's
nn.Linear as (out, in) (`linear=True`: transposed), GPT-2's Conv1D as
(in, out) already. A rule's `in_dims` says how many leading deepl axes are the
matrix's inputs. Biases and LayerNorm scales are 1-D in HF; deepl's attention
biases are (h, d). GPT-2 fuses q, k and v into one c_attn matrix: each of
their rules takes its `part` of the HF tensor's last axis.
"""

import dataclasses
import math

import numpy as np

from deepl.errors import UserError


@dataclasses.dataclass(frozen=True)
class Rule:
  """One deepl parameter and the HF tensor (or slice of one) that holds it.

  Attributes:
    deepl: the parameter's path under deepl's params, e.g.
      ('blocks_0', 'attn', 'query', 'kernel').
    hf: its key in the HF state dict, with the base model's prefix
      ('transformer.', 'bert.') left off.
    linear: the HF tensor is a torch nn.Linear weight, (out, in).
    in_dims: how many leading axes of the deepl kernel are the HF matrix's
      input rows (2 for an attention output kernel (h, d, W)).
    part: (i, n): the parameter is the i-th of n equal slices of the HF
      tensor's last axis (GPT-2's fused c_attn).
  """
  deepl: tuple[str, ...]
  hf: str
  linear: bool = False
  in_dims: int = 1
  part: tuple[int, int] | None = None


@dataclasses.dataclass(frozen=True)
class Mismatch:
  """An HF tensor whose shape is not the one the deepl parameter needs."""
  rule: Rule
  hf_shape: tuple[int, ...]
  expected: tuple[int, ...]

  def __str__(self):
    return (f'{self.rule.hf} has shape {self.hf_shape}, the model needs {self.expected} '
            f'(for params/{"/".join(self.rule.deepl)})')


def _is_vector(rule: Rule, shape) -> bool:
  """Whether HF stores the parameter 1-D: biases, LayerNorm scales, any 1-D array."""
  return rule.deepl[-1] in ('bias', 'scale') or len(shape) == 1


def _flat_shape(rule: Rule, shape) -> tuple[int, ...]:
  """A deepl array of `shape` as HF's tensor before any transposition: 1-D or (in, out)."""
  if _is_vector(rule, shape):
    return (math.prod(shape),)
  return (math.prod(shape[:rule.in_dims]), math.prod(shape[rule.in_dims:]))


def _hf_shape(rule: Rule, shape) -> tuple[int, ...]:
  """The shape of the whole HF tensor that holds (a part of it as) a deepl array of `shape`."""
  hf = _flat_shape(rule, shape)
  if rule.linear:
    hf = hf[::-1]
  if rule.part:
    hf = hf[:-1] + (hf[-1] * rule.part[1],)
  return hf


def to_deepl(rules, state_dict: dict, shapes: dict):
  """The deepl arrays the HF `state_dict` holds for `rules`.

  Args:
    rules: the model's Rules.
    state_dict: HF key (without the base prefix) -> numpy array.
    shapes: deepl path -> the shape the model needs there.

  Returns:
    (flat, missing, mismatched, used): flat maps deepl paths to float32 numpy
    arrays; missing lists the rules whose HF key is absent; mismatched the
    Mismatch of every tensor of the wrong shape; used the HF keys read.
  """
  flat, missing, mismatched, used = {}, [], [], set()
  for rule in rules:
    if rule.hf not in state_dict:
      missing.append(rule)
      continue
    used.add(rule.hf)
    x = np.asarray(state_dict[rule.hf])
    expected = _hf_shape(rule, shapes[rule.deepl])
    if x.shape != expected:
      mismatched.append(Mismatch(rule, x.shape, expected))
      continue
    if rule.part:
      index, count = rule.part
      x = np.split(x, count, axis=-1)[index]
    if rule.linear and x.ndim == 2:
      x = x.T
    flat[rule.deepl] = np.asarray(x, np.float32).reshape(shapes[rule.deepl])
  return flat, missing, mismatched, used


def to_hf(rules, flat: dict) -> dict[str, np.ndarray]:
  """The HF state dict (keys without the base prefix) of deepl's flat params.

  Every array float32 and C-contiguous, as safetensors writes them.
  """
  parts = {}
  for rule in rules:
    x = np.asarray(flat[rule.deepl], np.float32)
    x = x.reshape(_flat_shape(rule, x.shape))
    if rule.linear and x.ndim == 2:
      x = x.T
    parts.setdefault(rule.hf, []).append(((rule.part or (0, 1))[0], x))
  return {key: np.ascontiguousarray(np.concatenate(
      [x for _, x in sorted(pieces, key=lambda piece: piece[0])], axis=-1))
          for key, pieces in parts.items()}


def dense(deepl: tuple[str, ...], hf: str, **layout) -> list[Rule]:
  """A dense layer's kernel and bias: deepl's 'kernel'/'bias', HF's 'weight'/'bias'."""
  return [Rule(deepl + ('kernel',), f'{hf}.weight', **layout),
          Rule(deepl + ('bias',), f'{hf}.bias', part=layout.get('part'))]


def layer_norm(deepl: tuple[str, ...], hf: str) -> list[Rule]:
  """A LayerNorm: deepl's 'scale'/'bias', HF's 'weight'/'bias'."""
  return [Rule(deepl + ('scale',), f'{hf}.weight'), Rule(deepl + ('bias',), f'{hf}.bias')]


def setting(config: dict, key: str, default):
  """config[key], or HF's default for a key a config.json left out (older files do)."""
  value = config.get(key)
  return default if value is None else value


def require(config: dict, key: str, default, allowed, where: str, what: str):
  """config[key] (or its default); UserError unless it is one of `allowed`."""
  value = setting(config, key, default)
  if value not in allowed:
    raise UserError(f'{where}: {key}={value!r} is not supported: {what} '
                    f'({key} must be {" or ".join(map(repr, allowed))})')
  return value
