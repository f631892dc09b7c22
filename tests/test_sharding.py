"""deepl.sharding: the mesh from the config, the logical axis rules, and the specs they give."""

import json
import subprocess
import sys

import pytest

from deepl import sharding
from deepl.errors import UserError
from tests import helpers


def test_minus_one_fills_the_devices_left_over():
  assert sharding.mesh_shape({'data': -1, 'fsdp': 2, 'tensor': 2}, 8) == {
      'data': 2, 'fsdp': 2, 'tensor': 2}
  assert sharding.mesh_shape({'data': 1, 'fsdp': -1, 'tensor': 1}, 8)['fsdp'] == 8


@pytest.mark.parametrize('mesh,message', [
    ({'data': -1, 'fsdp': 3, 'tensor': 1}, 'does not divide the 8 devices'),
    ({'data': 2, 'fsdp': 2, 'tensor': 1}, 'needs 4 devices, this run has 8'),
    ({'data': -1, 'fsdp': -1, 'tensor': 1}, '-1 to at most one'),
    ({'data': 0, 'fsdp': 8, 'tensor': 1}, 'a positive size'),
])
def test_a_mesh_that_does_not_divide_the_devices_is_one_line(mesh, message):
  with pytest.raises(UserError, match=message):
    sharding.mesh_shape(mesh, 8)


def test_rules_default_and_override():
  rules = dict(sharding.logical_rules({'embed': '', 'batch': 'data'}))
  assert rules['embed'] == () and rules['batch'] == ('data',)
  assert rules['mlp'] == ('tensor',)
  with pytest.raises(UserError, match="unknown logical axis 'embd'"):
    sharding.logical_rules({'embd': 'fsdp'})
  with pytest.raises(UserError, match="'model' is not a mesh axis"):
    sharding.logical_rules({'embed': 'model'})


# Checked in a process with 8 CPU devices: the specs of real models on real meshes.
_SPECS = '''
import json, jax, jax.numpy as jnp
from deepl import models, sharding
from deepl.errors import UserError

def specs(name, mesh, fields, x):
  model = models.build(name, **fields)
  mesh = sharding.make_mesh(mesh)
  rules = sharding.logical_rules()
  with sharding.axis_rules(rules):
    abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
  try:
    specs, notes = sharding.partition_specs(abstract, mesh, rules, model=name)
  except UserError as err:
    return str(err)
  return {'block': {k: str(v) for k, v in jax.tree_util.tree_leaves_with_path(
      specs['params'].get('blocks_0', {}), is_leaf=lambda s: isinstance(s, jax.sharding.PartitionSpec))
      for k, v in [(jax.tree_util.keystr(k), v)]}, 'notes': notes}

tokens = jnp.ones((2, 8), jnp.int32)
gpt = dict(vocab_size=65, num_layers=1, num_heads=4, width=32, max_len=8)
out = {
  'gpt': specs('gpt', {'data': 2, 'fsdp': 2, 'tensor': 2}, gpt, tokens),
  'heads': specs('gpt', {'data': 1, 'fsdp': 1, 'tensor': 8}, gpt, tokens),
  'lstm_tensor': specs('rnn_lm', {'data': 4, 'fsdp': 1, 'tensor': 2},
                       dict(vocab_size=65, embed_dim=8, hidden_dim=8), tokens),
  'resnet_fsdp': specs('resnet20', {'data': 1, 'fsdp': 8, 'tensor': 1},
                       dict(widths=(8, 16, 16)), jnp.ones((2, 32, 32, 3))),
}
print(json.dumps(out))
'''


@pytest.fixture(scope='module')
def specs():
  result = subprocess.run([sys.executable, '-c', _SPECS], capture_output=True, text=True,
                          timeout=300, env=helpers.env_for(8), cwd=helpers.ROOT)
  assert result.returncode == 0, result.stderr
  return json.loads(result.stdout.strip().splitlines()[-1])


def test_transformer_weights_split_over_fsdp_and_tensor(specs):
  block = specs['gpt']['block']
  assert block["['attn']['query']['kernel']"] == "P('fsdp', 'tensor', None)"
  assert block["['attn']['out']['kernel']"] == "P('tensor', None, 'fsdp')"
  assert block["['mlp_in']['kernel']"] == "P('fsdp', 'tensor')"
  assert block["['mlp_out']['kernel']"] == "P('tensor', 'fsdp')"
  # 65 token ids do not split over tensor=2: that table stays whole, and says so.
  assert any("['token_embed']['embedding'] dimension 0 (vocab, 65)" in n
             for n in specs['gpt']['notes'])


def test_heads_that_do_not_divide_over_tensor_are_an_error(specs):
  assert specs['heads'].startswith('model.num_heads=4 does not divide over tensor=8 devices ')
  assert specs['heads'].endswith('(heads, 4)): pick a mesh that divides it')


def test_a_mesh_axis_the_model_cannot_use_is_an_error_not_replication(specs):
  assert specs['lstm_tensor'].startswith('rnn_lm has no parameter to split over mesh.tensor=2')


def test_every_resnet_convolution_splits_its_output_channels_over_fsdp(specs):
  assert specs['resnet_fsdp']['notes'] == []
