"""Runs in and out of Hugging Face folders: experiments/sst2_bert.py:hf and
experiments/shakespeare_gpt.py:gpt2 start from a tiny random HF model with its own
tokenizer (built here: no download) through --config.init_from=hf:PATH.

In the default suite, each variant builds its model from the folder and takes a few
train steps on text its tokenizer encodes, in process; a bad folder is one line and
exit code 2 from the command line. Marked slow (`--runslow`): each variant trains
through `deepl train` on the real data, `deepl predict` or `deepl sample` uses the
folder's tokenizer, and `deepl export` writes a folder whose transformers outputs are
deepl's.
"""

import functools
import json
import os
import shutil

import jax
import numpy as np
import pytest
import tokenizers as hf_tokenizers

from deepl import config as config_lib
from deepl import data as data_lib
from deepl import experiment
from deepl import optim
from deepl import pretrained
from deepl import state as state_lib
from deepl import train
from deepl.errors import UserError
from deepl.interop import huggingface
from tests import helpers
from tests import hf_reference as ref

pytestmark = pytest.mark.usefixtures('fast_compile')  # short runs, compared among themselves

torch, transformers = ref.torch, ref.transformers

# A few steps, one eval and one checkpoint at the end.
SHORT = ('--config.train.num_steps=4', '--config.eval.every_steps=4',
         '--config.checkpoint.every_steps=4', '--config.optim.warmup_steps=1')


# Text for the tokenizers (vocabularies of the models' 1,003 ids at most).
TEXT = """ROMEO: But soft, what light through yonder window breaks?<|endoftext|>It is the east,
and Juliet is the sun. Arise, fair sun, and kill the envious moon, who is already sick and pale with grief.
JULIET: O Romeo, Romeo! wherefore art thou Romeo? Deny thy father and refuse thy name.
a gorgeous , witty , seductive movie . it 's a charming and often affecting journey .
the film is strictly routine . unflinchingly bleak and desperate . a dull , dumb and
derivative horror film . the acting , costumes , music , cinematography and sound are all
astounding given the production 's austere locales ."""


@pytest.fixture(scope='module')
def bert_folder(tmp_path_factory):
  """A random BertForMaskedLM (3 layers, vocabulary 1,003) and a WordPiece vocab.txt."""
  folder = tmp_path_factory.mktemp('bert')
  ref.bert(transformers.BertForMaskedLM, folder)
  trained = hf_tokenizers.BertWordPieceTokenizer()
  trained.train_from_iterator(TEXT.splitlines(), vocab_size=ref.VOCAB,
                              special_tokens=['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'])
  trained.save_model(str(folder))
  return folder


@pytest.fixture(scope='module')
def gpt2_folder(tmp_path_factory):
  """A random GPT2LMHeadModel (context 77, vocabulary 1,003) and a byte-level BPE
  tokenizer.json."""
  folder = tmp_path_factory.mktemp('gpt2')
  ref.gpt2(folder)
  trained = hf_tokenizers.ByteLevelBPETokenizer()
  trained.train_from_iterator([TEXT], vocab_size=ref.VOCAB, special_tokens=['<|endoftext|>'])
  trained.save(str(folder / 'tokenizer.json'))
  return folder


def _variant(name: str, folder):
  """experiments/<file>:<variant>'s config, started from `folder`, as `deepl train` resolves it."""
  file, arg = name.split(':')
  config = config_lib.sibling_config(str(helpers.EXPERIMENTS / file), file[:-len('.py')], arg)
  config.init_from = f'hf:{folder}'
  config_lib.validate(config)
  pretrained.resolve_config(config)
  return config


