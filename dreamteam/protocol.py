"""The frozen DreamTeam protocol (docs/protocol.md, "The frozen protocol").

These numbers are fixed for every persona and every candidate; `train_mps.py` keeps them as literals
in its frozen block and a test checks that the two agree.
"""

BATCH_SIZE = 8
BLOCK_SIZE = 64
N_LAYER = 4
N_HEAD = 4
N_EMBD = 32
MAX_ITERS = 10001
EVAL_INTERVAL = 100
DEVICE = "mps"

# GPT-2 BPE has 50257 ids; nanoGPT pads the embedding to 50304 (a multiple of 64).
GPT2_VOCAB_SIZE = 50257
VOCAB_SIZE = 50304

# Honest metrics (docs/protocol.md, "Metrics"): full-validation loss every CHECKPOINT_INTERVAL iterations.
CHECKPOINT_INTERVAL = 1000
FITNESS_MINUTE_WEIGHT = 0.01


def fitness(best_vloss: float, elapsed_min: float) -> float:
    """DreamTeam's fitness: best_vloss + 0.01 * elapsed_min (lower is better)."""
    return float(best_vloss) + FITNESS_MINUTE_WEIGHT * float(elapsed_min)
