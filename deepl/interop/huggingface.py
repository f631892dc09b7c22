"""Hugging Face GPT-2 and BERT model folders in and out of deepl's models.

  from deepl.interop import huggingface
  model, variables = huggingface.load('gpt2/')     # a deepl gpt, float32 numpy params
  logits = model.apply(variables, tokens, train=False)
  huggingface.save(model, variables, 'out/')       # AutoModel*.from_pretrained('out/') loads it

A folder is what transformers' `save_pretrained` writes: config.json and
model.safetensors (or model-0000i-of-0000n.safetensors shards with their
model.safetensors.index.json), or else a pytorch_model.bin.

  HF class (config.json)                          deepl model
  GPT2LMHeadModel, GPT2Model                      gpt
  BertForMaskedLM, BertModel, BertForPreTraining  bert_mlm
  BertForSequenceClassification                   bert_classifier
  BertForTokenClassification                      bert_token_classifier

The deepl model gets its fields from config.json (hf_gpt2.py and hf_bert.py
say which: GPT-2 needs gelu_approximate=True; BERT post_norm, embed_norm,
token types, layer_norm_epsilon=1e-12, learned_cls=False, and its
tokenizer's mask_token_id). Parameters the folder lacks (a BertModel's MLM
head) start fresh from `seed`, and tensors the model has no use for (a
BertModel's pooler, BertForPreTraining's next-sentence head) are left; `load`
warns of both. deepl has no dropout on the attention probabilities: a loaded
model's `dropout` is HF's hidden (residual) rate, and `save` writes 0 as the
attention rate.

A run starts from a folder with config.init_from='hf:PATH' (deepl/pretrained.py:
`fields_for` fills in the model fields the config leaves out, `check_weights`
fails early, `load_params` copies the weights into the fresh params as
deepl.checkpoint.init_from does from a run), and `deepl export` writes a run
back with `save`. The parameter mapping is public both ways:
`from_state_dict` / `to_state_dict`, with `read_config`, `read_state_dict`,
`model_fields` and `to_config`.

Neither transformers nor torch is imported: safetensors' numpy API reads and
writes the weights. Only a pytorch_model.bin needs torch, imported then.
Every problem with a folder is one UserError line naming the file and the fix.
"""

import dataclasses
import json
import os
import warnings

from flax import traverse_util
from flax.core import meta
import jax
import jax.numpy as jnp
import numpy as np
from safetensors import SafetensorError
from safetensors import safe_open
import safetensors.numpy

from deepl import models
from deepl.errors import UserError
from deepl.interop import hf_bert
from deepl.interop import hf_gpt2
from deepl.interop import hf_mapping

CONFIG_FILE = 'config.json'
WEIGHTS_FILE = 'model.safetensors'
INDEX_FILE = 'model.safetensors.index.json'
TORCH_FILE = 'pytorch_model.bin'

FAMILIES = {hf_gpt2.MODEL_TYPE: hf_gpt2, hf_bert.MODEL_TYPE: hf_bert}
ARCHITECTURES = {**hf_gpt2.ARCHITECTURES, **hf_bert.ARCHITECTURES}


# ------------------------------------------------------------------ reading


def _folder(path) -> str:
  path = os.fspath(path)
  if not os.path.isdir(path):
    raise UserError(f'{path} is not a folder: give a Hugging Face model folder (config.json '
                    'and model.safetensors, as save_pretrained writes)')
  return path


def read_config(path) -> dict:
  """The folder's config.json."""
  file = os.path.join(_folder(path), CONFIG_FILE)
  try:
    with open(file, encoding='utf-8') as f:
      config = json.load(f)
  except FileNotFoundError:
    raise UserError(f'{path} has no {CONFIG_FILE}: give a Hugging Face model folder, as '
                    'save_pretrained writes it') from None
  except (OSError, ValueError) as err:
    raise UserError(f'{file} cannot be read ({err}): save or download it again') from None
  if not isinstance(config, dict):
    raise UserError(f'{file} is not a model config (a JSON object): save or download it again')
  return config


def _read_safetensors(file: str, tensors: bool = True) -> dict[str, np.ndarray | None]:
  """key -> array; with tensors=False, key -> None: the header only (a truncated file fails
  either way: safetensors checks the header's offsets against the file's size)."""
  try:
    with safe_open(file, framework='np') as f:
      return {key: f.get_tensor(key) if tensors else None for key in f.keys()}
  except (SafetensorError, OSError, ValueError) as err:
    raise UserError(f'{file} is damaged or incomplete ({err}): download or save it '
                    'again') from None


