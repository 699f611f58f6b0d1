"""Flax parameter tree <-> torch state_dict, by name.

Flax path `transformer/h_0/attn/c_attn/weight` is torch key `transformer.h.0.attn.c_attn.weight`: the
separator `/` becomes `.` and an element `name_<i>` of a module list (LIST_MODULES: torch nn.ModuleList
attributes) becomes `name.<i>`. Shapes are equal on both sides
(jaxmodel stores Linear weights as (out, in), like torch). The tied output head `lm_head.weight` exists
only in torch; it is written from `transformer.wte.weight` and checked equal to it on the way back.
Non-parameter state (moe_mlp's balancing bias) lives in the Flax collection `buffers` and in torch buffers of
the same name: flax_to_torch writes every collection of COLLECTIONS, torch_to_flax fills every collection of
its template. Every key must match on both sides; anything left over is an error, never silently dropped.
"""

from __future__ import annotations

import re

import numpy as np

COLLECTIONS = ("params", "buffers")
TIED = {"lm_head.weight": "transformer.wte.weight"}
# torch nn.ModuleList attributes; their Flax elements are named `<list>_<i>`
LIST_MODULES = ("h", "tail")  # transformer blocks; adaptive_softmax's tail clusters
_LIST_ITEM = re.compile(r"^(" + "|".join(LIST_MODULES) + r")_(\d+)$")


class ConversionError(ValueError):
    pass


def flax_key_to_torch(path: tuple[str, ...]) -> str:
    parts = []
    for name in path:
        m = _LIST_ITEM.match(name)
        parts.extend([m.group(1), m.group(2)] if m else [name])
    return ".".join(parts)


def _flatten(tree, prefix=()):
    for k, v in tree.items():
        if isinstance(v, dict) or hasattr(v, "items"):
            yield from _flatten(v, prefix + (k,))
        else:
            yield prefix + (k,), v


def flax_to_torch(variables: dict, template: dict | None = None) -> dict:
    """{'params': tree} -> {torch key: torch tensor}. With a template state_dict, names and shapes are checked
    against it (missing or extra keys, shape mismatches) and tied weights are written."""
    import torch

    trees = [variables[c] for c in COLLECTIONS if c in variables] if "params" in variables else [variables]
    out = {}
    for tree in trees:
        for path, leaf in _flatten(tree):
            out[flax_key_to_torch(path)] = torch.from_numpy(np.array(leaf))
    if template is not None:
        for tied, source in TIED.items():
            if tied in template and source in out:
                out[tied] = out[source]
        missing = sorted(set(template) - set(out))
        extra = sorted(set(out) - set(template))
        if missing or extra:
            raise ConversionError(f"Flax tree and torch state_dict differ: missing in Flax {missing}, extra in Flax {extra}")
        for k, t in template.items():
            if tuple(t.shape) != tuple(out[k].shape):
                raise ConversionError(f"{k}: Flax shape {tuple(out[k].shape)} != torch shape {tuple(t.shape)}")
    return out


def torch_to_flax(state_dict: dict, template: dict | None = None) -> dict:
    """{torch key: tensor} -> {'params': tree} of numpy arrays. Tied copies must equal their source.
    With a Flax template, every path and shape is checked."""
    state = {k: v.detach().cpu().numpy() for k, v in state_dict.items()}
    for tied, source in TIED.items():
        if tied in state:
            if source in state and not np.array_equal(state[tied], state[source]):
                raise ConversionError(f"{tied} is tied to {source} in the Flax model but the two differ")
            del state[tied]
    if template is None:
        raise ConversionError("torch_to_flax needs the Flax template tree to know the module nesting")
    collections = [c for c in COLLECTIONS if c in template] if "params" in template else [None]
    result: dict = {}
    used = set()
    for coll in collections:
        out = _fill(state, template[coll] if coll else template, used)
        result[coll or "params"] = out
    extra = sorted(set(state) - used)
    if extra:
        raise ConversionError(f"torch state_dict has keys the Flax model lacks: {extra}")
    return result


def _fill(state: dict, tree_t: dict, used: set) -> dict:
    out: dict = {}
    for path, leaf in _flatten(tree_t):
        key = flax_key_to_torch(path)
        if key not in state:
            raise ConversionError(f"torch state_dict has no {key} (Flax {'/'.join(path)})")
        if tuple(state[key].shape) != tuple(np.shape(leaf)):
            raise ConversionError(f"{key}: torch shape {tuple(state[key].shape)} != Flax shape {tuple(np.shape(leaf))}")
        node = out
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = state[key]
        used.add(key)
    return out
