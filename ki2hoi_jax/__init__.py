"""ki2hoi_jax: zero-shot human-object interaction detection (KI2HOI) in JAX/Flax."""

__version__ = "0.1.0"
