"""eagle_jax: Embedding-Aligned Guided LanguagE (arXiv 2406.00024) in JAX/Flax."""

__version__ = "0.1.0"
