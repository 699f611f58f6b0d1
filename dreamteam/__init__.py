"""DreamTeam persona models: the framework-neutral core.

Protocol constants (protocol), configs (config), the persona registry (registry), data preparation and
loading (data), run records (runs), argument checks shared by every command line (arguments) and the
components' framework-neutral math. None of it imports torch, jax or an engine (jaxmodel, torchport,
parity, train_mps); tests/test_layout.py checks that. The tools a user runs on the engines (the `dreamteam`
command line, bench, report, evaluate, check, propose, evolve) are the subpackage dreamteam.tools.
"""

__version__ = "0.1.0"
