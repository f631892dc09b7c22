"""Every config key the code reads, with its default, in one place.

`default_config()` is also the embedded default experiment (a CNN on
scikit-learn's bundled 8x8 digits): `deepl train` with no --config runs it,
offline, in well under a minute. Experiment files start from it and change
what they need, so every key an override can name exists.
"""

import copy
import json
import math
import os

from etils import epath
from ml_collections import config_dict

from deepl import models
from deepl import optim
from deepl import tasks
from deepl.data import augment
from deepl.data import datasets
from deepl.data import images
from deepl.data import tokenizers
from deepl.errors import suggest
from deepl.errors import UserError

PARALLEL_MODES = ('jit', 'pmap')
COMPUTE_DTYPES = ('float32', 'bfloat16', 'float16')
NONFINITE_ACTIONS = ('stop', 'skip')
KERNELS = ('auto', 'xla', 'cpu')
ATTENTIONS = ('auto', 'xla', 'cudnn')
# Keys that moved: config.json files of earlier runs still load (`load_run_config`),
# and a config that sets the old key is told the new one.
MOVED = {'train.mask_rate': 'task_options.mask_rate',
         'eval.beam_size': 'task_options.beam_size',
         'eval.length_penalty': 'task_options.length_penalty'}


def default_config() -> config_dict.ConfigDict:
  c = config_dict.ConfigDict()
  c.seed = 0
  # Which of `deepl.models.names()`; every other key is a field of that model
  # (e.g. `dtype`); `num_classes` comes from the data set unless given.
  c.model = config_dict.ConfigDict({'name': 'cnn'})
  c.task = 'classification'  # 'classification' | 'causal_lm' | 'masked_lm' | 'seq2seq' | 'ctc'
  # The tasks' own settings, each declared with its default in its task's
  # OPTIONS (deepl/tasks/): masked_lm's mask_rate, seq2seq's beam_size and
  # length_penalty. Every task's are here so that any can be overridden; a
  # run's config.json records its own task's only.
  c.task_options = config_dict.ConfigDict(tasks.option_defaults())
  # Where a fresh start copies matching parameters from (fine-tuning): a
  # workdir or checkpoint folder (deepl.checkpoint.init_from), or 'hf:PATH', a
  # Hugging Face model folder, which also gives the model fields the config
  # leaves out (deepl/pretrained.py). Its tokenizer, if it has one, comes along.
  c.init_from = ''

  c.data = config_dict.ConfigDict()
  c.data.name = 'digits'                          # the TFDS name
  c.data.data_dir = config_dict.placeholder(str)  # None: TFDS's default
  c.data.manual_dir = config_dict.placeholder(str)  # offline raw files
  # Images: 'none' | 'crop' | 'crop_flip' (in the step, on arrays) |
  # 'inception_crop' (random resized crop and flip, on the host, for encoded
  # images such as image_folder's); speech: 'spec_augment'.
  c.data.augment = 'none'
  # Splits whose prepared files are at most this many MiB are held in memory;
  # bigger ones are streamed from their files (deepl/data/datasets.py).
  c.data.in_memory_max_mb = 1024
  # Processes that read and decode batches of streamed or encoded images
  # (deepl/data/pipeline.py): -1, one per core but one (0 for in-memory
  # arrays); 0, in the training process. Batches are the same for any count.
  c.data.workers = -1
  # Encoded images (image_folder): decoded, cropped and resized to this
  # square size; 'imagenet' normalisation gives float32 (x - mean) / std.
  c.data.image_size = 224
  c.data.normalize = 'none'            # 'none' | 'imagenet'
  # image_folder: the fraction of a split's images that may be unreadable
  # (skipped with a count) before preparing fails.
  c.data.max_unreadable = 0.001
  # text_files streamed from disk: the tokenizer learns from this much text.
  c.data.tokenizer_sample_mb = 32.0
  # Text: the tokenizer is built from the train split on the first run and
  # saved in workdir/tokenizer, so eval, resumes and sampling reuse it.
  c.data.tokenizer = 'char'            # 'char' | 'word' | 'sentencepiece' | 'hf:PATH'
  c.data.vocab_size = 8000             # sentencepiece only
  c.data.min_count = 1                 # word only: rarer words become <unk>
  c.data.max_length = 64               # text classification, masked LM: tokens per example
  c.data.max_source = 64               # seq2seq: source tokens per example
  c.data.max_target = 64               # seq2seq: target tokens, BOS/EOS not counted; ctc: transcript
  # Speech: the longest clip a run takes (longer data is an error; deepl predict refuses longer).
  c.data.max_seconds = 4.0
  c.data.context = 128                 # causal LM: tokens per training window
  # Classification text: sort each epoch by length within chunks of this many
  # batches (similar lengths, less padding); 0: random batches.
  c.data.sort_window = 0
  # Train batches made ahead in a background thread. 0: made on demand, which
  # is faster for in-memory data on a 2-core CPU; the host still overlaps the
  # next batch (and its host-to-device copy) with the running step either way.
  c.data.prefetch = 0

  c.train = config_dict.ConfigDict()
  c.train.batch_size = 64          # global, over all processes and devices
  c.train.num_steps = 1500
  c.train.log_every_steps = 50
  # Activations and matmuls in this dtype ('float32' | 'bfloat16' | 'float16');
  # parameters, optimizer state and losses stay float32. model.dtype overrides.
  c.train.compute_dtype = 'float32'
  # Transformers: recompute each block's activations in the backward pass
  # (less memory for about a third more compute).
  c.train.remat = False
  # A step whose loss, gradients or updated variables are not finite:
  # 'stop' ends the run (exit 2) naming the last checkpoint, all of which are
  # finite; 'skip' drops that update (as optax.apply_if_finite) and counts it
  # in the logged row's 'skipped'.
  c.train.on_nonfinite = 'stop'

  c.optim = config_dict.ConfigDict()
  c.optim.name = 'sgd'
  c.optim.lr = 0.1
  c.optim.momentum = 0.9
  c.optim.nesterov = False
  c.optim.b1 = 0.9
  c.optim.b2 = 0.999
  c.optim.eps = 1e-8
  c.optim.weight_decay = 0.0
  c.optim.schedule = 'warmup_cosine'
  c.optim.warmup_steps = 50
  c.optim.step_boundaries = (0.5, 0.75)
  c.optim.step_factor = 0.1
  c.optim.end_lr_ratio = 0.0
  c.optim.clip_norm = 0.0
  c.optim.accum_steps = 1

  c.eval = config_dict.ConfigDict()
  c.eval.every_steps = 500
  c.eval.batch_size = 0            # 0: the train batch size

  c.checkpoint = config_dict.ConfigDict()
  c.checkpoint.every_steps = 500
  c.checkpoint.keep = 3
  c.checkpoint.best_metric = ''    # e.g. 'accuracy': also keep the best eval
  c.checkpoint.best_mode = 'max'   # 'max' | 'min'

  c.parallel = 'jit'
  # The device mesh (deepl/sharding.py): 'data' splits the batch, 'fsdp' the
  # batch and the parameters and optimizer state, 'tensor' attention heads,
  # MLP columns and vocabulary. -1 takes the devices left over; the product
  # is the device count. parallel='pmap' takes data parallelism only.
  c.mesh = config_dict.ConfigDict({'data': -1, 'fsdp': 1, 'tensor': 1})
  # Logical axis -> mesh axes ('fsdp', 'data,fsdp', '' for none): every name
  # the models use, with its default; override one, e.g. rules.embed=''.
  c.mesh.rules = config_dict.ConfigDict(_default_rules())
  # The model's layer set (deepl/kernels): 'xla', flax's stock layers; 'cpu',
  # deepl's CPU speed paths (same variables and values); 'auto': 'cpu' where
  # the run's devices are CPUs, else 'xla'. Resolved once when a run starts
  # and written to its config.json.
  c.kernels = 'auto'
  # Transformers' attention: 'xla', or 'cudnn' (the fused flash kernel: GPUs,
  # bfloat16/float16); 'auto': 'cudnn' on a GPU computing in half precision.
  c.attention = 'auto'
  return c


