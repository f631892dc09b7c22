"""llm.c's bar: ten AdamW steps on the same batches give the same losses and
parameters in deepl (optax.adamw) as in transformers + torch.optim.AdamW, for
GPT-2, a BERT masked LM and a BERT sequence classifier, dropout off.

Each side starts from the same random HF folder (tests/hf_reference.py); the
batches are learnable, so the loss moves. The last step's parameters are
compared through huggingface.to_state_dict, in HF's layout.
"""

import jax.numpy as jnp
import numpy as np
import pytest

from deepl.interop import huggingface
from tests import hf_reference as ref

torch = ref.torch


def _gpt2(folder):
  """(HF model, deepl loss(params, batch), torch loss(model, batch), batches)."""
  hf_model = ref.gpt2(folder)
  model, variables = huggingface.load(folder)
  deepl_loss = lambda params, tokens: ref.gpt2_loss(
      model.apply({'params': params}, tokens, train=True), tokens)
  torch_loss = lambda m, tokens: m(torch.tensor(tokens), labels=torch.tensor(tokens)).loss
  return hf_model, model, variables, deepl_loss, torch_loss, ref.patterned_batches(10)


def _bert(kind):
  def setup(folder):
    hf_model = ref.bert_folder(kind, folder)
    model, variables = huggingface.load(folder)
    deepl_loss = lambda params, b: ref.bert_deepl_loss(kind, model, params, b, train=True)[0]
    torch_loss = lambda m, b: ref.bert_hf_call(kind, m, b).loss
    batches = [ref.bert_batch(seed, learnable=True) for seed in range(10)]
    return hf_model, model, variables, deepl_loss, torch_loss, batches
  return setup


@pytest.mark.parametrize('name,setup', [('GPT-2', _gpt2), ('BERT masked LM', _bert('mlm')),
                                        ('BERT sequence classifier', _bert('sequence'))])
def test_ten_adamw_steps_equal_torch(name, setup, tmp_path):
  hf_model, model, variables, deepl_loss, torch_loss, batches = setup(tmp_path)
  losses, params = ref.optax_adamw(deepl_loss, variables['params'],
                                   [jnp.asarray(b) if isinstance(b, np.ndarray) else
                                    {k: jnp.asarray(v) for k, v in b.items()} for b in batches])
  torch_losses, state = ref.torch_adamw(hf_model, batches, torch_loss)
  print(f'{name}, ten AdamW steps, loss in deepl and in torch:')
  for i, (ours, theirs) in enumerate(zip(losses, torch_losses)):
    print(f'  {i + 1:2d}  {ours:.7f}  {theirs:.7f}')
  np.testing.assert_allclose(losses, torch_losses, rtol=1e-5)
  assert losses[-1] < losses[0]  # it learned something
  worst, key, percentile = ref.check_trained_params(
      huggingface.to_state_dict(model, params), state)
  print(f'  parameters after ten steps: largest difference {worst:.3g} ({key}), '
        f'99.99th percentile {percentile:.3g}')
