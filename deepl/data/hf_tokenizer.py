"""A Hugging Face tokenizer folder as a deepl tokenizer: data.tokenizer='hf:PATH'.

  tok = hf_tokenizer.from_folder('bert-base-uncased/')
  tok.encode('a gorgeous film')     # [CLS] a gorgeous film [SEP] as ids, as AutoTokenizer's
  tok.save_pretrained('out/')       # the files AutoTokenizer.from_pretrained('out/') reads
  hf_tokenizer.from_deepl(run_tokenizer)   # char and word runs' equivalents, for deepl export

Read with the `tokenizers` library (no transformers): the folder's
tokenizer.json, as save_pretrained writes it today, or else the older files,
vocab.txt (BERT's WordPiece, lower-cased unless tokenizer_config.json says
do_lower_case=false) or vocab.json and merges.txt (GPT-2's byte-level BPE).
`encode` adds what the HF tokenizer adds: [CLS] and [SEP] around a BERT
input, nothing for GPT-2.

deepl pads every batch with id 0. BERT's [PAD] is 0. GPT-2 has no pad token,
and its id 0 ('!') is a real token: `pad_id` is None, and the causal-LM loss
then counts every target (its windows are never padded).
"""

import json
import os

from etils import epath
import tokenizers as hf_tokenizers

from deepl.data import tokenizers as tokenizers_lib
from deepl.errors import UserError

KIND = 'hf'
SAVED_FILE = 'hf_tokenizer.json'  # in a run's tokenizer folder, beside deepl's tokenizer.json
# What save_pretrained writes and AutoTokenizer reads.
TOKENIZER_FILE = 'tokenizer.json'
TOKENIZER_CONFIG_FILE = 'tokenizer_config.json'
SPECIAL_TOKENS_FILE = 'special_tokens_map.json'
VOCAB_TXT, VOCAB_JSON, MERGES_TXT = 'vocab.txt', 'vocab.json', 'merges.txt'
GPT2_END = '<|endoftext|>'
# AutoTokenizer's settings for a folder that has none of its own (the
# tokenizer's model type decides which).
BERT_CONFIG = {'tokenizer_class': 'BertTokenizer', 'do_lower_case': True, 'unk_token': '[UNK]',
               'sep_token': '[SEP]', 'pad_token': '[PAD]', 'cls_token': '[CLS]',
               'mask_token': '[MASK]'}
GPT2_CONFIG = {'tokenizer_class': 'GPT2Tokenizer', 'add_prefix_space': False,
               'bos_token': GPT2_END, 'eos_token': GPT2_END, 'unk_token': GPT2_END}


def folder_of(value) -> str | None:
  """PATH of a config value 'hf:PATH', else None."""
  prefix = tokenizers_lib.HF_PREFIX
  if isinstance(value, str) and value.startswith(prefix):
    return value[len(prefix):]
  return None


def has_tokenizer(folder) -> bool:
  """Whether a folder holds the files of a tokenizer `from_folder` reads."""
  folder = os.fspath(folder)
  return any(all(os.path.isfile(os.path.join(folder, name)) for name in names)
             for names in ((TOKENIZER_FILE,), (VOCAB_TXT,), (VOCAB_JSON, MERGES_TXT)))


