"""fixed_point_qat in torch: the fake quantization with the straight-through estimator (`FakeQuantLinear`
reads the float parameters quantized), and the int8 export.

Export (`export_int8`): the codes as int8 and the scales as float32, per matrix, in one safetensors file
with the float tensors that are not quantized; `load_int8` gives back a state_dict whose matrices are
codes * scale, the very numbers the fake-quantized forward multiplies by, so a model without the component
loaded from it reproduces the QAT forward exactly.
The mathematics and sources: the declaration, dreamteam/components/fixed_point_qat.py.
"""

from __future__ import annotations

import json

import torch
import torch.nn as nn
from torch.nn import functional as F


def qmax(bits: int) -> int:
    return 2 ** (bits - 1) - 1


def row_scale(w, bits: int):
    """scale_o = max_i |W_oi| / Q, (O, 1); 1 for an all-zero row (whose codes are 0 whatever the scale).
    Computed as max * (1/Q), one multiplication by the same constant in both frameworks (a division by a
    constant is rewritten that way by some compilers and not others: 1 ulp apart)."""
    amax = w.detach().abs().amax(-1, keepdim=True)
    return torch.where(amax > 0, amax * (1.0 / qmax(bits)), torch.ones_like(amax))


def scaled(w, scale):
    """W / scale computed as W * (1 / scale): XLA compiles a division by a broadcast row into that product,
    and a true division differs from it by 1 ulp, enough to round a weight at a code boundary the other way."""
    return w * (1.0 / scale)


def quantize(w, bits: int, scale=None):
    """(integer codes clamp(round(W / scale), -Q, Q) as floats, scale (O, 1))."""
    scale = row_scale(w, bits) if scale is None else scale
    return torch.clamp(torch.round(scaled(w, scale)), -qmax(bits), qmax(bits)), scale


class _FakeQuant(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w, scale, bits):
        codes, _ = quantize(w, bits, scale)
        ctx.save_for_backward(torch.round(scaled(w, scale)).abs() <= qmax(bits))  # the clamp leaves these codes alone
        return codes * scale

    @staticmethod
    def backward(ctx, g):
        (inside,) = ctx.saved_tensors
        return torch.where(inside, g, torch.zeros_like(g)), None, None  # straight through inside the range


def fake_quant(w, bits: int = 8, scale=None):
    """q = clamp(round(W / scale), -Q, Q) * scale forward, the straight-through gradient backward.
    scale: per row max|W| / Q unless given (then gradients outside the clamp range are 0)."""
    scale = row_scale(w, bits) if scale is None else scale.detach()
    return _FakeQuant.apply(w, scale, bits)


class FakeQuantLinear(nn.Linear):
    """nn.Linear whose forward multiplies by fake_quant(weight); the same parameters, the same names."""

    bits: int = 8

    def forward(self, x):
        return F.linear(x, fake_quant(self.weight, self.bits), self.bias)


def apply_fixed_point_qat(root: nn.Module, bits: int) -> nn.Module:
    """Make every nn.Linear under `root` a FakeQuantLinear of `bits`, in place (parameters kept)."""
    for module in list(root.modules()):
        for name, child in module.named_children():
            if type(child) is nn.Linear:
                child.__class__ = FakeQuantLinear  # same object, same parameters; only forward changes
                child.bits = bits
    return root


def quantized_keys(model: nn.Module) -> list[str]:
    """state_dict keys of the matrices the component quantizes: the Linear weights inside transformer.h."""
    return sorted(f"transformer.h.{n}.weight" for n, m in model.transformer.h.named_modules() if isinstance(m, nn.Linear))


def export_int8(model: nn.Module, bits: int = 8) -> tuple[dict, dict]:
    """(tensors, metadata) for safetensors: KEY.int8 (int8 codes) and KEY.scale (float32, (O,)) for every
    quantized matrix, every other tensor as float32 under its own key (lm_head.weight, tied, left out)."""
    if not 2 <= bits <= 8:
        raise ValueError(f"int8 export needs 2 <= bits <= 8, got {bits}")
    state = model.state_dict()
    qkeys = quantized_keys(model)
    tensors = {}
    for key, t in state.items():
        if key == "lm_head.weight":
            continue  # tied to transformer.wte.weight
        if key in qkeys:
            codes, scale = quantize(t.detach().float(), bits)
            tensors[key + ".int8"] = codes.to(torch.int8).contiguous()
            tensors[key + ".scale"] = scale[:, 0].contiguous()
        else:
            tensors[key] = t.detach().float().contiguous()
    meta = {"format": "dreamteam-int8", "bits": str(bits), "quantized": json.dumps(qkeys)}
    return tensors, meta


def dequantize_int8(tensors: dict) -> dict:
    """A state_dict from export_int8's tensors: each matrix codes * scale (float32), the rest as stored."""
    state = {}
    for key, t in tensors.items():
        if key.endswith(".int8"):
            base = key[: -len(".int8")]
            state[base] = t.float() * tensors[base + ".scale"][:, None]
        elif not key.endswith(".scale"):
            state[key] = t
    state["lm_head.weight"] = state["transformer.wte.weight"]
    return state


def save_int8(model: nn.Module, path, bits: int = 8, extra_meta: dict | None = None) -> None:
    from safetensors.torch import save_file

    tensors, meta = export_int8(model, bits)
    save_file(tensors, str(path), metadata={**meta, **(extra_meta or {})})


def load_int8(path) -> tuple[dict, dict]:
    """(dequantized state_dict, metadata) of a file written by save_int8."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != "dreamteam-int8":
        raise ValueError(f"{path} is not a dreamteam int8 export (metadata format={meta.get('format')!r})")
    return dequantize_int8(load_file(str(path))), meta


# what fixed_point_qat fills in the torch GPT (torchport/model.py): how the blocks read their matrices
FILLS = {"block_weights": lambda blocks, config: apply_fixed_point_qat(blocks, config.fixed_point_qat_bits)}
