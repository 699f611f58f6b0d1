"""muon: MomentUm Orthogonalized by Newton-Schulz, for the 2-D matrices inside the blocks. Declaration only (no
framework-neutral numbers); the optimizers are jaxmodel/muon.py (optax) and torchport/muon.py."""

from __future__ import annotations

from dreamteam.components import Component


def validate(recipe) -> list[str]:
    problems = []
    if not recipe.muon_lr > 0 or not 0.0 <= recipe.muon_momentum < 1.0 or recipe.muon_weight_decay < 0:
        problems.append(f"Muon needs muon_lr > 0, 0 <= muon_momentum < 1, muon_weight_decay >= 0; got "
                        f"{recipe.muon_lr}, {recipe.muon_momentum}, {recipe.muon_weight_decay}")
    if isinstance(recipe.muon_ns_steps, bool) or not isinstance(recipe.muon_ns_steps, int) or recipe.muon_ns_steps < 1:
        problems.append(f"muon_ns_steps={recipe.muon_ns_steps!r}; expected an int >= 1")
    return problems


COMPONENT = Component(
    "muon", ("optimizer",), "Muon optimizer for the 2-D matrices inside the blocks (Jordan et al. 2024)",
    # training settings, so Recipe fields: its rate (following the schedule, scaled by muon_lr / learning_rate),
    # momentum, Nesterov, decoupled weight decay, Newton-Schulz steps, and the iteration in bfloat16
    options=("muon_lr", "muon_momentum", "muon_nesterov", "muon_weight_decay", "muon_ns_steps", "muon_bf16"),
    options_in="Recipe",
    validate=validate,
    math="""\
For each 2-D weight matrix W (out, in) inside the blocks, with gradient G:
    m <- beta m + (1 - beta) G                         momentum
    u <- (1 - beta) G + beta m                         Nesterov (else u = m)
    O <- NS5(u) * sqrt(max(1, rows / cols))           approximately U V^T of u = U S V^T
    W <- W (1 - lr_t wd) - lr_t O                      decoupled weight decay
NS5: five Newton-Schulz steps on X_0 = u / (||u||_F + 1e-7) (transposed if rows > cols, so that A is the
smaller Gram matrix):
    A = X X^T,   X <- a X + (b A + c A^2) X,   (a, b, c) = (3.4445, -4.7750, 2.0315)
Each step maps every singular value s to a s + b s^3 + c s^5 and leaves the singular vectors alone, sending
any s in (0, 1] to roughly [0.7, 1.2]: the update's condition number is near one, no direction of the matrix
learns faster than another. Embeddings, the output head, gains and biases stay on AdamW.""",
    source='Jordan et al. 2024, "Muon: an optimizer for hidden layers in neural networks" (modded-nanogpt)',
    persona="alan_turing",
)
