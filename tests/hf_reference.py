"""transformers' own models as the reference for deepl.interop.huggingface's tests.

Small random GPT-2 and BERT models built offline from a config (no download)
in odd sizes: 3 layers, 6 heads of 8, vocabulary 1,003, context 77, dropout
off; the inputs and losses both sides compute; and the two sides of llm.c's
bar, ten AdamW steps: torch.optim.AdamW on the HF model, optax.adamw with
torch's defaults on deepl's.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

VOCAB, CONTEXT, LAYERS, HEADS, WIDTH = 1003, 77, 3, 6, 48
# torch.optim.AdamW's defaults, spelled out: optax must take the same.
LR, BETAS, EPS, WEIGHT_DECAY = 1e-3, (0.9, 0.999), 1e-8, 0.01

transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()
torch.set_num_threads(1)  # the suite runs two workers on two cores


def gpt2(folder, **config):
  """A random GPT2LMHeadModel saved to `folder`; returns it (eval mode)."""
  torch.manual_seed(0)
  config = transformers.GPT2Config(
      vocab_size=VOCAB, n_positions=CONTEXT, n_embd=WIDTH, n_layer=LAYERS, n_head=HEADS,
      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None, eos_token_id=None,
      **config)
  return _saved(transformers.GPT2LMHeadModel(config), folder)


def bert(cls, folder, **config):
  """A random BERT of class `cls` (e.g. transformers.BertForMaskedLM) saved to `folder`."""
  torch.manual_seed(0)
  config = transformers.BertConfig(
      vocab_size=VOCAB, max_position_embeddings=CONTEXT, hidden_size=WIDTH,
      num_hidden_layers=LAYERS, num_attention_heads=HEADS, intermediate_size=100,
      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **config)
  return _saved(cls(config), folder)


def _saved(model, folder):
  model.save_pretrained(folder)
  return model.eval()


def gpt2_loss(logits, tokens):
  """Mean next-token cross-entropy, as GPT2LMHeadModel's loss with labels=input_ids."""
  return optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], tokens[:, 1:]).mean()


# ------------------------------------------------------------------ BERT

PAD, CLS, SEP, MASK = 0, 2, 3, 4
NUM_LABELS = 3
# kind -> (HF class, the Auto class that loads it, config)
BERTS = {
    'mlm': (transformers.BertForMaskedLM, transformers.AutoModelForMaskedLM, {}),
    'sequence': (transformers.BertForSequenceClassification,
                 transformers.AutoModelForSequenceClassification, dict(num_labels=NUM_LABELS)),
    'token': (transformers.BertForTokenClassification,
              transformers.AutoModelForTokenClassification, dict(num_labels=NUM_LABELS)),
}


def save_vocabulary(folder):
  """A WordPiece vocab.txt with BERT's special tokens, [MASK] at id 4."""
  words = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'] + [f'w{i}' for i in range(5, VOCAB)]
  (folder / 'vocab.txt').write_text('\n'.join(words) + '\n')


def bert_folder(kind, folder):
  """A random BERT of `kind` saved to `folder` with a vocabulary; returns it (eval mode)."""
  hf_model = bert(BERTS[kind][0], folder, **BERTS[kind][2])
  save_vocabulary(folder)
  return hf_model


