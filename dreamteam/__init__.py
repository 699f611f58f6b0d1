"""DreamTeam persona models: the framework-neutral part.

Protocol constants, configs, the persona registry, data preparation and loading, metrics and the
command line. Nothing here imports torch or jax at module level.
"""

__version__ = "0.1.0"
