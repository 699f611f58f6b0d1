"""Properties of rope, rms_qknorm and golden_swiglu from their own mathematics, in both frameworks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from component_helpers import assert_float64_parity

from dreamteam import registry
from dreamteam.config import GOLDEN_RATIO, GPTConfig
from dreamteam.settings import parse_settings, with_settings
from jaxmodel import model as jm
from jaxmodel.golden_swiglu import GoldenSwiGLU as JaxSwiGLU
from jaxmodel.rms_qknorm import RMSNorm as JaxRMSNorm
from jaxmodel.rope import apply_rope as jax_rope
from parity import checks
from torchport.golden_swiglu import GoldenSwiGLU as TorchSwiGLU
from torchport.model import GPT
from torchport.rms_qknorm import RMSNorm as TorchRMSNorm
from torchport.rope import apply_rope as torch_rope

# JAX computes in float64 while this module's tests run (tests/conftest.py)
pytestmark = pytest.mark.jax_float64


def jax_rope_at(x, p, dim, base=10000.0):
    """Rotate vectors x (..., K) as if at position p."""
    return jax_rope(jnp.asarray(x)[None, None, None, :], jnp.array([p]), dim, base)[0, 0, 0]


def torch_rope_at(x, p, dim, base=10000.0):
    return torch_rope(torch.from_numpy(x)[None, None, None, :], torch.tensor([p]), dim, base)[0, 0, 0].numpy()


ROPES = [pytest.param(jax_rope_at, id="jax"), pytest.param(torch_rope_at, id="torch")]


@pytest.mark.parametrize("rope_at", ROPES)
@pytest.mark.parametrize("dim", [8, 4])
def test_rope_dot_product_depends_only_on_relative_position(rope_at, dim):
    q, k = np.random.default_rng(0).normal(size=(2, 8))
    for shift in (0, 1, 7, 40):
        ref = float(np.dot(rope_at(q, 5 + shift, dim), rope_at(k, 2 + shift, dim)))
        assert ref == pytest.approx(float(np.dot(rope_at(q, 3, dim), rope_at(k, 0, dim))), abs=1e-12)
    assert float(np.dot(rope_at(q, 3, dim), rope_at(k, 0, dim))) != pytest.approx(float(np.dot(rope_at(q, 4, dim), rope_at(k, 0, dim))), abs=1e-6)


@pytest.mark.parametrize("rope_at", ROPES)
def test_rope_preserves_norms_and_position_zero_is_identity(rope_at):
    x = np.random.default_rng(1).normal(size=8)
    np.testing.assert_allclose(np.linalg.norm(rope_at(x, 37, 8)), np.linalg.norm(x), rtol=1e-14)
    np.testing.assert_array_equal(rope_at(x, 0, 8), x)
    np.testing.assert_array_equal(rope_at(x, 9, 4)[4:], x[4:])  # partial rotation leaves the rest alone


def test_rope_known_angle():
    # pair i = 1 of a 4-dim rotary part rotates by p * 10000^(-2/4) = p / 100
    x = np.array([0.0, 0.0, 1.0, 0.0])
    np.testing.assert_allclose(jax_rope_at(x, 50, 4), [0, 0, np.cos(0.5), np.sin(0.5)], atol=1e-15)
    np.testing.assert_allclose(torch_rope_at(x, 50, 4), [0, 0, np.cos(0.5), np.sin(0.5)], atol=1e-15)


def test_rope_scores_are_translation_invariant_and_model_has_no_wpe():
    # the full score matrix (R_i q_i) . (R_j k_j) is unchanged when every position moves by the same c
    q, k = torch.randn(2, 1, 2, 12, 8, dtype=torch.float64)
    pos = torch.arange(12)
    scores = lambda p: torch_rope(q, p, 8) @ torch_rope(k, p, 8).transpose(-1, -2)
    for c in (1, 13, 500):
        torch.testing.assert_close(scores(pos + c), scores(pos), rtol=1e-12, atol=1e-12)
    qj, kj = jnp.asarray(q.numpy()), jnp.asarray(k.numpy())
    scores_j = lambda p: jax_rope(qj, p, 8) @ jnp.swapaxes(jax_rope(kj, p, 8), -1, -2)
    np.testing.assert_allclose(scores_j(jnp.arange(12) + 77), scores_j(jnp.arange(12)), rtol=1e-12, atol=1e-12)
    cfg = registry.build("baseline", add=("rope",)).model
    assert not cfg.learned_positions and "transformer.wpe.weight" not in GPT(cfg).state_dict()


@pytest.mark.parametrize("framework", ["jax", "torch"])
def test_rmsnorm_scale_invariance_and_unit_rms(framework):
    x = np.random.default_rng(2).normal(size=(3, 32)) * 4.0
    if framework == "jax":
        norm = lambda a, g=np.ones(32): np.asarray(JaxRMSNorm(eps=0.0).apply({"params": {"weight": jnp.asarray(g)}}, jnp.asarray(a)))
    else:
        def norm(a, g=np.ones(32)):
            m = TorchRMSNorm(32, eps=0.0).double()
            m.weight.data = torch.from_numpy(np.asarray(g, dtype=np.float64))
            return m(torch.from_numpy(a)).detach().numpy()
    y = norm(x)
    np.testing.assert_allclose(np.sqrt((y**2).mean(-1)), 1.0, rtol=1e-14)
    np.testing.assert_allclose(norm(7.5 * x), y, rtol=1e-13)
    g = np.linspace(0.5, 2.0, 32)
    np.testing.assert_allclose(norm(x, g), y * g, rtol=1e-13)


def test_qknorm_bounds_attention_logits():
    # with unit gains, every per-head query and key has RMS 1, so |q.k| / sqrt(d) <= sqrt(d)
    cfg = registry.build("baseline", add=("rms_qknorm",)).model
    model = GPT(cfg).double()
    attn = model.transformer.h[0].attn
    x = torch.randn(2, 16, 32, dtype=torch.float64) * 100
    q, k, _ = attn.c_attn(x).split(32, dim=2)
    q = attn.q_norm(q.view(2, 16, 4, 8))
    k = attn.k_norm(k.view(2, 16, 4, 8))
    scores = torch.einsum("bthd,bshd->bhts", q, k) / np.sqrt(8)
    assert scores.abs().max().item() <= np.sqrt(8) + 1e-12
    assert all(isinstance(m, TorchRMSNorm) for m in (model.transformer.ln_f, model.transformer.h[2].ln_1))


@pytest.mark.parametrize("components", [("rms_qknorm",), ("rope", "mla", "rms_qknorm")])
def test_qk_gain_starts_both_frameworks_at_the_setting_and_scales_logits_by_its_square(components):
    # rms_qknorm_qk_gain = g: q_norm and k_norm (and no other RMSNorm) start at g in Flax and torch alike, and the
    # initial attention logits are g^2 times those with unit gains (same seed, same other weights)
    base = registry.build("baseline", add=components).model
    tuned = base.replace(rms_qknorm_qk_gain=1.5)
    flax_params = jm.init_params(tuned, jax.random.PRNGKey(0))["params"]["transformer"]
    models = {}
    for cfg in (base, tuned):
        torch.manual_seed(0)
        models[cfg.rms_qknorm_qk_gain] = GPT(cfg).double()
    for name, p in models[1.5].named_parameters():
        if name.endswith(("q_norm.weight", "k_norm.weight")):
            assert torch.all(p == 1.5), name
            layer, mod = name.split(".")[2], name.split(".")[4]
            np.testing.assert_array_equal(np.asarray(flax_params[f"h_{layer}"]["attn"][mod]["weight"]), 1.5)
        elif name.endswith("weight") and p.dim() == 1:
            assert torch.all(p == 1.0), name  # ln_1, ln_2, ln_f keep unit gains
    x = torch.randn(2, 16, 32, dtype=torch.float64)
    scores = {}
    for g, model in models.items():
        attn = model.transformer.h[0].attn
        q, k, _ = attn.qkv(x)  # after QK-norm (and rotation), (B, H, T, d)
        scores[g] = torch.einsum("...td,...sd->...ts", q, k)
    torch.testing.assert_close(scores[1.5], 1.5**2 * scores[1.0], rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="rms_qknorm_qk_gain"):
        base.replace(rms_qknorm_qk_gain=0.0)


def test_without_qk_norm_queries_and_keys_pass_unchanged_and_the_norms_stay_rmsnorm():
    """rms_qknorm_qk=False: no query and key gains (in either framework), the attention's q and k are the
    projection's (then rotated), every block norm and ln_f is still RMSNorm; float64 parity in the persona."""
    persona = with_settings(registry.get("leonardo_da_vinci"), parse_settings(["rms_qknorm_qk=false"]))
    torch.manual_seed(0)
    model = GPT(persona.model).double()
    names = [n for n, _ in model.named_parameters()]
    assert not [n for n in names if "q_norm" in n or "k_norm" in n]
    torch.manual_seed(0)
    with_qk = GPT(registry.get("leonardo_da_vinci").model).double()
    assert {n for n, _ in with_qk.named_parameters()} - set(names) == {
        f"transformer.h.{i}.attn.{m}.weight" for i in range(4) for m in ("q_norm", "k_norm")}
    assert all(isinstance(m, TorchRMSNorm) for m in (model.transformer.ln_f, model.transformer.h[1].ln_2))
    flax_attn = jm.init_params(persona.model, jax.random.PRNGKey(0))["params"]["transformer"]["h_0"]["attn"]
    assert "q_norm" not in flax_attn and "k_norm" not in flax_attn
    # q, k of the attention = the same attention's with its QK-norm taken out of the transforms
    x = torch.randn(2, 16, 32, dtype=torch.float64)
    attn = with_qk.transformer.h[0].attn
    q, k, _ = model.transformer.h[0].attn.qkv(x)
    attn.load_state_dict(model.transformer.h[0].attn.state_dict(), strict=False)
    attn.qk_transforms = attn.qk_transforms[1:]  # rope alone
    q_ref, k_ref, _ = attn.qkv(x)
    torch.testing.assert_close((q, k), (q_ref, k_ref), rtol=0, atol=0)
    assert_float64_parity(persona)