@pytest.mark.parametrize('name', ['sst2_bert.py:hf', 'shakespeare_gpt.py:gpt2'])
def test_each_variant_builds_from_a_folder_and_trains(name, bert_folder, gpt2_folder):
  """The path `deepl train` takes, on a batch of TEXT: the model's fields, weights and
  tokenizer come from the folder, new heads start fresh, and the variant's optimizer steps."""
  is_bert = name.startswith('sst2')
  folder = bert_folder if is_bert else gpt2_folder
  config = _variant(name, folder)
  assert (config.model.width, config.model.num_layers, config.model.dropout) == (48, 3, 0.1)
  tokenizer = pretrained.tokenizer(config)
  assert tokenizer.kind == 'hf' and tokenizer.vocab_size <= ref.VOCAB
  task, _ = experiment.make_task(config, num_classes=2 if is_bert else None, tokenizer=tokenizer)
  if is_bert:
    sentences = TEXT.splitlines()
    batch = data_lib.ClassificationTextSource(tokenizer.encode_batch(sentences),
                                              np.arange(len(sentences)) % 2,
                                              config.data.max_length).gather(np.arange(4))
    assert (batch['tokens'][:, 0] == tokenizer.token_to_id('[CLS]')).all()
  else:
    batch = data_lib.WindowSource(tokenizer.encode(TEXT), context=32).gather(np.arange(4) * 8)
  tx = optim.make_optimizer(config.optim, config.train.num_steps)
  state = jax.jit(functools.partial(state_lib.init_state, task=task, tx=tx))(
      jax.random.PRNGKey(0), batch)
  params, fresh = pretrained.init_params(config, task.model, state.params)
  assert fresh == ([f"['{head}']['{name}']" for head in ('classifier', 'pooler')
                    for name in ('bias', 'kernel')] if is_bert else [])
  loaded = huggingface.load(folder)[1]['params']
  jax.tree.map(np.testing.assert_array_equal, params['encoder'] if is_bert else params,
               loaded['encoder'] if is_bert else loaded)
  if not is_bert:
    # The untrained model's loss on these windows is transformers' own, over every target:
    # id 0 (<|endoftext|> here, '!' in GPT-2's vocabulary) is a real token, not padding.
    tokens = batch['tokens']
    assert tokenizer.pad_id is None and (tokens[:, 1:] == 0).any()
    with torch.no_grad():
      tokens = torch.tensor(np.asarray(tokens, np.int64))
      theirs = transformers.GPT2LMHeadModel.from_pretrained(folder)(tokens, labels=tokens).loss
    ours = jax.jit(task.eval_sums)(params, {}, batch)
    np.testing.assert_allclose(float(ours['loss'] / ours['count']), theirs.item(), rtol=1e-5)

  state = state.replace(params=params, opt_state=tx.init(params))
  step = jax.jit(functools.partial(train.train_step, task=task, tx=tx))
  losses = []
  for _ in range(3):
    state, sums = step(state, batch)
    losses.append(float(sums['loss'] / sums['count']))
  assert int(state.step) == 3 and np.isfinite(losses).all()
  assert any((np.asarray(a) != b).any() for a, b in zip(jax.tree.leaves(state.params),
                                                         jax.tree.leaves(params)))


def _train(experiment, folder, workdir, data, tfds_data_dir, *extra):
  result = helpers.deepl_here(f'--config={helpers.EXPERIMENTS}/{experiment}', f'--workdir={workdir}',
                         f'--config.init_from=hf:{folder}', f'--config.data.manual_dir={data}',
                         f'--config.data.data_dir={tfds_data_dir}', *SHORT, *extra)
  assert result.returncode == 0, result.stderr
  return result


@pytest.mark.slow
def test_sst2_bert_hf_fine_tunes_predicts_and_exports(bert_folder, shared_data, tfds_data_dir,
                                                      tmp_path):
  workdir = tmp_path / 'run'
  result = _train('sst2_bert.py:hf', bert_folder, workdir, shared_data / 'sst2', tfds_data_dir)
  # The encoder comes from the folder; BertForMaskedLM has no pooler and no classifier.
  assert (f"deepl: parameters from hf:{bert_folder}; fresh: ['classifier']['bias'], "
          "['classifier']['kernel'], ['pooler']['bias'], ['pooler']['kernel']") in result.stdout
  model = json.loads((workdir / 'config.json').read_text())['model']
  assert model == {'name': 'bert_classifier', 'dropout': 0.1, 'vocab_size': ref.VOCAB,
                   'num_layers': 3, 'num_heads': 6, 'width': 48, 'mlp_dim': 100, 'max_len': 77,
                   'gelu_approximate': False, 'mask_token_id': 4, 'post_norm': True,
                   'embed_norm': True, 'type_vocab_size': 2, 'layer_norm_epsilon': 1e-12,
                   'learned_cls': False}

  texts = ['a gorgeous , witty , seductive movie .', 'it is dull and far too long .']
  predicted = helpers.deepl_here(f'--workdir={workdir}', '--input=-', command='predict',
                            input='\n'.join(texts))
  assert predicted.returncode == 0, predicted.stderr
  out = helpers.deepl_here(f'--workdir={workdir}', f'--out={tmp_path}/exported', command='export')
  assert out.returncode == 0, out.stderr
  assert 'config.json, model.safetensors, the tokenizer of BertClassifier at step 4' in out.stdout

  exported, info = transformers.AutoModelForSequenceClassification.from_pretrained(
      tmp_path / 'exported', output_loading_info=True)
  assert not (info['missing_keys'] or info['unexpected_keys'] or info['mismatched_keys'])
  tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / 'exported')
  with torch.no_grad():
    probs = torch.softmax(exported.eval()(**tokenizer(texts, padding=True,
                                                      return_tensors='pt')).logits, -1).numpy()
  for line, p in zip(predicted.stdout.splitlines(), probs):
    label, prob = line.split('\t')
    assert label == exported.config.id2label[int(p.argmax())]  # 'negative' or 'positive'
    assert abs(float(prob) - p.max()) <= 1e-4


