"""GPT-2 as Hugging Face writes it (GPT2LMHeadModel, GPT2Model), as deepl's `gpt`.

HF's GPT2Config maps onto the gpt fields: learned positions, biases, the
tanh GELU (activation 'gelu_new'), its LayerNorm epsilon, tied embeddings
(an untied lm_head is the `head` kernel), one dropout rate (resid_pdrop;
deepl has no dropout on the attention probabilities). Its Conv1D weights are
already (in, out); c_attn holds q, k and v side by side.
"""

import re

from deepl.interop import hf_mapping
from deepl.interop.hf_mapping import Rule
from deepl.models import gpt

NAME = 'GPT-2'
MODEL_TYPE = 'gpt2'
# The HF class a folder holds -> the deepl model it loads as.
ARCHITECTURES = {'GPT2LMHeadModel': 'gpt', 'GPT2Model': 'gpt'}
# What `save` writes: the class with the output layer, which deepl's gpt always has.
SAVED_ARCHITECTURE = 'GPT2LMHeadModel'
# GPT2LMHeadModel nests the body under 'transformer.'; GPT2Model and OpenAI's
# original checkpoint do not.
BASE_PREFIX = 'transformer.'
# Keys that are no parameter of their own: the tied output layer, and the
# causal-mask buffers older checkpoints saved.
IGNORED = re.compile(r'lm_head\.weight|h\.\d+\.attn\.(bias|masked_bias)')
# The fields that decide a gpt's parameters and numbers: a model to copy HF
# weights into must have the folder's values.
STRUCTURE = ('vocab_size', 'num_layers', 'num_heads', 'width', 'mlp_dim', 'max_len', 'position',
             'tie_embeddings', 'use_bias', 'layer_norm_epsilon', 'gelu_approximate')
# No classification head: every parameter must match.
HEADS = ()

_GELU = {'gelu_new': True, 'gelu_pytorch_tanh': True, 'gelu': False}


def owns(model_class: type) -> bool:
  return issubclass(model_class, gpt.GPT)


def model_fields(config: dict, architecture: str, where: str, folder: str) -> tuple[str, dict]:
  """(deepl model name, its fields) for a GPT-2 config.json."""
  del folder  # GPT-2's special tokens are no field of the model
  get = lambda key, default: hf_mapping.setting(config, key, default)
  check = lambda key, default, allowed, what: hf_mapping.require(
      config, key, default, allowed, where, what)
  activation = check('activation_function', 'gelu_new', tuple(_GELU),
                     "deepl's gpt has the exact GELU or its tanh approximation")
  check('scale_attn_weights', True, (True,), 'deepl scales attention by 1/sqrt(head_dim)')
  check('scale_attn_by_inverse_layer_idx', False, (False,),
        'deepl scales every layer\'s attention alike')
  check('add_cross_attention', False, (False,), "deepl's gpt is decoder-only")
  width = get('n_embd', 768)
  return ARCHITECTURES[architecture], dict(
      vocab_size=get('vocab_size', 50257), num_layers=get('n_layer', 12),
      num_heads=get('n_head', 12), width=width, mlp_dim=get('n_inner', 0),
      max_len=get('n_positions', 1024), dropout=float(get('resid_pdrop', 0.1)),
      position='learned', tie_embeddings=bool(get('tie_word_embeddings', True)),
      use_bias=True, layer_norm_epsilon=float(get('layer_norm_epsilon', 1e-5)),
      gelu_approximate=_GELU[activation])


def unsupported(model) -> list[str]:
  """The fields that keep `model` from being a GPT-2, as 'field=value' (what they must be)."""
  wrong = []
  if model.position != 'learned':
    wrong.append(f"position={model.position!r} (GPT-2's are 'learned')")
  if not model.use_bias:
    wrong.append('use_bias=False (GPT-2 has biases)')
  return wrong


def to_config(model) -> dict:
  """The config.json of a GPT2LMHeadModel equal to `model`."""
  return {
      'architectures': [SAVED_ARCHITECTURE], 'model_type': MODEL_TYPE,
      'vocab_size': model.vocab_size, 'n_positions': model.max_len, 'n_embd': model.width,
      'n_layer': model.num_layers, 'n_head': model.num_heads,
      'n_inner': model.mlp_dim or None,
      'activation_function': 'gelu_new' if model.gelu_approximate else 'gelu',
      'layer_norm_epsilon': model.layer_norm_epsilon,
      'tie_word_embeddings': model.tie_embeddings,
      # deepl drops after the embedding and on the residual branches only
      'resid_pdrop': model.dropout, 'embd_pdrop': model.dropout, 'attn_pdrop': 0.0,
      'scale_attn_weights': True, 'scale_attn_by_inverse_layer_idx': False,
      # GPT2Config's default 50256 is GPT-2's own <|endoftext|>: no id of another vocabulary
      'bos_token_id': None, 'eos_token_id': None,
  }


def rules(model) -> list[Rule]:
  """Where each of a gpt's parameters sits in a GPT-2 state dict."""
  dense, layer_norm = hf_mapping.dense, hf_mapping.layer_norm
  out = [Rule(('embed', 'token_embed', 'embedding'), 'wte.weight'),
         Rule(('embed', 'position_embed', 'embedding'), 'wpe.weight')]
  for i in range(model.num_layers):
    block, h = (f'blocks_{i}',), f'h.{i}'
    out += layer_norm(block + ('ln_attn',), f'{h}.ln_1')
    for part, name in enumerate(('query', 'key', 'value')):
      out += dense(block + ('attn', name), f'{h}.attn.c_attn', part=(part, 3))
    out += dense(block + ('attn', 'out'), f'{h}.attn.c_proj', in_dims=2)
    out += layer_norm(block + ('ln_mlp',), f'{h}.ln_2')
    out += dense(block + ('mlp_in',), f'{h}.mlp.c_fc')
    out += dense(block + ('mlp_out',), f'{h}.mlp.c_proj')
  out += layer_norm(('ln_f',), 'ln_f')
  if not model.tie_embeddings:
    out.append(Rule(('embed', 'head', 'kernel'), 'lm_head.weight', linear=True))
  return out


def is_head(key: str) -> bool:
  """Whether an HF key lies outside the base model (so takes no BASE_PREFIX)."""
  return key.startswith('lm_head.')


def constants(model) -> dict:
  """HF tensors that deepl's model has no parameter for: none for GPT-2."""
  del model
  return {}