def test_qk_norm_alone_keeps_the_layernorms_and_their_initial_weights():
    """rms_qknorm_rmsnorm=False: every block norm and ln_f is the model's LayerNorm (its mean-subtracting
    formula), the query and key gains are there at the persona's 1.86, every other parameter starts where it does
    in the persona without rms_qknorm (the gains draw no random numbers), the Flax model has the same
    parameters; float64 parity; both halves off is refused."""
    from torchport.model import LayerNorm as TorchLayerNorm

    persona = with_settings(registry.get("leonardo_da_vinci"), parse_settings(["rms_qknorm_rmsnorm=false"]))
    torch.manual_seed(0)
    model = GPT(persona.model).double()
    norms = [model.transformer.ln_f] + [m for b in model.transformer.h for m in (b.ln_1, b.ln_2)]
    assert all(isinstance(m, TorchLayerNorm) for m in norms)
    x = torch.randn(2, 16, 32, dtype=torch.float64) * 3 + 1
    y = model.transformer.h[0].ln_1(x)
    torch.testing.assert_close(y.mean(-1), torch.zeros(2, 16, dtype=torch.float64), rtol=0, atol=1e-12)
    gains = {n: p for n, p in model.named_parameters() if n.endswith(("q_norm.weight", "k_norm.weight"))}
    assert len(gains) == 2 * 4 and all(torch.all(p == float(np.float32(1.86))) for p in gains.values())  # made in float32
    torch.manual_seed(0)
    without = GPT(registry.build("leonardo_da_vinci", remove=("rms_qknorm",)).model).double()
    rest = {n: p for n, p in model.named_parameters() if n not in gains}
    assert set(rest) == {n for n, _ in without.named_parameters()}
    for n, p in without.named_parameters():
        torch.testing.assert_close(rest[n], p, rtol=0, atol=0)
    flax_h0 = jm.init_params(persona.model, jax.random.PRNGKey(0))["params"]["transformer"]["h_0"]
    assert set(flax_h0["ln_1"]) == {"weight"} and "q_norm" in flax_h0["attn"] and "k_norm" in flax_h0["attn"]
    assert_float64_parity(persona)
    with pytest.raises(ValueError, match="changes nothing"):
        with_settings(registry.get("leonardo_da_vinci"), parse_settings(["rms_qknorm_rmsnorm=false", "rms_qknorm_qk=false"]))


