"""mla: multi-head latent attention. Declaration only (no framework-neutral numbers); the modules are
jaxmodel/mla.py and torchport/mla.py."""

from __future__ import annotations

from dreamteam.components import Component


def validate(cfg) -> list[str]:
    if cfg.has("mla") and (cfg.mla_kv_rank <= 0 or (cfg.has("rope") and (cfg.mla_rope_dim % 2 or cfg.mla_rope_dim <= 0))):
        return [f"mla needs mla_kv_rank > 0, and with rope an even mla_rope_dim > 0; got {cfg.mla_kv_rank}, {cfg.mla_rope_dim}"]
    return []


COMPONENT = Component(
    "mla", ("qkv",), "multi-head latent attention (DeepSeek-V2)",
    # latent width r of keys and values, of queries (0: no query latent), decoupled rotary width d_r (with rope only)
    options=("mla_kv_rank", "mla_q_rank", "mla_rope_dim"),
    validate=validate,
    math="""\
Keys and values come from one shared low-rank latent per token; positions ride on a decoupled rotary part:
    c_t   = W_DKV x_t                                (kv_down: r numbers per token)
    k_h,t = [ RoPE_t(W_KR x_t) ; W_UK,h c_t ]         (k_rope shared by all heads; k_up per head)
    v_h,t = W_UV,h c_t                                (v_up)
    q_h,t = [ RoPE_t(q_R,h,t) ; q_C,h,t ],  [q_R ; q_C] = W_Q x_t  (or W_UQ W_DQ x_t with a query latent)
    y_t   = c_proj( concat_h softmax_j<=t(q_h,t . k_h,j / sqrt(d_c + d_r)) v_h,j )
A decoder caches only c_t and RoPE_t(W_KR x_t): r + d_r numbers per token instead of 2 * n_embd.
The rotary part is the rope component's: without rope, d_r = 0 (no W_KR, no q_R) and the learned position
embedding gives the positions; the cache then holds r numbers per token.
Absorbed form: q_C . W_UK c = (W_UK^T q_C) . c and c_proj W_UV fold into one matrix per head, so attention
runs on the latents directly (absorbed_attention), the way inference uses the cache.""",
    source='DeepSeek-AI 2024, "DeepSeek-V2: a strong, economical, and efficient mixture-of-experts language model"',
    persona="leonardo_da_vinci",
)
