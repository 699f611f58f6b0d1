"""The Flax Linen reference of the persona models and their optax recipes. Imports jax, never torch."""
