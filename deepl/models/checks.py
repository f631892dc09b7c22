"""The input checks every model runs first: one clear ValueError naming the expected shape.

Without them a wrong rank or dtype fails deep inside a layer (`axis 3 is out
of bounds`, `too many values to unpack`), naming nothing the caller passed.
"""

import jax.numpy as jnp


def expect(x, model: str, what: str, *, ndim: int | None = None, min_ndim: int | None = None,
           kind: str | None = None) -> None:
  """Raises ValueError unless x has `ndim` dims (or at least `min_ndim`) and dtype `kind`.

  what: how the docs name the argument with its shape, e.g. 'tokens (batch, length)'.
  kind: 'integer' or 'floating'; None takes any.
  """
  shape, dtype = jnp.shape(x), jnp.result_type(x)
  wrong_rank = (ndim is not None and len(shape) != ndim) or (
      min_ndim is not None and len(shape) < min_ndim)
  wrong_kind = kind is not None and not jnp.issubdtype(dtype, getattr(jnp, kind))
  if wrong_rank or wrong_kind:
    kind_text = {'integer': 'int ', 'floating': 'float '}.get(kind, '')
    raise ValueError(f'{model} takes {kind_text}{what}; got {dtype} of shape {tuple(shape)}')
