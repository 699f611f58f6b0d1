"""rms_qknorm: RMSNorm in place of every LayerNorm, and QK-norm of each head's queries and keys. Declaration only
(no framework-neutral numbers); the modules are jaxmodel/rms_qknorm.py and torchport/rms_qknorm.py."""

from __future__ import annotations

from dreamteam.components import Component


def validate(cfg) -> list[str]:
    problems = []
    if not cfg.rms_qknorm_qk_gain > 0:
        problems.append(f"rms_qknorm_qk_gain={cfg.rms_qknorm_qk_gain}; expected a positive initial gain")
    if cfg.has("rms_qknorm") and not (cfg.rms_qknorm_qk or cfg.rms_qknorm_rmsnorm):
        problems.append("rms_qknorm with rms_qknorm_qk=False and rms_qknorm_rmsnorm=False changes nothing; "
                        "leave the component out instead")
    return problems


COMPONENT = Component(
    "rms_qknorm", ("norm", "qk_transform"), "RMSNorm everywhere and per-head QK-norm",
    # rms_qknorm_eps: the epsilon of every RMSNorm (named rms_eps before; old records load through
    # dreamteam.config.RENAMED_OPTIONS); rms_qknorm_qk_gain: the initial value of the query and key norms' gains;
    # rms_qknorm_qk: False switches the QK-norm off (RMSNorm alone; no query and key gains);
    # rms_qknorm_rmsnorm: False keeps the model's LayerNorms (QK-norm alone)
    options=("rms_qknorm_eps", "rms_qknorm_qk_gain", "rms_qknorm_qk", "rms_qknorm_rmsnorm"),
    validate=validate,
    math="""\
RMSNorm(x) = x / sqrt(mean(x^2) + eps) * g          in place of every LayerNorm (blocks and ln_f)
q_h <- RMSNorm_q(q_h),  k_h <- RMSNorm_k(k_h)       per head, before the dot product (gains g_q, g_k)
Invariant to scaling x by a positive constant (up to eps). QK-norm bounds the attention logits,
|q.k| / sqrt(d) <= sqrt(d) max|g_q| max|g_k|, whatever the weights do. The query and key gains start at
rms_qknorm_qk_gain: with unit gains the logits of a head of width d = 8 start within +-2.8 (attention starts
soft); Henry et al. start their QK-norm scale at log2(T^2 - T), which allows sharp attention at once.
rms_qknorm_qk = False: q and k pass unchanged (RMSNorm in place of LayerNorm alone).
rms_qknorm_rmsnorm = False: every LayerNorm stays (QK-norm alone, Henry et al.'s and Dehghani et al.'s setting).""",
    source="Zhang and Sennrich 2019 (RMSNorm); Henry et al. 2020 and Dehghani et al. 2023 (QK-norm)",
    persona="leonardo_da_vinci",
)
