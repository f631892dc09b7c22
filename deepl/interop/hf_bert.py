"""BERT as Hugging Face writes it (BertForMaskedLM, BertModel, BertForPreTraining,
BertForSequenceClassification, BertForTokenClassification), as deepl's bert_*.

The original BERT is deepl's BERT with the fields in deepl/models/bert.py's
docstring: post-LN blocks, an embedding LayerNorm, token types, LayerNorm
epsilon 1e-12, [CLS] and [MASK] as token ids. HF's nn.Linear weights are
(out, in). The MLM head's decoder is tied to the word embeddings and its bias
is cls.predictions.bias; a BertModel has no MLM head, so a bert_mlm loaded
from one starts its head fresh (and leaves the pooler, which no bert_mlm has).
"""

import json
import os
import re

import numpy as np

from deepl.interop import hf_mapping
from deepl.interop.hf_mapping import Rule
from deepl.models import bert

NAME = 'BERT'
MODEL_TYPE = 'bert'
# The HF class a folder holds -> the deepl model it loads as. A BertModel or a
# BertForPreTraining loads as a bert_mlm: the same encoder, and the masked-LM
# head wherever the folder has one.
ARCHITECTURES = {
    'BertForMaskedLM': 'bert_mlm', 'BertModel': 'bert_mlm', 'BertForPreTraining': 'bert_mlm',
    'BertForSequenceClassification': 'bert_classifier',
    'BertForTokenClassification': 'bert_token_classifier',
}
# What `save` writes for each deepl model.
SAVED_ARCHITECTURES = {
    bert.BertMLM: 'BertForMaskedLM', bert.BertClassifier: 'BertForSequenceClassification',
    bert.BertTokenClassifier: 'BertForTokenClassification',
}
# The BertFor* classes nest the body under 'bert.'; BertModel does not.
BASE_PREFIX = 'bert.'
# Keys that are no parameter of their own: the decoder tied to the word
# embeddings and its bias tied to cls.predictions.bias, and a buffer older
# checkpoints saved.
IGNORED = re.compile(r'cls\.predictions\.decoder\.(weight|bias)|embeddings\.position_ids')
# The fields that decide a BERT's parameters and numbers: a model to copy HF
# weights into must have the folder's values.
STRUCTURE = ('vocab_size', 'num_layers', 'num_heads', 'width', 'mlp_dim', 'max_len',
             'layer_norm_epsilon', 'gelu_approximate', 'post_norm', 'embed_norm',
             'type_vocab_size', 'learned_cls')
# deepl's classification heads, whose class count may differ from a folder's:
# copied into a model of another count, they start fresh.
HEADS = ('classifier', 'token_classifier')
# [MASK]'s id in every vocabulary Google released with BERT, for a folder
# without a tokenizer to say.
DEFAULT_MASK_ID = 103

_GELU = {'gelu': False, 'gelu_new': True, 'gelu_pytorch_tanh': True}


def owns(model_class: type) -> bool:
  return issubclass(model_class, tuple(SAVED_ARCHITECTURES))


def mask_token_id(folder: str, vocab_size: int) -> int:
  """The id of [MASK] in the folder's tokenizer (tokenizer.json or vocab.txt), else 103."""
  try:
    with open(os.path.join(folder, 'tokenizer.json'), encoding='utf-8') as f:
      for token in json.load(f).get('added_tokens', []):
        if token.get('content') == '[MASK]':
          return int(token['id'])
  except (OSError, ValueError, AttributeError, KeyError, TypeError):
    pass  # no tokenizer.json, or not one that names [MASK]: try the WordPiece vocabulary
  try:
    with open(os.path.join(folder, 'vocab.txt'), encoding='utf-8') as f:
      for index, line in enumerate(f):
        if line.rstrip('\n') == '[MASK]':
          return index
  except OSError:
    pass
  return min(DEFAULT_MASK_ID, vocab_size - 1)


def num_labels(config: dict) -> int:
  """How many classes a classification config has (HF keeps them as id2label)."""
  if config.get('id2label'):
    return len(config['id2label'])
  return int(hf_mapping.setting(config, 'num_labels', 2))


def model_fields(config: dict, architecture: str, where: str, folder: str) -> tuple[str, dict]:
  """(deepl model name, its fields) for a BERT config.json in `folder`."""
  get = lambda key, default: hf_mapping.setting(config, key, default)
  check = lambda key, default, allowed, what: hf_mapping.require(
      config, key, default, allowed, where, what)
  activation = check('hidden_act', 'gelu', tuple(_GELU),
                     "deepl's BERT has the exact GELU or its tanh approximation")
  check('position_embedding_type', 'absolute', ('absolute',),
        "deepl's BERT has learned absolute positions")
  check('is_decoder', False, (False,), "deepl's BERT is an encoder")
  check('add_cross_attention', False, (False,), "deepl's BERT is an encoder")
  name = ARCHITECTURES[architecture]
  vocab_size = get('vocab_size', 30522)
  fields = dict(
      vocab_size=vocab_size, num_layers=get('num_hidden_layers', 12),
      num_heads=get('num_attention_heads', 12), width=get('hidden_size', 768),
      mlp_dim=get('intermediate_size', 3072), max_len=get('max_position_embeddings', 512),
      dropout=float(get('hidden_dropout_prob', 0.1)), gelu_approximate=_GELU[activation],
      mask_token_id=mask_token_id(folder, vocab_size),
      **{**bert.ORIGINAL, 'type_vocab_size': get('type_vocab_size', 2),
         'layer_norm_epsilon': float(get('layer_norm_eps', 1e-12))})
  if name != 'bert_mlm':
    fields['num_classes'] = num_labels(config)
  return name, fields


