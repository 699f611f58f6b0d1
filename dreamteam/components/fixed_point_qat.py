"""fixed_point_qat: quantization-aware training with fixed-point weights. Declaration only (no framework-neutral
numbers); the modules are jaxmodel/fixed_point_qat.py and torchport/fixed_point_qat.py (with the int8 export)."""

from __future__ import annotations

from dreamteam.components import Component


def validate(cfg) -> list[str]:
    if cfg.has("fixed_point_qat") and not (isinstance(cfg.fixed_point_qat_bits, int) and 2 <= cfg.fixed_point_qat_bits <= 16):
        return [f"fixed_point_qat_bits={cfg.fixed_point_qat_bits!r} must be an int in [2, 16]"]
    return []


COMPONENT = Component(
    "fixed_point_qat", ("block_weights",),
    "fixed-point (int b) fake quantization of the block matrices, straight-through",
    options=("fixed_point_qat_bits",),  # bits b of the symmetric per-output-channel fixed-point weights
    validate=validate,
    math="""\
Every matrix of the blocks (the Linear weights W (out, in) of attention, MLP and SSM projections) is
fake-quantized per output channel o, symmetric, to b bits:
    Q = 2^(b-1) - 1,   scale_o = max_i |W_oi| / Q,   q = clamp(round(W / scale), -Q, Q) * scale
forward with q (round half to even), backward with the straight-through estimator: dL/dW = dL/dq where
|round(W / scale)| <= Q (the clamp does not act), 0 outside; with the max-based scale every weight lies
inside, so the gradient passes unchanged; the scale is a statistic of W, not differentiated. Embeddings and
the tied head stay float; the stored parameters stay float. Export: the codes as int8 and the scales as
float32; codes * scale are the very numbers the fake-quantized forward multiplies by.""",
    source="Bengio et al. 2013 (straight-through estimator); Jacob et al. 2018, \"Quantization and training of neural "
           "networks for efficient integer-arithmetic-only inference\"; the Engine's digit wheels",
    persona="charles_babbage",
)
