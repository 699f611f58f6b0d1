"""rms_embedding: the token embedding's rows through one RMSNorm, in the input and in the tied head. Declaration
only (no framework-neutral numbers); the modules are jaxmodel/rms_embedding.py and torchport/rms_embedding.py."""

from __future__ import annotations

from dreamteam.components import Component


def validate(cfg) -> list[str]:
    problems = []
    if not cfg.rms_embedding_gain > 0:
        problems.append(f"rms_embedding_gain={cfg.rms_embedding_gain}; expected a positive initial gain")
    if not cfg.rms_embedding_eps > 0:
        problems.append(f"rms_embedding_eps={cfg.rms_embedding_eps}; expected a positive epsilon")
    return problems


COMPONENT = Component(
    "rms_embedding", ("token_embedding",), "every embedding row RMS-normalized, one gain shared by all ids (tied head too)",
    # rms_embedding_gain: the shared gain's initial value, the embedding's init std, so that the rows start at
    # the scale the baseline's have; rms_embedding_eps: the epsilon under the rows' mean square
    options=("rms_embedding_gain", "rms_embedding_eps"),
    validate=validate,
    math="""\
E_v = e_v / sqrt(mean_i e_vi^2 + eps) * g        every row e_v of wte; g (D,) shared by all ids (wte_norm.weight)
x = E[idx],   logits = h E^T                     (the head tied to the same E)
Every id's row has the same weighted norm: mean_i (E_vi / g_i)^2 = ms_v / (ms_v + eps) ~ 1, so no id can
carry its frequency in its row's length, and |logit_v| <= |h| sqrt(D) max|g| for every id, the ids never seen
in training included (under Adam their rows are pushed along -mean(h) every step, without bound in the
baseline). E is invariant to scaling a row by c > 0 (up to eps): the gradient of the loss with respect to e_v
is orthogonal to e_v. g starts at rms_embedding_gain (0.02, the rows' init std): the model starts as the
baseline with each row rescaled to that RMS exactly.""",
    source="Zhang and Sennrich 2019 (RMSNorm); Loshchilov et al. 2024, nGPT (embedding rows on the hypersphere); "
           "Gong et al. 2018, FRAGE (rare words' embeddings drift apart from frequent ones')",
    persona="leonardo_da_vinci",
)