def _read_torch(file: str) -> dict[str, np.ndarray]:
  try:
    import torch  # pylint: disable=g-import-not-at-top  # only this fallback needs torch
  except ImportError:
    raise UserError(f'{file} is a PyTorch pickle, which only torch reads, and torch is not '
                    'installed: pip install "deepl-jax[hf]", or save the model as '
                    f'{WEIGHTS_FILE} (save_pretrained does by default)') from None
  try:
    state = torch.load(file, map_location='cpu', weights_only=True)
    # float32 first: numpy has no bfloat16 of torch's
    return {key: value.detach().to(torch.float32).numpy() for key, value in state.items()}
  except Exception as err:  # pylint: disable=broad-except  # torch's errors have no common type
    raise UserError(f'{file} is damaged or not a state dict ({type(err).__name__}: '
                    f'{str(err).splitlines()[0] if str(err) else ""}): download or save it '
                    'again') from None


def weights_file(path) -> str:
  """The file (or shard index) holding the folder's weights, by preference."""
  folder = _folder(path)
  for name in (WEIGHTS_FILE, INDEX_FILE, TORCH_FILE):
    if os.path.isfile(os.path.join(folder, name)):
      return os.path.join(folder, name)
  raise UserError(f'{folder} holds no weights ({WEIGHTS_FILE}, {INDEX_FILE} or {TORCH_FILE}): '
                  'save the model into it with save_pretrained, or download its weights')


def check_weights(path) -> None:
  """UserError unless the folder has its weights, and a safetensors file is whole.

  Reads no tensor: for a run to fail at once, before it prepares its data.
  """
  file = weights_file(path)
  if file.endswith(WEIGHTS_FILE):
    _read_safetensors(file, tensors=False)


def read_state_dict(path) -> dict[str, np.ndarray]:
  """HF key -> numpy array (in the file's dtype) of the folder's weights."""
  file = weights_file(path)
  if file.endswith(TORCH_FILE):
    return _read_torch(file)
  if not file.endswith(INDEX_FILE):
    return _read_safetensors(file)
  try:
    with open(file, encoding='utf-8') as f:
      shards = sorted(set(json.load(f)['weight_map'].values()))
  except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
    raise UserError(f'{file} is not a shard index ({err}): download or save it again') from None
  state = {}
  for shard in shards:
    shard_file = os.path.join(os.path.dirname(file), shard)
    if not os.path.isfile(shard_file):
      raise UserError(f'{file} names the shard {shard}, which is not in the folder: download '
                      'every shard')
    state.update(_read_safetensors(shard_file))
  return state


# ------------------------------------------------------------------ configs


def _architecture(config: dict, where: str) -> str:
  model_type = config.get('model_type')
  if model_type not in FAMILIES:
    raise UserError(f'{where}: model_type {model_type!r} is not supported: deepl reads '
                    f'{" and ".join(map(repr, FAMILIES))} folders ({", ".join(ARCHITECTURES)})')
  family = FAMILIES[model_type]
  names = config.get('architectures') or [next(iter(family.ARCHITECTURES))]
  known = [name for name in names if name in family.ARCHITECTURES]
  if not known:
    raise UserError(f'{where}: architecture {names[0]!r} is not supported: deepl reads '
                    f'{", ".join(family.ARCHITECTURES)} for model_type {model_type!r}')
  return known[0]


def model_fields(path, config: dict | None = None) -> tuple[str, dict]:
  """(deepl model name, its fields) equal to the folder's model.

  `config` is the folder's config.json, read from it when None. BERT's
  mask_token_id comes from the folder's tokenizer (tokenizer.json or
  vocab.txt), else 103.
  """
  config = read_config(path) if config is None else config
  where = os.path.join(os.fspath(path), CONFIG_FILE)
  architecture = _architecture(config, where)
  return FAMILIES[config['model_type']].model_fields(config, architecture, where, os.fspath(path))


def _family(model):
  """hf_gpt2 or hf_bert: the family of a model, or of a model class."""
  model_class = model if isinstance(model, type) else type(model)
  for family in FAMILIES.values():
    if family.owns(model_class):
      return family
  raise UserError(f'{model_class.__name__} has no Hugging Face equivalent here: deepl reads '
                  'and writes gpt, bert_mlm, bert_classifier and bert_token_classifier')


