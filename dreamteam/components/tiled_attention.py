"""tiled_attention: exact causal attention by key blocks with the online softmax. Declaration only (no
framework-neutral numbers); the modules are jaxmodel/tiled_attention.py and torchport/tiled_attention.py."""

from __future__ import annotations

from dreamteam.components import Component


def validate(cfg) -> list[str]:
    if cfg.has("tiled_attention") and not (isinstance(cfg.tiled_attention_block, int) and cfg.tiled_attention_block >= 1):
        return [f"tiled_attention_block={cfg.tiled_attention_block!r} must be an int >= 1"]
    return []


COMPONENT = Component(
    "tiled_attention", ("attend",),
    "exact attention by key blocks with the online softmax (FlashAttention's algorithm)",
    options=("tiled_attention_block",),  # keys (and queries) per block of the online softmax
    validate=validate,
    math="""\
For query i the scores s_ij = q_i . k_j / sqrt(E), j <= i, are visited one key block at a time, keeping a
running maximum m, normalizer l and unnormalized output acc:
    m_new = max(m, max_j s_ij)                         over the block's keys
    l     = exp(m - m_new) l   + sum_j exp(s_ij - m_new)
    acc   = exp(m - m_new) acc + sum_j exp(s_ij - m_new) v_j
    y_i   = acc / l                                    after the last block
which is softmax(s_i) v exactly (the rescaling keeps every exponent <= 0). The T x T score matrix never
exists: a step holds T x block scores, so the memory grows linearly in T.""",
    source='Milakov and Gimelshein 2018, "Online normalizer calculation for softmax"; Dao et al. 2022, "FlashAttention"',
    notes="The Flax model runs the tiled loop (a lax.scan over key blocks). The torch model calls "
          "F.scaled_dot_product_attention(is_causal=True), which runs this algorithm in fused kernels on CUDA and MPS "
          "and computes the same numbers on the CPU; torchport/tiled_attention.py keeps the explicit loop as the "
          "reference that tests/test_tiled_attention.py compares the torch model's attention with.",
    persona="charles_babbage",
)
