"""anatomy: what a trained model does, read off its insides (Leonardo's dissections).

    attention_l,h[i, j]  = softmax_j<=i(q_i . k_j / sqrt(d))      every layer l and head h
    lens_l[t]            = ln_f(x_l,t) @ wte^T                    the logit lens (nostalgebraist 2020):
                                                                  the residual stream after block l read
                                                                  through the final norm and the tied head
The forward pass sows the attention weights and the residual stream into the `intermediates` collection,
which exists only when apply is asked for it, so training pays nothing.
"""

from __future__ import annotations

import jax.numpy as jnp

from dreamteam.config import GPTConfig
from jaxmodel.model import GPT, make_norm


def trace(params, cfg: GPTConfig, idx_BxT):
    """{'attention': (L, B, H, T, T), 'lens_logits': (L + 1, B, T, V)} for the tokens idx_BxT."""
    # head=False: the lens below reads the residual stream; the head (and a head_mixture) is not needed
    _, state = GPT(cfg).apply(params, jnp.asarray(idx_BxT), head=False, mutable=["intermediates"])
    inter = state["intermediates"]["transformer"]
    attention = jnp.stack([inter[f"h_{i}"]["attn"]["attention_weights"][0] for i in range(cfg.n_layer)])
    p = params["params"]["transformer"]
    ln_f = make_norm(cfg, None)
    wte_VxD = GPT(cfg).apply(params, method=GPT.embedding_matrix)  # slot: token_embedding (the tied head's rows)
    b_V = params["params"]["lm_head"]["bias"] if "lm_head" in params["params"] else 0.0  # good_turing_prior
    lens = jnp.stack([ln_f.apply({"params": p["ln_f"]}, x_BxTxD) @ wte_VxD.T + b_V for x_BxTxD in inter["residual"]])
    return {"attention": attention, "lens_logits": lens}
