"""Walking a jaxpr into the jaxprs its equations hold (jit, scan, cond, remat, custom VJP/JVP)."""

from jax.extend import core as jex_core


def subjaxprs(eqn):
  """The jaxprs one equation holds in its parameters."""
  for value in eqn.params.values():
    for v in value if isinstance(value, (tuple, list)) else (value,):
      if isinstance(v, jex_core.ClosedJaxpr):
        yield v.jaxpr
      elif isinstance(v, jex_core.Jaxpr):
        yield v


def equations(jaxpr):
  """Every equation of `jaxpr`, each followed by those of the jaxprs it holds, depth first."""
  for eqn in jaxpr.eqns:
    yield eqn
    for sub in subjaxprs(eqn):
      yield from equations(sub)