def unsupported(model) -> list[str]:
  """The fields that keep `model` from being a BERT, as 'field=value' (what they must be)."""
  # Any token types and epsilon will do; the blocks, the embedding and [CLS] must be BERT's.
  wrong = [f'{field}={getattr(model, field)!r} (BERT has {bert.ORIGINAL[field]!r})'
           for field in ('post_norm', 'embed_norm', 'learned_cls')
           if getattr(model, field) != bert.ORIGINAL[field]]
  if not model.mask_token_id:
    wrong.append('mask_token_id=0 (BERT reads [MASK] as a token id: set it to the '
                 "tokenizer's)")
  if getattr(model, 'pool', 'cls') != 'cls':
    wrong.append(f"pool={model.pool!r} (BERT pools the first token: 'cls')")
  return wrong


def to_config(model) -> dict:
  """The config.json of the HF BERT equal to `model`."""
  config = {
      'architectures': [SAVED_ARCHITECTURES[type(model)]], 'model_type': MODEL_TYPE,
      'vocab_size': model.vocab_size, 'hidden_size': model.width,
      'num_hidden_layers': model.num_layers, 'num_attention_heads': model.num_heads,
      'intermediate_size': model.mlp_dim or 4 * model.width,
      'hidden_act': 'gelu_new' if model.gelu_approximate else 'gelu',
      'max_position_embeddings': model.max_len,
      # HF's BERT always adds a token type: a model without them gets one, of zeros
      'type_vocab_size': max(model.type_vocab_size, 1),
      'layer_norm_eps': model.layer_norm_epsilon,
      # deepl has no dropout on the attention probabilities
      'hidden_dropout_prob': model.dropout, 'attention_probs_dropout_prob': 0.0,
      'position_embedding_type': 'absolute', 'pad_token_id': 0,
  }
  if hasattr(model, 'num_classes'):
    config['id2label'] = {str(i): f'LABEL_{i}' for i in range(model.num_classes)}
    config['label2id'] = {f'LABEL_{i}': i for i in range(model.num_classes)}
  return config


def rules(model) -> list[Rule]:
  """Where each of a BERT's parameters sits in an HF BERT state dict."""
  dense = lambda deepl, hf, **layout: hf_mapping.dense(deepl, hf, linear=True, **layout)
  layer_norm = hf_mapping.layer_norm
  encoder = ('encoder',)
  out = [Rule(encoder + ('embed', 'token_embed', 'embedding'), 'embeddings.word_embeddings.weight'),
         Rule(encoder + ('position_embed',), 'embeddings.position_embeddings.weight')]
  if model.type_vocab_size:
    out.append(Rule(encoder + ('token_type_embed',), 'embeddings.token_type_embeddings.weight'))
  if model.embed_norm:
    out += layer_norm(encoder + ('embed_ln',), 'embeddings.LayerNorm')
  for i in range(model.num_layers):
    block, layer = encoder + (f'blocks_{i}',), f'encoder.layer.{i}'
    for name in ('query', 'key', 'value'):
      out += dense(block + ('attn', name), f'{layer}.attention.self.{name}')
    out += dense(block + ('attn', 'out'), f'{layer}.attention.output.dense', in_dims=2)
    out += layer_norm(block + ('ln_attn',), f'{layer}.attention.output.LayerNorm')
    out += dense(block + ('mlp_in',), f'{layer}.intermediate.dense')
    out += dense(block + ('mlp_out',), f'{layer}.output.dense')
    out += layer_norm(block + ('ln_mlp',), f'{layer}.output.LayerNorm')
  if isinstance(model, bert.BertMLM):
    out += dense(('mlm_dense',), 'cls.predictions.transform.dense')
    out += layer_norm(('mlm_ln',), 'cls.predictions.transform.LayerNorm')
    out.append(Rule(('mlm_bias',), 'cls.predictions.bias'))
  elif isinstance(model, bert.BertClassifier):
    out += dense(('pooler',), 'pooler.dense')
    out += dense(('classifier',), 'classifier')
  else:
    out += dense(('token_classifier',), 'classifier')
  return out


def is_head(key: str) -> bool:
  """Whether an HF key lies outside the base model (so takes no BASE_PREFIX)."""
  return key.startswith(('cls.', 'classifier.'))


def constants(model) -> dict:
  """HF tensors that deepl's model has no parameter for but HF needs: token types of zeros."""
  if model.type_vocab_size:
    return {}
  return {'embeddings.token_type_embeddings.weight': np.zeros((1, model.width), np.float32)}
