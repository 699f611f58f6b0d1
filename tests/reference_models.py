"""The models of the registered personas as they were when the initial-weight fixtures were recorded
(tests/fixtures/init_hashes_*.json), for the personas registered differently since. The identity tests promise
that the code still builds those models with the same weights; a persona's new registration is a new model,
which no fixture recorded.

- ada_lovelace swapped adaptive_softmax (with tied tails) for byte_ngram_embedding (docs/personas/ada_lovelace.md);
- alan_turing swapped good_turing_prior for ngram_memory (docs/personas/alan_turing.md).
"""

from dreamteam.config import GPTConfig

REFERENCE_MODELS = {
    "ada_lovelace": GPTConfig(components=("moe_mlp", "adaptive_softmax"), adaptive_softmax_tied_tails=True),
    "alan_turing": GPTConfig(components=("muon", "memory_tape", "good_turing_prior")),
}