def bert_batch(seed, batch=2, learnable=False):
  """Padded [CLS] w... [SEP] inputs with lengths, token types, [MASK]ed positions and labels.

  Random words, or `learnable` ones: arithmetic sequences a masked word can
  be told from, whose words decide the token labels, and whose first word
  after [CLS] the sentence label.
  """
  rng = np.random.default_rng(seed)
  lengths = np.array([CONTEXT, 50][:batch] + [30] * (batch - 2))
  valid = np.arange(CONTEXT)[None] < lengths[:, None]
  words = (5 + patterned_batches(1, batch, seed)[0] if learnable else
           rng.integers(5, VOCAB, (batch, CONTEXT)))
  tokens = np.where(valid, words, PAD)
  tokens[:, 0] = CLS
  tokens[np.arange(batch), lengths - 1] = SEP
  label = rng.integers(0, NUM_LABELS, batch)
  if learnable:
    tokens[:, 1] = 5 + label
  masked = valid & (rng.random(tokens.shape) < 0.15)
  masked[:, 0] = False
  masked[:, 1] = True  # at least one per sentence
  return dict(
      tokens=tokens, lengths=lengths, valid=valid, masked=masked,
      types=np.where(np.arange(CONTEXT)[None] >= lengths[:, None] // 2, 1, 0) * valid,
      label=label,
      tags=np.where(valid, tokens % NUM_LABELS if learnable else
                    rng.integers(0, NUM_LABELS, tokens.shape), -100))


def bert_hf_call(kind, hf_model, b):
  """transformers' forward (with its loss) on batch b, inputs as a tokenizer and collator give."""
  tensor = torch.tensor
  inputs = dict(attention_mask=tensor(b['valid'].astype(np.int64)),
                token_type_ids=tensor(b['types']))
  if kind == 'mlm':
    return hf_model(tensor(np.where(b['masked'], MASK, b['tokens'])), **inputs,
                    labels=tensor(np.where(b['masked'], b['tokens'], -100)))
  labels = b['label'] if kind == 'sequence' else b['tags']
  return hf_model(tensor(b['tokens']), **inputs, labels=tensor(labels))


def bert_deepl_loss(kind, model, params, b, train):
  """(the loss transformers computes: mean cross-entropy over what is labelled, deepl's logits).

  The MLM gets the original tokens and `masked`: the model reads mask_token_id there.
  """
  args = (b['tokens'], b['lengths'])
  if kind == 'mlm':
    logits = model.apply({'params': params}, *args, train=train, masked=b['masked'],
                         token_types=b['types'])
    labels, weight = b['tokens'], b['masked']
  elif kind == 'sequence':
    logits = model.apply({'params': params}, *args, train=train, token_types=b['types'])
    labels, weight = b['label'], jnp.ones(b['label'].shape, bool)
  else:
    logits = model.apply({'params': params}, *args, train=train, token_types=b['types'])
    labels, weight = jnp.maximum(b['tags'], 0), b['tags'] >= 0
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  return jnp.sum(losses * weight) / jnp.sum(weight), logits


# ------------------------------------------------------------------ ten AdamW steps


def torch_adamw(model, batches, loss_fn):
  """Ten (or len(batches)) AdamW steps on the HF model; (losses, final state dict as numpy)."""
  model.train()  # dropout is off: train mode only so nothing differs from a real run
  optimizer = torch.optim.AdamW(model.parameters(), lr=LR, betas=BETAS, eps=EPS,
                                weight_decay=WEIGHT_DECAY)
  losses = []
  for batch in batches:
    optimizer.zero_grad()
    loss = loss_fn(model, batch)
    loss.backward()
    optimizer.step()
    losses.append(loss.item())
  model.eval()
  return losses, {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def optax_adamw(apply_loss, params, batches):
  """The same steps on deepl's side: optax.adamw with torch's defaults; (losses, params).

  torch decays every parameter it is given (model.parameters(): biases,
  LayerNorms and embeddings too), so no mask. Both add eps to
  sqrt(v / (1 - b2^t)), and both decay by lr * weight_decay * p from the
  parameters before the step.
  """
  optimizer = optax.adamw(LR, b1=BETAS[0], b2=BETAS[1], eps=EPS, eps_root=0.0,
                          weight_decay=WEIGHT_DECAY, mask=None)

  @jax.jit
  def step(params, opt_state, batch):
    loss, grads = jax.value_and_grad(apply_loss)(params, batch)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  opt_state, losses = optimizer.init(params), []
  for batch in batches:
    params, opt_state, loss = step(params, opt_state, batch)
    losses.append(float(loss))
  return losses, params


def relative(ours, theirs) -> tuple[float, float]:
  """(max |ours - theirs|, that over max |theirs|)."""
  ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
  diff = float(np.abs(ours - theirs).max())
  return diff, diff / float(np.abs(theirs).max())


def patterned_batches(count, batch=2, seed=0):
  """`count` (batch, CONTEXT) token arrays of arithmetic sequences mod 40: learnable, so ten
  steps move the loss well off log(VOCAB)."""
  rng = np.random.default_rng(seed)
  return [(rng.integers(0, 40, (batch, 1)) + rng.integers(1, 4, (batch, 1)) *
           np.arange(CONTEXT)) % 40 for _ in range(count)]


def check_trained_params(ours: dict, theirs: dict) -> tuple[float, float, str]:
  """Asserts two trained HF state dicts agree; returns (largest difference, its key,
  the 99.99th percentile of all differences).

  Every element within a tenth of one step's learning rate, and all but one
  in ten thousand within 1e-5. Adam divides each gradient by its own
  running magnitude, so an element whose gradient is nearly zero at the
  first step (one of GPT-2's was 3e-9, the median 1e-3) takes a step set by
  its rounding error, which differs between any two implementations. Key
  biases are such elements everywhere: softmax ignores a constant added to
  every score, so their gradient is zero in exact arithmetic.
  """
  diffs = {key: np.abs(np.asarray(value, np.float64) - theirs[key]) for key, value in ours.items()}
  worst = max((float(d.max()), key) for key, d in diffs.items())
  percentile = float(np.quantile(np.concatenate([d.ravel() for d in diffs.values()]), 0.9999))
  assert worst[0] < LR / 10, worst
  assert percentile < 1e-5, percentile
  return worst[0], worst[1], percentile
