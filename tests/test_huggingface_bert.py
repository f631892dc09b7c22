"""deepl's BERTs against transformers': random BertForMaskedLM,
BertForSequenceClassification and BertForTokenClassification models loaded
with deepl.interop.huggingface give their logits and losses on padded
`[CLS] ... [SEP]` inputs with token types, and save back to folders
transformers loads with no missing or unexpected key (ten AdamW steps:
test_huggingface_adamw.py). A BertModel loads as a
bert_mlm with the same encoder and a fresh MLM head.

The HF models are built offline from a config (tests/hf_reference.py).
"""

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepl.interop import huggingface
from deepl.models import bert
from tests import hf_reference as ref

torch, transformers = ref.torch, ref.transformers

MASK, NUM_LABELS, BERTS = ref.MASK, ref.NUM_LABELS, ref.BERTS


@functools.cache
def _loaded(kind, folder):
  return huggingface.load(folder)


@pytest.fixture(scope='module')
def folders(tmp_path_factory):
  """kind -> (HF model, its folder)."""
  out = {}
  for kind in BERTS:
    folder = tmp_path_factory.mktemp(kind)
    out[kind] = (ref.bert_folder(kind, folder), folder)
  return out


def test_fields_come_from_the_config(folders):
  model, _ = _loaded('mlm', folders['mlm'][1])
  assert isinstance(model, bert.BertMLM)
  assert (model.vocab_size, model.num_layers, model.num_heads, model.width, model.mlp_dim,
          model.max_len) == (ref.VOCAB, ref.LAYERS, ref.HEADS, ref.WIDTH, 100, ref.CONTEXT)
  assert (model.post_norm, model.embed_norm, model.learned_cls, model.type_vocab_size,
          model.layer_norm_epsilon, model.gelu_approximate) == (True, True, False, 2, 1e-12, False)
  assert model.mask_token_id == MASK  # from the folder's vocab.txt
  classifier, _ = _loaded('sequence', folders['sequence'][1])
  assert isinstance(classifier, bert.BertClassifier) and classifier.num_classes == NUM_LABELS


@pytest.mark.parametrize('kind', BERTS)
def test_logits_and_loss_equal_transformers(kind, folders):
  hf_model, folder = folders[kind]
  model, variables = _loaded(kind, folder)
  b = ref.bert_batch(0)
  loss, logits = jax.jit(functools.partial(ref.bert_deepl_loss, kind, model, train=False))(
      variables['params'], {k: jnp.asarray(v) for k, v in b.items()})
  with torch.no_grad():
    out = ref.bert_hf_call(kind, hf_model, b)
  theirs = out.logits.numpy()
  if kind != 'sequence':  # positions past a sentence's end are meaningless on both sides
    logits, theirs = np.asarray(logits)[b['valid']], theirs[b['valid']]
  diff, rel = ref.relative(logits, theirs)
  print(f'BERT {kind} logits: max abs diff {diff:.3g}, relative to the largest {rel:.3g}; '
        f'loss {float(loss):.7f} vs {out.loss.item():.7f}')
  np.testing.assert_allclose(logits, theirs, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(float(loss), out.loss.item(), rtol=1e-6)


@pytest.mark.parametrize('kind', BERTS)
def test_save_then_from_pretrained_then_load_is_bit_exact(kind, folders, tmp_path):
  model, variables = _loaded(kind, folders[kind][1])
  huggingface.save(model, variables, tmp_path / 'ours')
  reloaded, info = BERTS[kind][1].from_pretrained(tmp_path / 'ours', output_loading_info=True)
  assert type(reloaded) is BERTS[kind][0]
  assert not (info['missing_keys'] or info['unexpected_keys'] or info['mismatched_keys'])
  reloaded.save_pretrained(tmp_path / 'theirs')
  ref.save_vocabulary(tmp_path / 'theirs')
  again, variables_again = huggingface.load(tmp_path / 'theirs')
  assert again == model
  jax.tree.map(np.testing.assert_array_equal, variables_again, variables)


def test_a_bert_model_loads_as_bert_mlm_with_a_fresh_head(tmp_path):
  hf_model = ref.bert(transformers.BertModel, tmp_path)
  with pytest.warns(UserWarning, match=r'initialised fresh: mlm_dense/kernel.*'
                    r'no part of a deepl bert_mlm: pooler\.dense\.bias'):
    model, variables = huggingface.load(tmp_path)
  assert isinstance(model, bert.BertMLM)
  b = ref.bert_batch(1)


  @jax.jit
  def encode(variables, tokens, lengths, types):
    _, state = model.apply(variables, tokens, lengths, train=False, token_types=types,
                           capture_intermediates=lambda m, _: isinstance(m, bert.BertEncoder))
    return state['intermediates']['encoder']['__call__'][0]

  hidden = encode(variables, b['tokens'], b['lengths'], b['types'])
  with torch.no_grad():
    theirs = hf_model(torch.tensor(b['tokens']), attention_mask=torch.tensor(
        b['valid'].astype(np.int64)), token_type_ids=torch.tensor(b['types'])).last_hidden_state
  np.testing.assert_allclose(np.asarray(hidden)[b['valid']], theirs.numpy()[b['valid']],
                             rtol=1e-4, atol=1e-5)
  with warnings.catch_warnings():
    warnings.simplefilter('error')  # nothing left to warn of once saved with its head
    huggingface.save(model, variables, tmp_path / 'mlm')
    huggingface.load(tmp_path / 'mlm')
