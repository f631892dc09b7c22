"""`deepl predict`: a trained seq2seq model, classifier or speech recognizer on your own input.

  deepl predict --workdir=runs/dates_seq2seq --input="07/04/2023"        # July 4, 2023
  deepl predict --workdir=runs/dates_seq2seq --beam_size=4 --input=- < sources.txt
  deepl predict --workdir=runs/sst2_gru --input="a gorgeous , witty film"  # positive<TAB>1.0000
  deepl predict --workdir=runs/digits_cnn --input=digit.png                # 1<TAB>1.0000
  deepl predict --workdir=runs/spoken_digits_cnn --input=seven.wav         # 7<TAB>1.0000
  deepl predict --workdir=runs/spoken_numbers_ctc --input=clip.wav         # four one seven

The run's newest checkpoint (or `step`), tokenizer and config.json are used,
and each input is made into a batch row as its data pipeline makes one: a
seq2seq source padded to data.max_source, a classifier's text cut to
data.max_length tokens, an image file (any format Pillow reads) converted to
the data set's channels and resized to its height and width, as uint8 pixels
the task scales, a WAV file (any rate and sample format: resampled to 16 kHz
mono, at most data.max_seconds long) as a waveform the task turns into
features. Seq2seq models decode as the run's eval does (greedy, or beam search
with task_options.beam_size; --beam_size overrides it), and so do CTC
recognizers; classifiers print the most likely label and its probability,
tab-separated. --input=- reads one input (text, or an image's or WAV file's
path) per line from stdin and prints one line per input, in order. Language
models: deepl sample.
"""

import functools
import os
import sys

import jax
import numpy as np

from deepl.data import audio_io
from deepl.data import seq2seq_text
from deepl.data import text as text_lib
from deepl.errors import UserError
from deepl.inference import trained_run
from deepl.tasks import speech_inputs

READS_A_RUN = '<a seq2seq, classifier or CTC run>, e.g. --workdir=runs/dates_seq2seq'
# Inputs per compiled call, at most: one program serves any number of lines.
CHUNK = 64


def run(config, workdir: str, flags) -> None:
  print('\n'.join(predict(config, workdir, _read_inputs(flags.input), beam_size=flags.beam_size,
                          step=flags.step)))


def _read_inputs(value: str | None) -> list[str]:
  if value is None:
    raise UserError('deepl predict needs --input=TEXT, or --input=- and one input per line '
                    'on stdin')
  if value != '-':
    return [value]
  return [line.rstrip('\r\n') for line in sys.stdin]


def predict(config, workdir: str, inputs: list[str], *, beam_size: int | None = None,
            step: int | None = None) -> list[str]:
  """One output line per input text, from checkpoint `step` (default the newest).

  `config` is the run's config.json.
  """
  if not inputs:
    raise UserError('no input: give --input=TEXT, or --input=- and one input per line on stdin')
  if beam_size is not None and beam_size < 1:
    raise UserError(f'--beam_size={beam_size}: use 1 (greedy) or more beams')
  if config.task not in trained_run.PREDICTS:
    hint = ('deepl sample continues text from it' if config.task == 'causal_lm' else
            'fine-tune it with --config.init_from, then predict with that run')
    raise UserError(f"{workdir} holds a '{config.task}' run: deepl predict runs seq2seq "
                    f'models, classifiers and CTC recognizers; {hint}')
  if beam_size is not None:
    if config.task not in ('seq2seq', 'ctc'):
      raise UserError(f'--beam_size is for seq2seq and ctc runs; {workdir} holds a classifier')
    config.task_options.beam_size = beam_size
  trained = trained_run.load(workdir, config, step)
  if trained.preprocess:
    rows = {'image': _read_encoded(inputs, trained.preprocess)}
  elif trained.image_shape:
    rows = {'image': _read_images(inputs, trained.image_shape)}
  elif trained.is_audio:
    rows = _read_waves(inputs, trained.config)
  elif config.task == 'seq2seq':
    rows = _seq2seq_rows(trained, _encode(trained.tokenizer, inputs))
  else:
    rows = _classifier_rows(trained, _encode(trained.tokenizer, inputs))
  fn = {'seq2seq': _decode, 'ctc': _transcribe}.get(config.task, _classify)
  out = []
  chunk = min(CHUNK, len(inputs))  # one input is one row, not 64
  for start in range(0, len(inputs), chunk):
    batch = {k: _pad_rows(v[start:start + chunk], chunk) for k, v in rows.items()}
    out.extend(fn(trained, batch)[:len(inputs) - start])
  return out


def _where(index: int, count: int) -> str:
  return f'input line {index + 1}' if count > 1 else '--input'


