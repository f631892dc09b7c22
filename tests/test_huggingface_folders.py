"""deepl.interop.huggingface's folders: bad input as one UserError line each, the
other layouts a folder comes in (pytorch_model.bin, shards, older key names),
copying a folder into an existing model's params (init_from='hf:PATH'), and
no transformers or torch at run time.

Most folders here are written by deepl itself (huggingface.save); the
parity tests with transformers are test_huggingface_gpt2.py and _bert.py.
"""

import json
import os
import subprocess
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy

from deepl import models
from deepl.errors import UserError
from deepl.interop import huggingface
from deepl.models import bert
from tests import hf_reference as ref

pytestmark = pytest.mark.usefixtures('fast_compile')  # short runs, compared among themselves

torch, transformers = ref.torch, ref.transformers

SMALL = dict(vocab_size=11, num_layers=1, num_heads=2, width=8, max_len=6)
ORIGINAL_BERT = dict(bert.ORIGINAL, mask_token_id=4)


def _init(model):
  tokens = np.ones((1, 4), np.int32)
  return jax.jit(lambda: model.init(jax.random.PRNGKey(1), tokens, train=False))()


def _shapes(model):
  """A model's params as shapes only: enough for load_params to refuse them."""
  tokens = np.ones((1, 4), np.int32)
  return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(1), tokens, train=False))['params']


@pytest.fixture(scope='module')
def gpt_folder(tmp_path_factory):
  """(model, variables, folder) of a small GPT-2 that deepl saved."""
  folder = tmp_path_factory.mktemp('gpt')
  model = models.build('gpt', gelu_approximate=True, **SMALL)
  variables = _init(model)
  huggingface.save(model, variables, folder)
  return model, variables, folder


@pytest.fixture(scope='module')
def bert_folder(tmp_path_factory):
  folder = tmp_path_factory.mktemp('bert')
  model = models.build('bert_mlm', **SMALL, **ORIGINAL_BERT)
  variables = _init(model)
  huggingface.save(model, variables, folder)
  return model, variables, folder


def _copy(folder, to, config=None, weights=None):
  """`folder` copied to `to`, with config.json updated by `config` and the state dict
  replaced by `weights(state dict)`."""
  os.makedirs(to)
  with open(folder / 'config.json') as f:
    saved = json.load(f)
  (to / 'config.json').write_text(json.dumps({**saved, **(config or {})}))
  state = safetensors.numpy.load_file(folder / 'model.safetensors')
  safetensors.numpy.save_file(weights(state) if weights else state, to / 'model.safetensors')
  return to


def _one_line(err):
  message = str(err.value)
  assert '\n' not in message
  return message


# ------------------------------------------------------------------ bad input


def test_a_missing_folder(tmp_path):
  with pytest.raises(UserError, match='nowhere is not a folder: give a Hugging Face model') as err:
    huggingface.load(tmp_path / 'nowhere')
  _one_line(err)


def test_a_folder_without_weights(gpt_folder, tmp_path):
  (tmp_path / 'config.json').write_text((gpt_folder[2] / 'config.json').read_text())
  with pytest.raises(UserError, match=r'holds no weights \(model.safetensors, '
                     r'model.safetensors.index.json or pytorch_model.bin\)') as err:
    huggingface.load(tmp_path)
  _one_line(err)
  os.remove(tmp_path / 'config.json')
  with pytest.raises(UserError, match='has no config.json'):
    huggingface.load(tmp_path)


@pytest.mark.parametrize('config,message', [
    ({'model_type': 'llama', 'architectures': ['LlamaForCausalLM']},
     r"model_type 'llama' is not supported: deepl reads 'gpt2' and 'bert' folders"),
    ({'architectures': ['GPT2ForSequenceClassification']},
     r"architecture 'GPT2ForSequenceClassification' is not supported: deepl reads "
     r"GPT2LMHeadModel, GPT2Model for model_type 'gpt2'"),
    ({'activation_function': 'relu'},
     r"activation_function='relu' is not supported: deepl's gpt has the exact GELU or its "
     r"tanh approximation"),
])
def test_an_unsupported_model(gpt_folder, tmp_path, config, message):
  folder = _copy(gpt_folder[2], tmp_path / 'other', config)
  with pytest.raises(UserError, match=message) as err:
    huggingface.load(folder)
  assert str(folder / 'config.json') in _one_line(err)


