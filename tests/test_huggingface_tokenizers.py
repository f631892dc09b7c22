"""data.tokenizer='hf:PATH': Hugging Face tokenizer folders read with the `tokenizers`
library give the ids transformers' AutoTokenizer gives, in every layout a folder comes
in; they survive a run's save and load, and save back to a folder AutoTokenizer reads.
char and word tokenizers export as the same vocabulary.

The vocabularies are trained here on a few lines (no download).
"""

import json
import os

import pytest
import tokenizers as hf_tokenizers

from deepl.data import hf_tokenizer
from deepl.data import tokenizers
from deepl.errors import UserError
from tests import hf_reference as ref

transformers = ref.transformers

LINES = ['ROMEO: But soft! What light through yonder window breaks?',
         "JULIET: O Romeo, Romeo, wherefore art thou Romeo?",
         'a gorgeous , witty , seductive movie .', "it 's a charming and often affecting journey ."]
TEXTS = ['ROMEO: What light breaks?\nJULIET: Wherefore!', 'A witty, CHARMING movie; naïve 東京',
         '  spaces   and\ttabs  ', '']
BERT_SPECIALS = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]']


def _wordpiece(folder, specials=BERT_SPECIALS):
  trained = hf_tokenizers.BertWordPieceTokenizer()
  trained.train_from_iterator(LINES * 20, vocab_size=200, special_tokens=specials)
  os.makedirs(folder, exist_ok=True)
  trained.save_model(str(folder))  # vocab.txt, as BERT's first releases came
  return folder


def _byte_level_bpe(folder):
  trained = hf_tokenizers.ByteLevelBPETokenizer()
  trained.train_from_iterator(LINES * 20, vocab_size=400, special_tokens=['<|endoftext|>'])
  os.makedirs(folder, exist_ok=True)
  trained.save_model(str(folder))  # vocab.json and merges.txt, as GPT-2's first release came
  return folder


def _their_ids(folder, text):
  return transformers.AutoTokenizer.from_pretrained(folder)(text)['input_ids']


@pytest.fixture(scope='module')
def folders(tmp_path_factory):
  """layout -> a tokenizer folder: BERT's and GPT-2's old files, and transformers' own saves."""
  root = tmp_path_factory.mktemp('tokenizers')
  out = {'bert vocab.txt': _wordpiece(root / 'bert_vocab'),
         'gpt2 vocab.json': _byte_level_bpe(root / 'gpt2_vocab')}
  # What save_pretrained writes today: tokenizer.json and tokenizer_config.json.
  transformers.BertTokenizerFast(str(out['bert vocab.txt'] / 'vocab.txt')).save_pretrained(
      root / 'bert_saved')
  transformers.GPT2TokenizerFast(str(out['gpt2 vocab.json'] / 'vocab.json'),
                                 str(out['gpt2 vocab.json'] / 'merges.txt')).save_pretrained(
                                     root / 'gpt2_saved')
  # vocab.txt files written by AutoTokenizer need a config.json to say which class reads them
  for name, model_type in (('bert_vocab', 'bert'), ('gpt2_vocab', 'gpt2')):
    (root / name / 'config.json').write_text(json.dumps({'model_type': model_type}))
  return {**out, 'bert tokenizer.json': root / 'bert_saved',
          'gpt2 tokenizer.json': root / 'gpt2_saved'}


@pytest.mark.parametrize('layout', ['bert vocab.txt', 'bert tokenizer.json', 'gpt2 vocab.json',
                                    'gpt2 tokenizer.json'])
def test_ids_equal_transformers_and_survive_a_run_folder(layout, folders, tmp_path):
  tokenizer = tokenizers.build(f'hf:{folders[layout]}', [])
  assert tokenizer.kind == 'hf'
  for text in TEXTS:
    assert tokenizer.encode(text) == _their_ids(folders[layout], text), text
  assert tokenizer.encode_batch(TEXTS) == [tokenizer.encode(text) for text in TEXTS]
  assert tokenizer.vocab_size == len(transformers.AutoTokenizer.from_pretrained(folders[layout]))
  if layout.startswith('bert'):
    assert tokenizer.pad_id == 0 and tokenizer.encode('movie')[0] == 2  # [CLS] first
  else:  # GPT-2 has no pad token, and its byte-level BPE gives back any text exactly
    assert tokenizer.pad_id is None
    assert [tokenizer.decode(tokenizer.encode(text)) for text in TEXTS] == TEXTS

  tokenizer.save(tmp_path / 'run_tokenizer')  # what a run keeps in workdir/tokenizer
  again = tokenizers.load(tmp_path / 'run_tokenizer')
  assert [again.encode(text) for text in TEXTS] == [tokenizer.encode(text) for text in TEXTS]
  assert again.pad_id == tokenizer.pad_id

  again.save_pretrained(tmp_path / 'exported')  # what `deepl export` writes
  for text in TEXTS:
    assert _their_ids(tmp_path / 'exported', text) == tokenizer.encode(text)


def test_a_pad_token_other_than_id_0_is_refused(tmp_path):
  folder = _wordpiece(tmp_path / 'other', ['[UNK]', '[PAD]', '[CLS]', '[SEP]', '[MASK]'])
  with pytest.raises(UserError, match=r"its pad token '\[PAD\]' is id 1; deepl pads batches "
                     'with id 0'):
    tokenizers.build(f'hf:{folder}', [])


def test_folders_without_a_tokenizer(tmp_path):
  with pytest.raises(UserError, match='nowhere is not a folder: give a Hugging Face tokenizer'):
    tokenizers.build(f'hf:{tmp_path}/nowhere', [])
  (tmp_path / 'merges.txt').write_text('#version: 0.2\n')  # half of GPT-2's pair
  with pytest.raises(UserError, match=r'holds no tokenizer \(tokenizer.json, or vocab.txt, or '
                     r'vocab.json and merges.txt\)'):
    tokenizers.build(f'hf:{tmp_path}', [])
  assert not hf_tokenizer.has_tokenizer(tmp_path)
  (tmp_path / 'tokenizer.json').write_text('{"not": "a tokenizer"}')
  with pytest.raises(UserError, match=r'its tokenizer cannot be read \(.*\): save or download '
                     'it again'):
    tokenizers.build(f'hf:{tmp_path}', [])


@pytest.mark.parametrize('kind', ['char', 'word'])
def test_char_and_word_tokenizers_export_as_the_same_vocabulary(kind, tmp_path):
  tokenizer = tokenizers.build(kind, ['\n'.join(LINES)])
  hf_tokenizer.from_deepl(tokenizer).save_pretrained(tmp_path)
  theirs = transformers.AutoTokenizer.from_pretrained(tmp_path)
  texts = LINES + ['ROMEO: O light!\nJULIET:  a  movie .', '']
  for text in texts:
    ids = tokenizer.encode(text)
    assert theirs(text)['input_ids'] == ids, text
    assert theirs.decode(ids) == tokenizer.decode(ids)
  assert len(theirs) == tokenizer.vocab_size and theirs.pad_token_id == 0
  assert theirs.decode([0], skip_special_tokens=True) == tokenizer.decode([0]) == ''


def test_sentencepiece_has_no_equivalent_here():
  sentencepiece = tokenizers.build('sentencepiece', LINES * 5, vocab_size=60,
                                   hard_vocab_limit=False)
  assert hf_tokenizer.from_deepl(sentencepiece) is None