def fields_for(path, model_class: type, given: dict | None = None) -> dict:
  """The fields a model of `model_class` takes from the HF folder `path`.

  Those of the folder's model (`model_fields`) that the class has, less the
  number of classes, which a run's data decides (a classification head of
  another size starts fresh). For a run started from the folder
  (init_from='hf:PATH'): the config gives `given`, and fills in the rest.

  Raises:
    UserError: the folder is another kind of model; or a field in `given`
      that decides the parameters' shapes or values differs from the
      folder's, naming it and the folder's value.
  """
  family = _family(model_class)
  config = read_config(path)
  name, fields = model_fields(path, config)
  where = os.path.join(os.fspath(path), CONFIG_FILE)
  if FAMILIES[config['model_type']] is not family:
    raise UserError(f'{where} is a {config["model_type"]} model ({name}), not a '
                    f'{model_class.__name__}: use model {name!r}')
  own = {field.name for field in dataclasses.fields(model_class)}
  fields = {key: value for key, value in fields.items() if key in own and key != 'num_classes'}
  given = {**fields, **(given or {})}
  # mlp_dim 0 is 4 * width: the same as the folder's once the width is (which is reported)
  resolved = lambda field, values: (
      (values[field] or 4 * fields['width']) if field == 'mlp_dim' else values[field])
  differ = [f'model.{field}={resolved(field, fields)!r} (not {resolved(field, given)!r})'
            for field in family.STRUCTURE if resolved(field, fields) != resolved(field, given)]
  if differ:
    raise UserError(f'{where} is another {family.NAME} than this {model_class.__name__}: set '
                    f'{", ".join(differ)}')
  return fields


def to_config(model) -> dict:
  """The config.json of the HF model equal to `model`; UserError if there is none."""
  family = _family(model)
  wrong = family.unsupported(model)
  if wrong:
    raise UserError(f'this {type(model).__name__} has no Hugging Face equivalent: '
                    f'{"; ".join(wrong)}')
  return family.to_config(model)


# ------------------------------------------------------------------ parameters


def _flat(tree) -> dict[tuple[str, ...], jax.Array]:
  """deepl path -> leaf; logical-partitioning boxes (sharded runs) are looked through."""
  return {tuple(k.key for k in path if isinstance(k, jax.tree_util.DictKey)): leaf
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def _abstract_params(model) -> dict:
  tokens = jnp.zeros((1, 1), jnp.int32)
  return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), tokens, train=False))['params']


def _canonical(state_dict: dict, family) -> dict:
  """Keys as the family's rules name them: no base prefix, LayerNorm 'weight'/'bias'.

  Checkpoints from before transformers' renames call a LayerNorm's scale
  'gamma' and its offset 'beta'.
  """
  out = {}
  for key, value in state_dict.items():
    key = key[len(family.BASE_PREFIX):] if key.startswith(family.BASE_PREFIX) else key
    if key.endswith('.gamma'):
      key = key[:-len('gamma')] + 'weight'
    elif key.endswith('.beta'):
      key = key[:-len('beta')] + 'bias'
    out[key] = value
  return out


def _convert(model, state_dict: dict, shapes: dict):
  family = _family(model)
  state = _canonical(state_dict, family)
  flat, missing, mismatched, used = hf_mapping.to_deepl(family.rules(model), state, shapes)
  unused = sorted(key for key in state if key not in used and not family.IGNORED.fullmatch(key))
  return flat, [rule.deepl for rule in missing], mismatched, unused


def from_state_dict(model, state_dict: dict, where: str = 'the state dict',
                    fix: str = 'it is another size of model than this one'):
  """deepl params of `model` from an HF state dict (keys with or without the base prefix).

  Returns:
    (params, missing, unused): params, a nested dict of float32 numpy arrays
    holding every parameter the state dict has; missing, the deepl paths it
    lacks (tuples of names); unused, its keys the model has no use for.

  Raises:
    UserError: a tensor whose shape is not the model's: "{where}: {its key and
      shapes}: {fix}".
  """
  flat, missing, mismatched, unused = _convert(model, state_dict, {
      path: leaf.shape for path, leaf in _flat(_abstract_params(model)).items()})
  if mismatched:
    raise UserError(f'{where}: {mismatched[0]}: {fix}')
  return traverse_util.unflatten_dict(flat), missing, unused


def to_state_dict(model, params) -> dict[str, np.ndarray]:
  """The HF state dict (float32, with the base prefix) of `model`'s params, as `save` writes it.

  Tied tensors (GPT-2's lm_head, BERT's MLM decoder) are left out, as
  save_pretrained leaves them.
  """
  family = _family(model)
  flat = {path: np.asarray(leaf) for path, leaf in _flat(params).items()}
  state = {**hf_mapping.to_hf(family.rules(model), flat), **family.constants(model)}
  return {key if family.is_head(key) else family.BASE_PREFIX + key: value
          for key, value in state.items()}


