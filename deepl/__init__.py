"""deepl: a functional JAX research codebase."""

__version__ = "0.1.0"