class HFTokenizer(tokenizers_lib.Tokenizer):
  """A `tokenizers.Tokenizer` behind deepl's tokenizer interface.

  Attributes:
    tokenizer_config: tokenizer_config.json's settings (special tokens,
      the class AutoTokenizer builds), written back by save_pretrained.
    special_tokens_map: special_tokens_map.json's, if the folder had one.
  """

  kind = KIND

  def __init__(self, tokenizer: hf_tokenizers.Tokenizer, tokenizer_config: dict,
               special_tokens_map: dict | None = None, where: str = 'the tokenizer'):
    self._tokenizer = tokenizer
    self.tokenizer_config = tokenizer_config
    self.special_tokens_map = special_tokens_map
    self.pad_id = self._pad_id(where)

  def _pad_id(self, where: str) -> int | None:
    pad = (self.tokenizer_config.get('pad_token') or
           (self.special_tokens_map or {}).get('pad_token') or
           # BERT folders that name no special tokens (transformers' class defaults them)
           ('[PAD]' if isinstance(self._tokenizer.model, hf_tokenizers.models.WordPiece) else None))
    if isinstance(pad, dict):  # an AddedToken as JSON
      pad = pad.get('content')
    pad_id = self._tokenizer.token_to_id(pad) if pad else None
    if pad_id not in (None, tokenizers_lib.PAD_ID):
      raise UserError(f'{where}: its pad token {pad!r} is id {pad_id}; deepl pads batches with '
                      f'id {tokenizers_lib.PAD_ID}, so it reads tokenizers whose pad token is 0 '
                      "(BERT's [PAD]) or that have none (GPT-2's)")
    return pad_id

  @property
  def vocab_size(self) -> int:
    return self._tokenizer.get_vocab_size(with_added_tokens=True)

  def encode(self, text: str) -> list[int]:
    return self._tokenizer.encode(text).ids

  def encode_batch(self, texts) -> list[list[int]]:
    return [encoding.ids for encoding in self._tokenizer.encode_batch(list(texts))]

  def decode(self, ids) -> str:
    # Special tokens stay: a GPT-2 sample shows where a document ended.
    return self._tokenizer.decode(self._check_ids(ids).tolist(), skip_special_tokens=False)

  def token_to_id(self, token: str) -> int | None:
    return self._tokenizer.token_to_id(token)

  def _config(self) -> dict:
    return {'file': SAVED_FILE, 'tokenizer_config': self.tokenizer_config,
            'special_tokens_map': self.special_tokens_map}

  def _write_files(self, directory: epath.Path) -> None:
    (directory / SAVED_FILE).write_text(self._tokenizer.to_str())

  def save_pretrained(self, directory) -> None:
    """Writes tokenizer.json and tokenizer_config.json (and special_tokens_map.json) for
    transformers' AutoTokenizer."""
    directory = epath.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / TOKENIZER_FILE).write_text(self._tokenizer.to_str())
    (directory / TOKENIZER_CONFIG_FILE).write_text(json.dumps(self.tokenizer_config, indent=2))
    if self.special_tokens_map:
      (directory / SPECIAL_TOKENS_FILE).write_text(json.dumps(self.special_tokens_map, indent=2))


def _read_json(path: str, what: str) -> dict | None:
  if not os.path.isfile(path):
    return None
  try:
    with open(path, encoding='utf-8') as f:
      value = json.load(f)
  except (OSError, ValueError) as err:
    raise UserError(f'{path} cannot be read ({err}): save or download the {what} '
                    'again') from None
  if not isinstance(value, dict):
    raise UserError(f'{path} is not a JSON object: save or download the {what} again')
  return value


def _default_config(tokenizer: hf_tokenizers.Tokenizer) -> dict:
  if isinstance(tokenizer.model, hf_tokenizers.models.WordPiece):
    return dict(BERT_CONFIG)
  if tokenizer.token_to_id(GPT2_END) is not None:
    return dict(GPT2_CONFIG)
  return {'tokenizer_class': 'PreTrainedTokenizerFast'}


