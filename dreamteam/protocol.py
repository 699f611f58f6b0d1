"""The frozen DreamTeam protocol (docs/protocol.md; docs/loop.md states it for candidates).

These numbers are fixed for every persona and every candidate; `train_mps.py` keeps them as literals
in its frozen block and a test checks that the two agree. dreamteam/tools/check.py checks candidates against
exactly what is written here:

- the frozen literals FROZEN_LITERALS (and eval_interval, where a candidate names it, EVAL_INTERVAL);
- the data read from DATA_FILES (train.bin, val.bin) as uint16 GPT-2 token ids;
- the device DEVICE ('mps'; the harness substitutes the machine's);
- exactly one optimizer step per iteration, one training forward and one backward for it, MAX_ITERS of them;
- an evaluation at every iteration with `it % EVAL_INTERVAL == 0`, before or after that iteration's step (so
  the k-th evaluation follows EVAL_INTERVAL * k or EVAL_INTERVAL * k + 1 optimizer steps), on one batch of
  BATCH_SIZE x BLOCK_SIZE validation tokens;
- `return best_vloss, elapsed_min` (RETURN_NAMES), each a float or a 0-d tensor (the harness calls float()),
  best_vloss the lowest of the evaluations, elapsed_min the minutes since train() began.
"""

BATCH_SIZE = 8
BLOCK_SIZE = 64
N_LAYER = 4
N_HEAD = 4
N_EMBD = 32
MAX_ITERS = 10001
EVAL_INTERVAL = 100
EVAL_BATCHES = 1  # validation batches per evaluation
DEVICE = "mps"
DATA_FILES = ("train.bin", "val.bin")
RETURN_NAMES = ("best_vloss", "elapsed_min")

# The names a candidate's train() sets to these literals and never reassigns. eval_interval is not among
# them: the original writes `if it % 100 == 0:`; where a candidate names it, it must be 100 too.
FROZEN_LITERALS = {
    "batch_size": BATCH_SIZE,
    "block_size": BLOCK_SIZE,
    "max_iters": MAX_ITERS,
    "n_layer": N_LAYER,
    "n_head": N_HEAD,
    "n_embd": N_EMBD,
    "device": DEVICE,
}
OPTIONAL_FROZEN = {"eval_interval": EVAL_INTERVAL}

# GPT-2 BPE has 50257 ids; nanoGPT pads the embedding to 50304 (a multiple of 64).
GPT2_VOCAB_SIZE = 50257
VOCAB_SIZE = 50304

# Honest metrics (docs/protocol.md, "Metrics"): full-validation loss every CHECKPOINT_INTERVAL iterations.
CHECKPOINT_INTERVAL = 1000
FITNESS_MINUTE_WEIGHT = 0.01


def eval_iterations(max_iters: int = MAX_ITERS) -> list[int]:
    """The iterations at which the protocol evaluates: it % 100 == 0 for it in range(max_iters) (101 for 10001)."""
    return list(range(0, max_iters, EVAL_INTERVAL))


def eval_step_counts(k: int) -> tuple[int, int]:
    """Optimizer steps taken before the k-th evaluation: 100 k (evaluated before the step) or 100 k + 1 (after)."""
    return EVAL_INTERVAL * k, EVAL_INTERVAL * k + 1


def fitness(best_vloss: float, elapsed_min: float) -> float:
    """DreamTeam's fitness: best_vloss + 0.01 * elapsed_min (lower is better)."""
    return float(best_vloss) + FITNESS_MINUTE_WEIGHT * float(elapsed_min)
