"""The tools: what a user runs on the engines and their run records (the `dreamteam` command line, bench,
report, the candidate-evaluation loop: evaluate, check, propose, evolve). They import the core
(dreamteam.protocol, config, registry, data, runs) at module level and an engine (train_mps, jaxmodel,
torchport, parity) only inside the command that runs it."""