def _encode(tokenizer, inputs) -> list[list[int]]:
  out = []
  for index, text in enumerate(inputs):
    try:
      out.append(tokenizer.encode(text))
    except ValueError as err:
      raise UserError(f'{_where(index, len(inputs))}: {err}') from None
  return out


def _pad_rows(rows: np.ndarray, size: int) -> np.ndarray:
  """A chunk filled to `size` rows with copies of its last row: one shape, one compile."""
  return np.concatenate([rows, np.repeat(rows[-1:], size - len(rows), axis=0)])


def _seq2seq_rows(trained, ids) -> dict:
  limit = trained.config.data.max_source
  for index, seq in enumerate(ids):
    if len(seq) > limit:
      # The training data never held a longer source: its positions were never learned.
      raise UserError(f'{_where(index, len(ids))} has {len(seq)} tokens; this run was trained '
                      f'on sources of at most {limit} (data.max_source)')
  source = seq2seq_text.Seq2SeqSource(ids, [[]] * len(ids), max_source=limit,
                                      max_target=trained.config.data.max_target,
                                      bos=trained.task.bos, eos=trained.task.eos)
  return {'inputs': source.inputs, 'input_length': source.input_length}


def _each_image(paths, read) -> np.ndarray:
  """np.stack of read(path) for each path; a file that fails is one UserError naming it."""
  out = []
  for index, path in enumerate(paths):
    try:
      out.append(read(os.path.expanduser(path)))
    except (OSError, ValueError) as err:  # missing, unreadable, not an image
      reason = str(err).splitlines()[0] if str(err) else type(err).__name__
      raise UserError(f'{_where(index, len(paths))}: cannot read an image from {path!r} '
                      f'({reason})') from None
  return np.stack(out)


def _read_encoded(paths, preprocess) -> np.ndarray:
  """Image files as an encoded-image run's eval saw them (crop, resize, normalisation)."""
  def read(path):
    with open(path, 'rb') as f:
      return preprocess(f.read())
  return _each_image(paths, read)


def _read_images(paths, shape) -> np.ndarray:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  height, width, channels = shape

  def read(path):
    with Image.open(path) as image:
      image = image.convert('L' if channels == 1 else 'RGB')
      if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
      return np.asarray(image).reshape(shape)
  return _each_image(paths, read)


def _read_waves(paths, config) -> dict:
  """Each WAV file at 16 kHz, zero-padded to data.max_seconds: one shape, one compile."""
  audio = np.zeros((len(paths), speech_inputs.max_samples(config)), np.float32)
  lengths = np.zeros(len(paths), np.int32)
  for index, path in enumerate(paths):
    wave = audio_io.read_wav(os.path.expanduser(path), max_seconds=config.data.max_seconds)
    audio[index, :len(wave)] = wave[:audio.shape[1]]  # resampling may add a sample
    lengths[index] = min(len(wave), audio.shape[1])
  return {'audio': audio, 'length': lengths}


def _classifier_rows(trained, ids) -> dict:
  source = text_lib.ClassificationTextSource(ids, np.zeros(len(ids)),
                                             trained.config.data.max_length)
  return {'tokens': source.tokens, 'length': source.lengths}


@functools.partial(jax.jit, static_argnums=(0, 3))
def _decoded_ids(task, params, batch, max_len):
  return task.decode(params, batch['inputs'], batch['input_length'], max_len)


def _decode(trained, batch) -> list[str]:
  # The decoder emits the target and its EOS: max_target + 1 tokens, as in eval.
  ids = np.asarray(_decoded_ids(trained.task, trained.variables['params'], batch,
                                trained.config.data.max_target + 1))
  return [seq2seq_text.decode_target(trained.tokenizer, row) for row in ids]


@functools.partial(jax.jit, static_argnums=0)
def _transcribed_ids(task, variables, batch):
  return task.transcribe(variables, batch)


def _transcribe(trained, batch) -> list[str]:
  ids, lengths = map(np.asarray, _transcribed_ids(trained.task, trained.variables, batch))
  return [trained.tokenizer.decode(row[:n]) for row, n in zip(ids, lengths)]


@functools.partial(jax.jit, static_argnums=0)
def _probabilities(task, variables, batch):
  logits = task.model.apply(variables, *task.model_inputs(batch), train=False)
  return jax.nn.softmax(logits.astype(np.float32), axis=-1)


def _classify(trained, batch) -> list[str]:
  probs = np.asarray(_probabilities(trained.task, trained.variables, batch))
  names = trained.label_names
  best = probs.argmax(-1)
  return [f'{names[c] if names else c}\t{p[c]:.4f}' for c, p in zip(best, probs)]