@pytest.mark.slow
def test_shakespeare_gpt2_fine_tunes_samples_and_exports(gpt2_folder, shared_data,
                                                         tfds_data_dir, tmp_path):
  workdir = tmp_path / 'run'
  result = _train('shakespeare_gpt.py:gpt2', gpt2_folder, workdir,
                  shared_data / 'tiny_shakespeare', tfds_data_dir, '--config.data.context=64',
                  '--config.train.batch_size=4')
  assert f'deepl: parameters from hf:{gpt2_folder}; fresh: none' in result.stdout
  assert 'bits_per_token' in result.stdout  # GPT-2 tokens, not characters

  # top_k=1 samples greedily: the exported model's generate() must say the same.
  prompt, length = 'ROMEO:', 12
  sampled = helpers.deepl_here(f'--workdir={workdir}', f'--prompt={prompt}', f'--length={length}',
                          '--top_k=1', command='sample')
  assert sampled.returncode == 0, sampled.stderr
  out = helpers.deepl_here(f'--workdir={workdir}', f'--out={tmp_path}/exported', command='export')
  assert out.returncode == 0, out.stderr
  exported, info = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / 'exported',
                                                                     output_loading_info=True)
  assert not (info['missing_keys'] or info['unexpected_keys'] or info['mismatched_keys'])
  tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / 'exported')
  ids = tokenizer(prompt, return_tensors='pt')['input_ids']
  exported.generation_config.eos_token_id = None  # export names <|endoftext|>: generate on past it
  with torch.no_grad():
    theirs = exported.eval().generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                      max_new_tokens=length, pad_token_id=0)
  assert sampled.stdout == prompt + tokenizer.decode(theirs[0, ids.shape[1]:]) + '\n'

  no_out = helpers.deepl_here(f'--workdir={workdir}', command='export')
  assert no_out.returncode == 2 and no_out.stderr == (
      'deepl: error: deepl export needs --out=DIR: the folder to write the Hugging Face model '
      'into\n')


# ------------------------------------------------------------------ bad folders


def _bad_folders(good, root):
  """name -> (a broken copy of the folder `good`, what the error says)."""
  def copy(name, change):
    folder = root / name
    shutil.copytree(good, folder)
    change(folder)
    return folder

  def other_type(folder):
    config = json.loads((folder / 'config.json').read_text())
    (folder / 'config.json').write_text(json.dumps({**config, 'model_type': 'llama'}))

  def truncate(folder):
    data = (folder / 'model.safetensors').read_bytes()
    (folder / 'model.safetensors').write_bytes(data[:len(data) // 2])

  return {
      'missing': (root / 'nowhere', 'nowhere is not a folder: give a hugging face model folder'),
      'no weights': (copy('empty', lambda f: os.remove(f / 'model.safetensors')),
                     'holds no weights (model.safetensors'),
      'model type': (copy('llama', other_type), "model_type 'llama' is not supported"),
      'truncated': (copy('cut', truncate), 'model.safetensors is damaged or incomplete'),
  }


BAD = ['missing', 'no weights', 'model type', 'truncated', 'width']


def _bad_case(bad, good, root):
  """(experiment variant, folder, the error's words) of one bad input."""
  if bad == 'width':  # the from-scratch variant: a 4 x 256 pre-LN BERT, not the folder's
    return ('sst2_bert.py:finetune', good,
            'is another bert than this bertclassifier: set model.num_layers=3 (not 4), '
            'model.num_heads=6 (not 4), model.width=48 (not 256)')
  folder, needle = _bad_folders(good, root)[bad]
  return 'sst2_bert.py:hf', folder, needle


@pytest.mark.parametrize('bad', BAD)
def test_a_bad_folder_is_refused_before_any_data(bad, bert_folder, tmp_path):
  name, folder, needle = _bad_case(bad, bert_folder, tmp_path)
  with pytest.raises(UserError) as err:
    _variant(name, folder)
  assert '\n' not in str(err.value) and needle in str(err.value).lower(), str(err.value)


@pytest.mark.parametrize('bad', ['truncated', 'width'])
def test_a_bad_folder_is_one_line_and_exit_2_from_the_command_line(bad, bert_folder, tmp_path):
  name, folder, needle = _bad_case(bad, bert_folder, tmp_path)
  # Refused before any data is read: there is none here.
  result = helpers.deepl_here(f'--config={helpers.EXPERIMENTS}/{name}', f'--workdir={tmp_path}/run',
                         f'--config.init_from=hf:{folder}',
                         f'--config.data.manual_dir={tmp_path}/no_data')
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert result.returncode == 2 and len(lines) == 1, result.stderr
  assert lines[0].startswith('deepl: error: ') and needle in lines[0].lower(), lines[0]
  assert not (tmp_path / 'run').exists()