# ------------------------------------------------------------------ load and save


def load(path, *, seed: int = 0):
  """(deepl model, {'params': ...}) equal to the HF model in folder `path`.

  Parameters are float32 numpy arrays. Any the folder lacks (a BertModel's
  MLM head) are initialised from PRNGKey(seed); a warning names them, and
  the folder's tensors the model leaves unused.
  """
  name, fields = model_fields(path)
  model = models.build(name, **fields)
  params, missing, unused = from_state_dict(
      model, read_state_dict(path), where=weights_file(path),
      fix=f'the weights are not the model {CONFIG_FILE} describes: save or download the folder '
          'again, its files from one model')
  flat = traverse_util.flatten_dict(params)
  if missing:
    fresh = jax.jit(lambda: model.init(jax.random.PRNGKey(seed), jnp.zeros((1, 1), jnp.int32),
                                       train=False))()['params']
    fresh = traverse_util.flatten_dict(fresh)
    for param in missing:
      flat[param] = np.asarray(fresh[param])
  if missing or unused:
    warnings.warn(
        f'{path}: ' + '; '.join(
            part for part in (
                missing and f'not in the folder, so initialised fresh: '
                            f'{", ".join("/".join(param) for param in missing)}',
                unused and f'in the folder but no part of a deepl {name}: {", ".join(unused)}')
            if part), stacklevel=2)
  return model, {'params': traverse_util.unflatten_dict(flat)}


def save(model, variables, path, *, config_overrides: dict | None = None) -> None:
  """Writes `model` with `variables` as an HF folder: config.json and model.safetensors.

  transformers' AutoModel classes (AutoModelForCausalLM, AutoModelForMaskedLM,
  AutoModelForSequenceClassification, AutoModelForTokenClassification) load
  it with no missing or unexpected keys. Weights are written in float32.
  `config_overrides` are merged into config.json (e.g. the tokenizer's
  bos/eos/pad token ids).

  Raises:
    UserError: the model has no HF equivalent (e.g. a pre-LN deepl BERT),
      naming the fields that keep it from one.
  """
  config = {**to_config(model), **(config_overrides or {})}
  state = to_state_dict(model, meta.unbox(variables)['params'])
  path = os.fspath(path)
  os.makedirs(path, exist_ok=True)
  # Written aside and moved into place: a save cut short never leaves a
  # truncated model.safetensors under the real name.
  partial = os.path.join(path, WEIGHTS_FILE + '.partial')
  safetensors.numpy.save_file(state, partial, metadata={'format': 'pt'})
  os.replace(partial, os.path.join(path, WEIGHTS_FILE))
  with open(os.path.join(path, CONFIG_FILE), 'w', encoding='utf-8') as f:
    json.dump(config, f, indent=2, sort_keys=True)


def load_params(path, model, params):
  """`params` of `model` with every parameter the HF folder `path` has copied in.

  For starting a run from a folder, as deepl.init_from does from a run: the
  model must be the folder's model (model_fields) in every field that
  decides the parameters' shapes or values; parameters the folder lacks (a
  new head) keep their fresh init, as does a classification head whose
  class count differs from the folder's. Arrays take the dtypes of `params`.

  Returns:
    (new params, fresh): fresh lists the parameters (keystr paths) that kept
    their init.

  Raises:
    UserError: the folder is another kind of model, differs in a field
      (naming it and its value there), or shares no parameter with `model`.
  """
  family = _family(model)
  fields_for(path, type(model), {field: getattr(model, field) for field in family.STRUCTURE})
  leaves = _flat(params)
  flat, _, mismatched, _ = _convert(model, read_state_dict(path),
                                    {path_: leaf.shape for path_, leaf in leaves.items()})
  for mismatch in mismatched:
    if mismatch.rule.deepl[0] not in family.HEADS:
      raise UserError(f'{weights_file(path)}: {mismatch}: the weights are not the model '
                      f'{CONFIG_FILE} describes: save or download the folder again')
  fresh = []

  def take(key_path, leaf):
    deepl_path = tuple(k.key for k in key_path if isinstance(k, jax.tree_util.DictKey))
    if deepl_path not in flat:
      fresh.append(jax.tree_util.keystr(key_path))
      return leaf
    return np.asarray(flat[deepl_path]).astype(leaf.dtype)

  new = jax.tree_util.tree_map_with_path(take, params)
  if len(fresh) == len(leaves):
    raise UserError(f'{path} shares no parameter with this {type(model).__name__}')
  return new, fresh
