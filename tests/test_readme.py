"""The README's code runs as printed: its "Models in your own code" snippets, on 8 forced devices."""

import json
import re
import subprocess
import sys

from tests import helpers

# Run after each README snippet, in its namespace: what it claims, checked.
_AFTER_FIRST = """
import json
leaves = jax.tree.leaves
out = {
    'resnet_logits': list(logits.shape),
    'hvp_matches_params': jax.tree.structure(hvp) == jax.tree.structure(params)
        and all(h.shape == p.shape for h, p in zip(leaves(hvp), leaves(params))),
    'hvp_finite_nonzero': all(bool(jnp.isfinite(h).all()) for h in leaves(hvp))
        and any(float(jnp.abs(h).max()) > 0 for h in leaves(hvp)),
    'per_example_rows': sorted({int(g.shape[0]) for g in leaves(per_example)}),
    # the first image's gradient is the gradient of its loss alone
    'per_example_exact': max(float(jnp.abs(a[0] - b).max()) for a, b in zip(
        leaves(per_example), leaves(jax.grad(loss)(params, images[:1], labels[:1])))),
}
"""
_AFTER_SECOND = """
out.update(devices=jax.device_count(), gpt_logits=list(logits.shape),
           bytes=sum(x.nbytes for x in leaves(variables)),
           bytes_per_device=sharding.state_bytes_per_device(variables))
print(json.dumps(out))
"""


def _snippets() -> str:
  text = (helpers.ROOT / 'README.md').read_text()
  section = text.split('## Models in your own code', 1)[1].split('\n## ', 1)[0]
  # The Hugging Face snippet needs a downloaded folder: tests/test_huggingface_*.py run it.
  return '\n'.join(block for block in re.findall(r'```python\n(.*?)```', section, re.S)
                   if 'huggingface.load' not in block)


def test_models_in_your_own_code_snippets_run_as_printed():
  code = _snippets()
  assert 'jax.jvp' in code and 'jax.vmap' in code and 'init_sharded' in code
  first, second = code.split('from deepl import sharding', 1)
  program = first + _AFTER_FIRST + 'from deepl import sharding' + second + _AFTER_SECOND
  result = subprocess.run([sys.executable, '-c', program], capture_output=True, text=True,
                          timeout=600, cwd=helpers.ROOT,
                          # Op by op, as printed: each random initializer and op compiles alone.
                          env=helpers.env_for(devices=8, fast_compile=True))
  assert result.returncode == 0, result.stderr[-3000:]
  out = json.loads(result.stdout.strip().splitlines()[-1])
  assert out['hvp_matches_params'] and out['hvp_finite_nonzero']
  assert out['per_example_rows'] == [8]
  assert out['per_example_exact'] < 1e-5
  assert out['resnet_logits'] == [8, 10]
  assert out['devices'] == 8 and out['gpt_logits'] == [8, 64, 1000]
  # FSDP: every device holds about an eighth of the parameters, not all of them.
  assert out['bytes_per_device'] < out['bytes'] / 4