def from_folder(folder) -> HFTokenizer:
  """The tokenizer a Hugging Face folder holds; UserError naming the file and the fix."""
  folder = os.path.expanduser(os.fspath(folder))
  if not os.path.isdir(folder):
    raise UserError(f'{folder} is not a folder: give a Hugging Face tokenizer folder '
                    f'({TOKENIZER_FILE}, or {VOCAB_TXT}, or {VOCAB_JSON} and {MERGES_TXT})')
  path = lambda name: os.path.join(folder, name)
  config = _read_json(path(TOKENIZER_CONFIG_FILE), 'tokenizer')
  special = _read_json(path(SPECIAL_TOKENS_FILE), 'tokenizer')
  try:
    if os.path.isfile(path(TOKENIZER_FILE)):
      tokenizer = hf_tokenizers.Tokenizer.from_file(path(TOKENIZER_FILE))
    elif os.path.isfile(path(VOCAB_TXT)):
      lowercase = bool((config or {}).get('do_lower_case', True))
      tokenizer = hf_tokenizers.Tokenizer.from_str(
          hf_tokenizers.BertWordPieceTokenizer(path(VOCAB_TXT), lowercase=lowercase).to_str())
      config = config or dict(BERT_CONFIG, do_lower_case=lowercase)
    elif os.path.isfile(path(VOCAB_JSON)) and os.path.isfile(path(MERGES_TXT)):
      tokenizer = hf_tokenizers.Tokenizer.from_str(hf_tokenizers.ByteLevelBPETokenizer(
          path(VOCAB_JSON), path(MERGES_TXT)).to_str())
    else:
      raise UserError(f'{folder} holds no tokenizer ({TOKENIZER_FILE}, or {VOCAB_TXT}, or '
                      f'{VOCAB_JSON} and {MERGES_TXT}): save it there with the model\'s '
                      'tokenizer.save_pretrained, or download it')
  except UserError:
    raise
  except Exception as err:  # pylint: disable=broad-except  # the library raises plain Exceptions
    reason = (str(err).splitlines() or [type(err).__name__])[0]
    raise UserError(f'{folder}: its tokenizer cannot be read ({reason}): save or download it '
                    'again') from None
  return HFTokenizer(tokenizer, config or _default_config(tokenizer), special, where=folder)


def from_deepl(tokenizer) -> HFTokenizer | None:
  """The Hugging Face equivalent of a run's tokenizer, for `deepl export`; None if it has none.

  An hf one is itself. char and word are a WordLevel vocabulary with the same
  ids: characters split one by one and fused back together, or words split
  and joined at whitespace; <pad> (id 0) is a special token, which
  decode(..., skip_special_tokens=True) drops as deepl's decode does. A character deepl's char tokenizer refuses becomes
  <pad>. sentencepiece has none here (transformers converts those only with
  the sentencepiece protobufs).
  """
  if isinstance(tokenizer, HFTokenizer):
    return tokenizer
  models, pre_tokenizers = hf_tokenizers.models, hf_tokenizers.pre_tokenizers
  pad = '<pad>'
  config = {'tokenizer_class': 'PreTrainedTokenizerFast', 'pad_token': pad}
  if tokenizer.kind == 'char':
    out = hf_tokenizers.Tokenizer(models.WordLevel(
        {pad: 0, **{c: i + 1 for i, c in enumerate(tokenizer.chars)}}, unk_token=pad))
    out.pre_tokenizer = pre_tokenizers.Split(hf_tokenizers.Regex(r'[\s\S]'), 'isolated')
    out.decoder = hf_tokenizers.decoders.Fuse()
  elif tokenizer.kind == 'word':
    out = hf_tokenizers.Tokenizer(models.WordLevel(
        {word: i for i, word in enumerate(tokenizer.words)}, unk_token=tokenizer.UNK))
    out.pre_tokenizer = pre_tokenizers.WhitespaceSplit()  # decoding joins with spaces
    config['unk_token'] = tokenizer.UNK
  else:
    return None
  out.add_special_tokens([pad])
  return HFTokenizer(out, config)


def from_saved(directory: epath.Path, config: dict) -> HFTokenizer:
  """What HFTokenizer.save wrote into a run's tokenizer folder."""
  tokenizer = hf_tokenizers.Tokenizer.from_str((directory / config['file']).read_text())
  return HFTokenizer(tokenizer, config['tokenizer_config'], config.get('special_tokens_map'),
                     where=str(directory))
