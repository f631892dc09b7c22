"""The same train steps on any mesh: GPT, BERT, ViT, ResNet and an LSTM on 8 CPU devices.

Each model trains 3 steps of deepl's real train step (tools/benchmark.py's
synthetic batches) on the meshes (data=8), (fsdp=8), (data=2, fsdp=2,
tensor=2) and (tensor=8); where a model has no parameter to split over a mesh
axis, the mesh is refused. Losses agree to float32 reduction order.
"""

import json
import subprocess
import sys

import numpy as np
import pytest

from tests import helpers

_SCRIPT = '''
import functools, json, sys
import numpy as np
sys.path.insert(0, 'tools')
import benchmark
from deepl import config as config_lib, parallel, train
from deepl.errors import UserError

MODELS = {
  'gpt': ('causal_lm', 'tiny_shakespeare', dict(name='gpt', num_layers=1, num_heads=8, width=32,
                                                 max_len=16)),
  'bert': ('masked_lm', 'glue/sst2', dict(name='bert_mlm', num_layers=1, num_heads=8, width=32,
                                          max_len=16)),
  'vit': ('classification', 'cifar10', dict(name='vit', num_layers=1, num_heads=8, width=32,
                                            patch_size=8)),
  'resnet': ('classification', 'cifar10', dict(name='resnet20', widths=(8, 16, 16),
                                               stage_sizes=(1, 1, 1))),
  'lstm': ('causal_lm', 'tiny_shakespeare', dict(name='rnn_lm', embed_dim=8, hidden_dim=16,
                                                 num_layers=1)),
}
MESHES = {'data8': (8, 1, 1), 'fsdp8': (1, 8, 1), 'mixed': (2, 2, 2), 'tensor8': (1, 1, 8)}

def losses(name, mesh):
  task, data, model = MODELS[name]
  config = config_lib.default_config()
  config.task, config.data.name = task, data
  config.model = config_lib.config_dict.ConfigDict(model)
  config.data.context = config.data.max_length = 16
  config.train.batch_size = 16
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = MESHES[mesh]
  try:
    runner = parallel.make_runner(config)
  except UserError as err:
    return str(err)
  exp = benchmark.synthetic_experiment(config, vocab_size=64)
  try:
    state = exp.initial_state(runner)
  except UserError as err:
    return str(err)
  step = runner.compile_train(functools.partial(train.train_step, task=exp.task, tx=exp.tx))
  out = []
  for i in range(3):
    batch = exp.train_source.gather(np.arange(16 * i, 16 * (i + 1)))
    state, sums = step(state, runner.put_batch(batch))
    sums = runner.fetch(sums)
    out.append(float(sums['loss']) / max(float(sums['count']), 1.0))
  return out

print(json.dumps({name: {mesh: losses(name, mesh) for mesh in MESHES} for name in MODELS}))
'''


@pytest.fixture(scope='module')
def results():
  # Compiling the 18 train steps and their inits is nearly all the time: fast_compile halves it.
  result = subprocess.run([sys.executable, '-c', _SCRIPT], capture_output=True, text=True,
                          timeout=900, env=helpers.env_for(8, fast_compile=True), cwd=helpers.ROOT)
  assert result.returncode == 0, result.stderr
  return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize('model', ['gpt', 'bert', 'vit', 'resnet', 'lstm'])
def test_losses_agree_on_every_mesh_the_model_can_use(model, results):
  losses = results[model]
  reference = np.array(losses['data8'])
  assert len(reference) == 3 and np.isfinite(reference).all()
  used = [mesh for mesh, value in losses.items() if isinstance(value, list)]
  assert 'fsdp8' in used  # FSDP covers every family
  for mesh in used:
    np.testing.assert_allclose(losses[mesh], reference, rtol=2e-5, err_msg=mesh)


def test_tensor_parallelism_covers_the_transformers(results):
  for model in ('gpt', 'bert', 'vit'):
    assert isinstance(results[model]['tensor8'], list), results[model]['tensor8']
    assert isinstance(results[model]['mixed'], list), results[model]['mixed']


def test_a_mesh_a_model_cannot_use_is_refused_not_replicated(results):
  for mesh in ('mixed', 'tensor8'):
    assert results['resnet'][mesh].startswith('resnet20 has no parameter to split over '
                                              'mesh.tensor=')
