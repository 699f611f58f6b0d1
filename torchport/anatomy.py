"""anatomy: what a trained model does, read off its insides (Leonardo's dissections).

    attention_l,h[i, j]  = softmax_j<=i(q_i . k_j / sqrt(d))      every layer l and head h
    lens_l[t]            = ln_f(x_l,t) @ wte^T                    the logit lens (nostalgebraist 2020):
                                                                  the residual stream after block l read
                                                                  through the final norm and the tied head
The fused attention kernel does not return its weights, so they are recomputed from each layer's own
queries and keys (`attn.qkv`), the ones its forward pass uses.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from torchport.memory_tape import tape_attention_weights


def causal_attention_weights(q, k, bias=None):
    """softmax over keys j <= i of q_i . k_j / sqrt(E) (+ bias[h, i, j] where a component adds one), (B, H, T, T)."""
    T, E = q.shape[-2:]
    s = q @ k.transpose(-1, -2) / math.sqrt(E)
    if bias is not None:
        s = s + bias
    mask = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    return s.masked_fill(~mask, float("-inf")).softmax(-1)


@torch.no_grad()
def trace(model, idx):
    """{'attention': (L, B, H, T, T), 'lens_logits': (L + 1, B, T, V)} for the tokens idx (B, T)."""
    was_training = model.training
    model.eval()
    x = model.embed(idx)
    residuals, attention = [x], []
    for block in model.transformer.h:
        if not hasattr(block.attn, "qkv"):  # difference_ssm: the attention-like map of its kernel (|K_{t-s}|, rows sum to 1)
            w = block.attn.mixing_weights(x.shape[1])
            attention.append(w.expand(x.shape[0], *w.shape))
        else:
            q, k, _ = block.attn.qkv(block.ln_1(x))
            extra_kv = block.attn.extra_kv()
            if extra_kv is not None:  # memory_tape: the context part of the one softmax over [tape | context]
                w = tape_attention_weights(q, k, extra_kv[0])
                attention.append(w[..., extra_kv[0].shape[1] :])
            else:
                bias = block.attn.score_bias(torch.arange(idx.shape[1], device=idx.device))
                attention.append(causal_attention_weights(q, k, bias))
        x = block(x)
        residuals.append(x)
    E = model.token_embedding_matrix()  # the rows the tied head scores with
    lens = torch.stack([F.linear(model.transformer.ln_f(r), E, model.lm_head.bias) for r in residuals])
    model.train(was_training)
    return {"attention": torch.stack(attention), "lens_logits": lens}