def test_golden_swiglu_width_and_formula():
    cfg = registry.build("baseline", add=("golden_swiglu",)).model
    assert cfg.swiglu_hidden == round(GOLDEN_RATIO**2 * 32) == 84
    mlp = TorchSwiGLU(cfg).double()
    assert sum(p.numel() for p in mlp.parameters()) == 3 * 32 * 84  # 8064, vs 8192 for the 4x GELU MLP
    x = torch.randn(2, 5, 32, dtype=torch.float64)
    g, u = x @ mlp.c_gate.weight.T, x @ mlp.c_fc.weight.T
    expected = (g * torch.sigmoid(g) * u) @ mlp.c_proj.weight.T
    torch.testing.assert_close(mlp(x), expected, rtol=1e-13, atol=1e-13)
    params = {"params": {n: {"weight": jnp.asarray(getattr(mlp, n).weight.detach().numpy())} for n in ("c_gate", "c_fc", "c_proj")}}
    np.testing.assert_allclose(np.asarray(JaxSwiGLU(cfg).apply(params, jnp.asarray(x.numpy()))), expected.detach().numpy(), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("component", ["rope", "rms_qknorm", "golden_swiglu"])
def test_component_alone_parity_float64(component):
    persona = registry.build("baseline", add=(component,))
    failed = [(r.check, r.max_error) for r in checks.run_checks(persona, "float64", batch_size=2, steps=20) if not r.passed]
    assert not failed, failed


def test_all_three_together_build_and_agree():
    cfg = GPTConfig(components=("rope", "rms_qknorm", "golden_swiglu"))
    params = jm.init_params(cfg, jax.random.PRNGKey(0))
    assert "wpe" not in params["params"]["transformer"]
    assert "q_norm" in params["params"]["transformer"]["h_0"]["attn"]
