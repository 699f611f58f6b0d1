"""good_turing_prior: its declaration, and the Good-Turing estimate of token probabilities (Good 1953, from
Turing's wartime work), smoothed as in Gale and Sampson's Simple Good-Turing (1995). numpy only, framework-neutral.

With N tokens counted, r the count of a token and N_r the number of distinct tokens seen exactly r times,
a token seen r times gets the adjusted count

    r* = (r + 1) N_{r+1} / N_r                                        (Turing's estimate)

and the probability r* / N; all the ids never seen share the mass N_1 / N equally. Turing's estimate is noisy
where N_{r+1} is small or zero, so Simple Good-Turing replaces N_r by a smooth S(r): the averages
Z_r = N_r / (0.5 (t - q)) (q, t the neighbouring nonzero counts) are fit by log Z_r = A + B log r, and

    r*_LGT = (r + 1) S(r + 1) / S(r) = r (1 + 1/r)^(B + 1)

Turing's r* is kept for small r while it differs from r*_LGT by more than 1.96 standard deviations,
    |r*_T - r*_LGT| > 1.96 sqrt((r + 1)^2 (N_{r+1} / N_r^2) (1 + N_{r+1} / N_r)),
and from the first r where it does not, r*_LGT is used for every larger r. The seen tokens' probabilities
r* / N are then renormalized to sum to 1 - N_1 / N, so that the whole estimate sums to one.

The model's output bias starts at log p: with the output weights zero its loss is the unigram cross-entropy
of this estimate.
"""

from __future__ import annotations

import numpy as np

from dreamteam.components import Component


def _check(counts_V) -> np.ndarray:
    counts = np.asarray(counts_V)
    if counts.ndim != 1 or not np.issubdtype(counts.dtype, np.integer):
        raise ValueError(f"token counts must be a 1-D integer array (one count per id); got {counts.dtype} of shape {counts.shape}")
    if counts.size == 0 or (counts < 0).any():
        raise ValueError("token counts must be non-negative, one per id of a non-empty vocabulary")
    if counts.sum() == 0:
        raise ValueError("token counts are all zero: nothing to estimate from")
    return counts.astype(np.int64)


def adjusted_counts(counts_V) -> dict[int, float]:
    """{r: r*} for every count r > 0 that occurs, by Simple Good-Turing (module docstring)."""
    counts = _check(counts_V)
    rs, n_r = np.unique(counts[counts > 0], return_counts=True)
    rs = rs.astype(np.float64)
    n_r = n_r.astype(np.float64)
    if len(rs) == 1:  # one count only: no slope to fit; every seen token alike (Turing: r* = 0 for all)
        return {int(rs[0]): float(rs[0])}
    # Z_r = N_r / (0.5 (t - q)): q the previous count (0 before the first), t the next (2r - q after the last)
    q = np.concatenate([[0.0], rs[:-1]])
    t = np.concatenate([rs[1:], [2 * rs[-1] - q[-1]]])
    z = n_r / (0.5 * (t - q))
    B, A = np.polyfit(np.log(rs), np.log(z), 1)  # log Z = A + B log r
    if B > -1:  # the fit must fall faster than 1/r for the LGT estimate to be sound (Gale and Sampson)
        B = -1.0 - 1e-6
    n_of = dict(zip(rs.astype(np.int64).tolist(), n_r.tolist()))
    out: dict[int, float] = {}
    use_lgt = False
    for r in rs.astype(np.int64).tolist():
        lgt = r * (1.0 + 1.0 / r) ** (B + 1.0)
        if not use_lgt:
            n1 = n_of.get(r + 1, 0.0)
            if n1 == 0:
                use_lgt = True
            else:
                n0 = n_of[r]
                turing = (r + 1) * n1 / n0
                sd = np.sqrt((r + 1) ** 2 * (n1 / n0**2) * (1.0 + n1 / n0))
                if abs(turing - lgt) > 1.96 * sd:
                    out[r] = float(turing)
                    continue
                use_lgt = True
        out[r] = float(lgt)
    return out


def probabilities(counts_V) -> np.ndarray:
    """The Good-Turing token probabilities p_V (float64, summing to one) from the counts of train.bin.

    Seen ids: r* / N renormalized to 1 - N_1 / N in all; unseen ids: N_1 / N shared equally. Where every id
    is seen, the seen ids take the whole mass; where ids are unseen but no token was seen once, Good-Turing
    gives them nothing, and the estimate is refused (its log would be -inf).
    """
    counts = _check(counts_V)
    N = float(counts.sum())
    n1 = float((counts == 1).sum())
    unseen = counts == 0
    n_unseen = int(unseen.sum())
    if n_unseen and n1 == 0:
        raise ValueError("Good-Turing gives the unseen ids zero mass when no id is seen exactly once; "
                         "their log-probability would be -inf")
    p0 = n1 / N if n_unseen else 0.0
    r_star = adjusted_counts(counts)
    p = np.zeros(counts.shape, np.float64)
    seen = ~unseen
    p[seen] = np.array([r_star[int(r)] for r in counts[seen]]) / N
    p[seen] *= (1.0 - p0) / p[seen].sum()
    if n_unseen:
        p[unseen] = p0 / n_unseen
    return p


def log_prior(counts_V) -> np.ndarray:
    """log p of the Good-Turing estimate: the initial output bias of the good_turing_prior component."""
    return np.log(probabilities(counts_V))


def unigram_cross_entropy(counts_V, targets) -> float:
    """-mean_n log p(t_n) under the Good-Turing unigram model: the loss of a model whose logits are log p."""
    p = probabilities(counts_V)
    return float(-np.mean(np.log(p[np.asarray(targets).reshape(-1)])))


def validate(recipe) -> list[str]:
    if not recipe.good_turing_prior_lr_ratio >= 0:
        return [f"good_turing_prior_lr_ratio={recipe.good_turing_prior_lr_ratio}; expected >= 0"]
    return []


COMPONENT = Component(
    "good_turing_prior", ("output_bias",),
    "output bias initialized to log of the Good-Turing token probabilities of train.bin",
    requires=(("head", (None,)),),
    # a training setting, so a Recipe field: the output bias learns at this fraction of the scheduled AdamW rate
    # (0 keeps the prior fixed). Adam moves every bias by about the rate per step whatever its gradient's size, so
    # the ids absent from a batch, whose gradients are tiny but always positive, drift down together.
    options=("good_turing_prior_lr_ratio",),
    options_in="Recipe",
    validate=validate,
    math="""\
    logits = ln_f(x) W_tied^T + b,      b_0 = log p_GT       (sum_v exp b_0,v = 1)
p_GT is the Simple Good-Turing estimate of the token probabilities of train.bin (`probabilities`: seen ids
r* / N, renormalized to 1 - N_1 / N; unseen ids share N_1 / N). While the tied weights contribute little (they
start at std 0.02), softmax(logits) is close to p_GT: the model starts from the best unigram model instead of
the uniform one, its initial loss near the unigram cross-entropy instead of ln V. The bias is trained (no
weight decay: it is a vector), at good_turing_prior_lr_ratio times the AdamW rate.""",
    source="Good 1953, \"The population frequencies of species and the estimation of population parameters\" (Turing's "
           "estimate); Gale and Sampson 1995, \"Good-Turing frequency estimation without tears\"",
    persona="alan_turing",
)