def test_a_truncated_safetensors_file(gpt_folder, tmp_path):
  folder = _copy(gpt_folder[2], tmp_path / 'cut')
  data = (folder / 'model.safetensors').read_bytes()
  (folder / 'model.safetensors').write_bytes(data[:len(data) // 2])
  with pytest.raises(UserError, match=r'model.safetensors is damaged or incomplete \(.*\): '
                     'download or save it again') as err:
    huggingface.load(folder)
  _one_line(err)


def test_weights_of_another_shape_than_the_config_says(gpt_folder, tmp_path):
  folder = _copy(gpt_folder[2], tmp_path / 'wide', {'n_embd': 12, 'n_head': 3})
  with pytest.raises(UserError, match=r'model.safetensors: wte.weight has shape \(11, 8\), the '
                     r'model needs \(11, 12\) \(for params/embed/token_embed/embedding\)') as err:
    huggingface.load(folder)
  _one_line(err)


def test_a_model_without_a_hugging_face_equivalent_is_not_saved(tmp_path):
  model = models.build('bert_classifier', **SMALL)  # deepl's own pre-LN BERT
  with pytest.raises(UserError, match=r'this BertClassifier has no Hugging Face equivalent: '
                     r'post_norm=False \(BERT has True\); embed_norm=False') as err:
    huggingface.save(model, _init(model), tmp_path)
  _one_line(err)
  assert not os.listdir(tmp_path)


# ------------------------------------------------------------------ init_from='hf:PATH'


def test_load_params_copies_the_encoder_and_keeps_new_heads_fresh(bert_folder):
  _, variables, folder = bert_folder
  model = models.build('bert_classifier', num_classes=3, **SMALL, **ORIGINAL_BERT)
  fresh_params = _init(model)['params']
  params, fresh = huggingface.load_params(folder, model, fresh_params)
  assert sorted(fresh) == sorted(f"['{layer}']['{name}']" for layer in ('pooler', 'classifier')
                                 for name in ('bias', 'kernel'))
  jax.tree.map(np.testing.assert_array_equal, params['encoder'], variables['params']['encoder'])
  np.testing.assert_array_equal(params['classifier']['kernel'],
                                fresh_params['classifier']['kernel'])

  # A classifier saved with 3 classes, copied into one with 2: its head starts fresh.
  model_3 = model.clone()
  saved = {'params': params}
  huggingface.save(model_3, saved, folder.parent / 'three')
  model_2 = model.clone(num_classes=2)
  params_2, fresh = huggingface.load_params(folder.parent / 'three', model_2,
                                            _init(model_2)['params'])
  assert sorted(fresh) == ["['classifier']['bias']", "['classifier']['kernel']"]
  np.testing.assert_array_equal(params_2['pooler']['kernel'], params['pooler']['kernel'])


def test_load_params_into_a_model_of_another_width_or_kind(bert_folder, gpt_folder):
  folder = bert_folder[2]
  wider = models.build('bert_mlm', **dict(SMALL, width=12), **ORIGINAL_BERT)
  with pytest.raises(UserError, match=r'config.json is another BERT than this BertMLM: set '
                     r'model.width=8 \(not 12\)$') as err:
    huggingface.load_params(folder, wider, _shapes(wider))
  _one_line(err)
  pre_ln = models.build('bert_mlm', **SMALL)
  with pytest.raises(UserError, match=r'set model.layer_norm_epsilon=1e-12 \(not 1e-05\), '
                     r'model.post_norm=True \(not False\), model.embed_norm=True'):
    huggingface.load_params(folder, pre_ln, _shapes(pre_ln))
  with pytest.raises(UserError, match=r"is a gpt2 model \(gpt\), not a BertMLM: use model 'gpt'"):
    huggingface.load_params(gpt_folder[2], pre_ln, _shapes(pre_ln))


# ------------------------------------------------------------------ other layouts


def test_pytorch_model_bin_and_shards_read_as_safetensors(tmp_path, monkeypatch):
  hf_model = ref.gpt2(tmp_path / 'safetensors')
  # transformers 5 writes only safetensors; older releases wrote this pickle of the state dict.
  os.makedirs(tmp_path / 'bin')
  torch.save(hf_model.state_dict(), tmp_path / 'bin' / 'pytorch_model.bin')
  (tmp_path / 'bin' / 'config.json').write_text((tmp_path / 'safetensors' /
                                                 'config.json').read_text())
  hf_model.save_pretrained(tmp_path / 'shards', max_shard_size='100KB')
  assert os.path.isfile(tmp_path / 'shards' / 'model.safetensors.index.json')
  model, variables = huggingface.load(tmp_path / 'safetensors')
  for layout in ('bin', 'shards'):
    other, other_variables = huggingface.load(tmp_path / layout)
    assert other == model
    jax.tree.map(np.testing.assert_array_equal, other_variables, variables)

  monkeypatch.setitem(sys.modules, 'torch', None)  # what `import torch` meets without torch
  with pytest.raises(UserError, match=r'pytorch_model.bin is a PyTorch pickle, which only torch '
                     r'reads, and torch is not installed: pip install "deepl-jax\[hf\]"') as err:
    huggingface.load(tmp_path / 'bin')
  _one_line(err)


def test_older_key_names_load(gpt_folder, bert_folder, tmp_path):
  """OpenAI's GPT-2 has no 'transformer.' prefix and saved its causal-mask buffers;
  Google's BERT called LayerNorm parameters gamma and beta."""
  def openai(state):
    state = {k.removeprefix('transformer.'): v for k, v in state.items()}
    return {**state, 'h.0.attn.bias': np.ones((1, 1, 6, 6), np.float32)}

  def google(state):
    return {k.replace('LayerNorm.weight', 'LayerNorm.gamma').replace('LayerNorm.bias',
                                                                      'LayerNorm.beta'): v
            for k, v in state.items()}

  for (_, variables, folder), rename in ((gpt_folder, openai), (bert_folder, google)):
    renamed = _copy(folder, tmp_path / rename.__name__, weights=rename)
    with warnings.catch_warnings():
      warnings.simplefilter('error')  # a key left unused would warn
      _, loaded = huggingface.load(renamed)
    jax.tree.map(np.testing.assert_array_equal, loaded, variables)


def test_half_precision_weights_load_as_float32(bert_folder, tmp_path):
  _, variables, folder = bert_folder
  half = _copy(folder, tmp_path / 'bf16',
               weights=lambda state: {k: v.astype(jnp.bfloat16) for k, v in state.items()})
  _, loaded = huggingface.load(half)
  expected = jax.tree.map(lambda x: np.asarray(x).astype(jnp.bfloat16).astype(np.float32),
                          variables)
  jax.tree.map(np.testing.assert_array_equal, loaded, expected)
  assert {x.dtype for x in jax.tree.leaves(loaded)} == {np.dtype(np.float32)}


def test_neither_transformers_nor_torch_is_imported(gpt_folder, tmp_path):
  (tmp_path / 'vocab.txt').write_text('[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nword\n')
  code = ('import sys, deepl, deepl.models, deepl.cli.main, deepl.pretrained; '
          'from deepl.interop import huggingface; from deepl.data import tokenizers; '
          f'huggingface.load({str(gpt_folder[2])!r}); tokenizers.build("hf:{tmp_path}", []); '
          "print(sorted({'torch', 'transformers', 'tensorflow'} & set(sys.modules)))")
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True,
                       env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  assert out.stdout.strip() == '[]'
