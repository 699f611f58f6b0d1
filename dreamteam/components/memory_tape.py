"""memory_tape: persistent memory slots of keys and values in attention. Declaration only (no framework-neutral
numbers); the modules are jaxmodel/memory_tape.py and torchport/memory_tape.py."""

from __future__ import annotations

from dreamteam.components import Component


def validate(cfg) -> list[str]:
    slots = cfg.memory_tape_slots
    if cfg.has("memory_tape") and (isinstance(slots, bool) or not isinstance(slots, int) or slots < 0):
        return [f"memory_tape_slots={slots!r}; expected an int >= 0"]
    return []


COMPONENT = Component(
    "memory_tape", ("extra_kv",),
    "persistent memory slots of keys and values in attention (Sukhbaatar et al. 2019)",
    # the latent attention builds no per-head keys a tape could extend
    requires=(("qkv", (None,)),),
    options=("memory_tape_slots",),  # learned key and value slots per head and layer that every query may attend to
    validate=validate,
    math="""\
Each layer learns, per head, M key vectors K^tape (M x d) and value vectors V^tape (M x d) that do not depend
on the input: a tape every query may read besides its causal context. One softmax runs over tape and context:
    s_i = [ q_i . K^tape_m / sqrt(d) ]_{m < M}  ++  [ q_i . k_j / sqrt(d) ]_{j <= i}
    w_i = softmax(s_i),     y_i = sum_m w_i,m V^tape_m + sum_{j <= i} w_i,M+j v_j
The tape has no position: with rope on, its keys are not rotated; with rms_qknorm on, they pass the layer's
k_norm like the context keys, so that scores stay on one scale. With M = 0 this is plain causal attention.""",
    source='Sukhbaatar et al. 2019, "Augmenting self-attention with persistent memory"',
    persona="alan_turing",
)