def _default_rules() -> dict:
  from deepl import sharding  # pylint: disable=g-import-not-at-top
  return dict(sharding.DEFAULT_RULES)


def get_config(arg=None) -> config_dict.ConfigDict:
  """This file is itself an experiment file: the embedded default."""
  variant(arg)
  return default_config()


def variant(arg, choices=(), default=None):
  """The variant an experiment file was given (--config=file.py:variant), checked.

  No variant gives `default`. An experiment without variants passes no
  choices, so a variant given to it fails instead of being ignored: a typo
  must not train the default. ValueError, which `deepl` prints as one line.
  """
  if not arg or arg == default:
    return default
  if arg not in choices:
    known = f'choose from {", ".join(choices)}' if choices else 'this experiment has no variants'
    raise ValueError(f'unknown variant {arg!r}{suggest(arg, choices)}; {known}')
  return arg


def sibling_config(this_file: str, name: str, arg=None) -> config_dict.ConfigDict:
  """get_config(arg) of experiments/<name>.py next to `this_file`.

  Lets a variant experiment reuse another one's config; experiment files are
  loaded by path (config_flags), not imported as a package.
  """
  import importlib.util  # pylint: disable=g-import-not-at-top
  path = os.path.join(os.path.dirname(os.path.abspath(this_file)), f'{name}.py')
  spec = importlib.util.spec_from_file_location(f'deepl_experiment_{name}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def flatten(d, prefix=''):
  out = {}
  for k, v in d.items():
    key = f'{prefix}{k}'
    if isinstance(v, (config_dict.ConfigDict, dict)) and key != 'model':
      out.update(flatten(v, key + '.'))
    else:
      out[key] = v
  return out


def compute_dtype(config) -> str:
  """The dtype the model computes in: model.dtype if the experiment sets it."""
  return str(config.model.get('dtype') or config.train.compute_dtype)


def validate(config: config_dict.ConfigDict) -> None:
  """Every check of a config, in one place: raises UserError naming the first bad key and the fix.

  Reads no data and runs no JAX computation, so a typo fails at once rather
  than after a download. The command line calls it once, before anything
  else. (Whether the batch divides the devices is checked where the devices
  are known: deepl/parallel.py.)
  """
  _check_keys(config)
  if not isinstance(config.model.get('name'), str):
    raise UserError("config.model.name must be a model name, e.g. 'cnn'")
  given = flatten(config)
  positive = ('train.batch_size', 'train.num_steps', 'train.log_every_steps',
              'eval.every_steps', 'checkpoint.every_steps', 'checkpoint.keep',
              'data.vocab_size', 'data.min_count', 'data.max_length', 'data.max_source',
              'data.context', 'data.max_target', 'data.image_size')
  for key in positive:
    if given[key] <= 0:
      raise UserError(f'config.{key}={given[key]} must be a positive integer')
  if config.data.max_seconds <= 0:
    raise UserError(f'config.data.max_seconds={config.data.max_seconds} must be a positive '
                    'number of seconds')
  if config.eval.batch_size < 0:
    raise UserError('config.eval.batch_size must be >= 0 (0 means the train batch size)')
  if config.train.on_nonfinite not in NONFINITE_ACTIONS:
    raise UserError(f'config.train.on_nonfinite={config.train.on_nonfinite!r}: use one of '
                    f'{", ".join(NONFINITE_ACTIONS)}')
  if config.train.compute_dtype not in COMPUTE_DTYPES:
    raise UserError(f'config.train.compute_dtype={config.train.compute_dtype!r}: use one of '
                    f'{", ".join(COMPUTE_DTYPES)}')
  for key in ('sort_window', 'prefetch', 'in_memory_max_mb'):
    if config.data[key] < 0:
      raise UserError(f'config.data.{key}={config.data[key]} must be >= 0 (0 turns it off)')
  if config.data.workers < -1:
    raise UserError(f'config.data.workers={config.data.workers}: use -1 (one per core), '
                    '0 (in the training process) or a number of worker processes')
  if config.data.tokenizer_sample_mb <= 0:
    raise UserError(f'config.data.tokenizer_sample_mb={config.data.tokenizer_sample_mb} must '
                    'be positive')
  if not 0 <= config.data.max_unreadable <= 1:
    raise UserError(f'config.data.max_unreadable={config.data.max_unreadable} must be a '
                    'fraction in [0, 1]')
  if config.data.normalize not in images.NORMALIZATIONS:
    raise UserError(f'config.data.normalize={config.data.normalize!r} is unknown'
                    f'{suggest(config.data.normalize, images.NORMALIZATIONS)}; use one of '
                    f'{", ".join(images.NORMALIZATIONS)}')
  sizes = [config.mesh[axis] for axis in ('data', 'fsdp', 'tensor')]
  if sum(size == -1 for size in sizes) > 1 or any(size == 0 or size < -1 for size in sizes):
    raise UserError(f'config.mesh data={sizes[0]}, fsdp={sizes[1]}, tensor={sizes[2]}: give '
                    'each axis a positive size, and -1 to at most one (the devices left over)')
  from deepl import sharding  # pylint: disable=g-import-not-at-top
  sharding.logical_rules(config.mesh.rules)  # mesh axis names
  if config.parallel == 'pmap' and (config.mesh.fsdp != 1 or config.mesh.tensor != 1):
    raise UserError("parallel='pmap' is data parallelism only: set mesh.fsdp=1 and "
                    "mesh.tensor=1, or parallel='jit' to shard the state")
  if config.parallel not in PARALLEL_MODES:
    raise UserError(f"config.parallel='{config.parallel}' is unknown"
                    f"{suggest(config.parallel, PARALLEL_MODES)}; choose 'jit' or 'pmap'")
  for key, choices in (('kernels', KERNELS), ('attention', ATTENTIONS)):
    if config[key] not in choices:
      raise UserError(f"config.{key}='{config[key]}' is unknown{suggest(config[key], choices)}; "
                      f'choose one of {", ".join(choices)}')
  if config.kernels == 'cpu' and config.attention == 'cudnn':
    raise UserError("config.kernels='cpu' brings its own attention: set config.attention to "
                    "'xla' or 'auto', or config.kernels to 'xla'")
  if config.checkpoint.best_mode not in ('max', 'min'):
    raise UserError("config.checkpoint.best_mode must be 'max' or 'min'")
  _check_task(config)
  fields = models.check_config(config.model.name, model_kwargs(config))
  if config.train.remat and 'remat' not in fields:
    raise UserError(f"model {config.model.name!r} has no remat option (the transformers "
                    'have): set train.remat=False')
  datasets.check_name(config.data.name)
  augment.check_name(config.data.augment)
  if not tokenizers.is_known(config.data.tokenizer):
    raise UserError(f'config.data.tokenizer={config.data.tokenizer!r} is unknown'
                    f'{suggest(config.data.tokenizer, tokenizers.KINDS)}; use one of '
                    f'{", ".join(tokenizers.KINDS)}, or {tokenizers.HF_PREFIX}PATH for a '
                    'Hugging Face tokenizer folder')
  optim.validate(config.optim, config.train.num_steps)


def unknown_key(key: str, known) -> str:
  """The error for a config key that is not one: where it moved, or the close match."""
  if key in MOVED:
    return f"config key '{key}' is now '{MOVED[key]}'"
  return f"unknown config key '{key}'{suggest(key, known)}"


def _check_keys(config) -> None:
  defaults = flatten(default_config())
  for key, value in flatten(config).items():
    if key not in defaults:
      raise UserError(unknown_key(key, defaults))
    default = defaults[key]
    if default is not None and value is not None and not _same_type(default, value):
      raise UserError(
          f"config.{key}={value!r} has type {type(value).__name__}; "
          f"expected {type(default).__name__} (like the default {default!r})")


def _check_task(config) -> None:
  """The task's name, and options only it takes: another task's, changed, would be ignored."""
  task = tasks.get(config.task)
  for option, default in tasks.option_defaults().items():
    value = config.task_options[option]
    if option not in task.OPTIONS and value != default:
      takes = ', '.join(task.OPTIONS) or 'none'
      raise UserError(f'config.task_options.{option}={value!r}: task {config.task!r} does not '
                      f'take it (its options: {takes})')
  for option, value in task.options(config).items():
    if isinstance(value, float) and not math.isfinite(value):
      raise UserError(f'config.task_options.{option}={value!r} must be a finite number')
  task.check(config)


def _same_type(default, value) -> bool:
  if isinstance(default, bool) or isinstance(value, bool):
    return isinstance(default, bool) and isinstance(value, bool)
  if isinstance(default, float):
    return isinstance(value, (int, float))
  if isinstance(default, (tuple, list)):
    return isinstance(value, (tuple, list))
  return isinstance(value, type(default))


def model_kwargs(config: config_dict.ConfigDict) -> dict:
  return {k: v for k, v in config.model.items() if k != 'name'}


def to_json(config: config_dict.ConfigDict) -> str:
  """config.json: the whole config, with its own task's options only."""
  saved = config.to_dict()
  own = tasks.TASKS[config.task].OPTIONS if config.task in tasks.TASKS else {}
  saved['task_options'] = {k: v for k, v in saved.get('task_options', {}).items() if k in own}
  return json.dumps(saved, indent=2, sort_keys=True, default=str)


def load_run_config(workdir: str) -> config_dict.ConfigDict:
  """The resolved config a run wrote to workdir/config.json, written by any version of deepl."""
  path = epath.Path(workdir) / 'config.json'
  if not path.exists():
    raise UserError(f'{workdir} holds no run (no config.json): train one with '
                    f'deepl train --workdir={workdir}')
  try:
    saved = upgrade(json.loads(path.read_text()))
  except ValueError as err:
    raise UserError(f'{path} is damaged ({err}): restore it from a copy, or train a new '
                    '--workdir') from None
  # Keys added to deepl since the run was written take their defaults.
  config = default_config()
  _merge(config, saved)
  return config


def upgrade(saved: dict) -> dict:
  """A config.json dict of an earlier deepl in today's keys (see MOVED)."""
  saved = copy.deepcopy(saved)
  for old, new in MOVED.items():
    old_section, old_key = old.split('.')
    new_section, new_key = new.split('.')
    if old_key in saved.get(old_section, {}):
      saved.setdefault(new_section, {})[new_key] = saved[old_section].pop(old_key)
  data = saved.get('data', {})
  # data.max_length was also seq2seq's source length before data.max_source.
  if saved.get('task') == 'seq2seq' and 'max_source' not in data and 'max_length' in data:
    data['max_source'] = data['max_length']
  return saved


def _merge(config: config_dict.ConfigDict, saved: dict) -> None:
  for key, value in saved.items():
    if isinstance(value, dict) and key != 'model' and isinstance(config.get(key),
                                                                 config_dict.ConfigDict):
      _merge(config[key], value)
    else:  # the model's fields are its own: never mixed with the default model's
      config[key] = config_dict.ConfigDict(value) if isinstance(value, dict) else value
