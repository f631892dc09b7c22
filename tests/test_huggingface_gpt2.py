"""deepl's gpt against transformers' GPT-2: a random HF model loaded with
deepl.interop.huggingface gives its logits and loss, continues a prompt
greedily through the KV cache token for token as `generate`, and saves back
to a folder transformers loads with no missing or unexpected key (ten AdamW
steps: test_huggingface_adamw.py).

The HF models are built offline from a config (tests/hf_reference.py).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepl.interop import huggingface
from tests import hf_reference as ref

torch, transformers = ref.torch, ref.transformers


@pytest.fixture(scope='module')
def gpt2(tmp_path_factory):
  """(HF model, its folder, deepl model, deepl variables)."""
  folder = tmp_path_factory.mktemp('gpt2')
  hf_model = ref.gpt2(folder)
  model, variables = huggingface.load(folder)
  return hf_model, folder, model, variables


def _batches(count, batch=2, seed=0):
  rng = np.random.default_rng(seed)
  return [rng.integers(0, ref.VOCAB, (batch, ref.CONTEXT)) for _ in range(count)]


def test_fields_come_from_the_config(gpt2):
  _, _, model, _ = gpt2
  assert (model.vocab_size, model.num_layers, model.num_heads, model.width, model.max_len) == (
      ref.VOCAB, ref.LAYERS, ref.HEADS, ref.WIDTH, ref.CONTEXT)
  assert model.gelu_approximate and model.tie_embeddings and model.layer_norm_epsilon == 1e-5
  assert model.dropout == 0.0


def test_logits_and_loss_equal_transformers(gpt2):
  hf_model, _, model, variables = gpt2
  tokens = _batches(1)[0]

  @jax.jit
  def forward(variables, tokens):
    logits = model.apply(variables, tokens, train=False)
    return logits, ref.gpt2_loss(logits, tokens)

  logits, loss = forward(variables, jnp.asarray(tokens))
  with torch.no_grad():
    out = hf_model(torch.tensor(tokens), labels=torch.tensor(tokens))
  diff, rel = ref.relative(logits, out.logits.numpy())
  print(f'GPT-2 logits: max abs diff {diff:.3g}, relative to the largest {rel:.3g}; '
        f'loss {float(loss):.7f} vs {out.loss.item():.7f}')
  np.testing.assert_allclose(logits, out.logits.numpy(), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(float(loss), out.loss.item(), rtol=1e-6)


def test_greedy_continuation_through_the_kv_cache_equals_generate(gpt2):
  hf_model, _, model, variables = gpt2
  prompt, steps = _batches(1, batch=1, seed=2)[0][:, :9], 20

  @functools.partial(jax.jit, static_argnames='method')
  def decode(variables, tokens, cache, method='decode'):
    logits, cache = model.apply(variables, tokens, cache, method=method)
    return jnp.argmax(logits[:, -1], axis=-1), cache

  cache = model.apply(variables, 1, method='init_cache')
  token, cache = decode(variables, jnp.asarray(prompt), cache)
  ours = [int(token[0])]
  for _ in range(steps - 1):
    token, cache = decode(variables, token[:, None], cache)
    ours.append(int(token[0]))
  with torch.no_grad():
    theirs = hf_model.generate(torch.tensor(prompt), attention_mask=torch.ones_like(
        torch.tensor(prompt)), do_sample=False, max_new_tokens=steps, pad_token_id=0)
  assert ours == theirs[0, prompt.shape[1]:].tolist()


def test_save_then_from_pretrained_then_load_is_bit_exact(gpt2, tmp_path):
  _, _, model, variables = gpt2
  huggingface.save(model, variables, tmp_path / 'ours')
  reloaded, info = transformers.AutoModelForCausalLM.from_pretrained(
      tmp_path / 'ours', output_loading_info=True)
  assert type(reloaded).__name__ == 'GPT2LMHeadModel'
  assert not (info['missing_keys'] or info['unexpected_keys'] or info['mismatched_keys'])
  reloaded.save_pretrained(tmp_path / 'theirs')
  again, variables_again = huggingface.load(tmp_path / 'theirs')
  assert again == model
  jax.tree.map(np.testing.assert_array_equal, variables_again, variables)


def test_untied_output_layer_round_trips(tmp_path):
  hf_model = ref.gpt2(tmp_path / 'untied', tie_word_embeddings=False)
  model, variables = huggingface.load(tmp_path / 'untied')
  assert not model.tie_embeddings
  np.testing.assert_array_equal(variables['params']['embed']['head']['kernel'],
                                hf_model.lm_head.weight.detach().numpy().T)
  huggingface.save(model, variables, tmp_path / 'saved')
  _, info = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / 'saved',
                                                              output_loading_info=True)
  assert not (info['missing_keys'] or info['unexpected_keys'])
  jax.tree.map(np.testing.assert_array_equal, huggingface.load(tmp_path / 'saved')[1], variables)
