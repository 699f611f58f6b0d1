"""mla: the absorbed (latent-cache) form equals the explicit form, the cache size, causality; both frameworks.

The decoupled rotary key is rope's part of mla: with rope it is there, without rope mla has none and the
model's learned position embedding gives the positions (so removing rope from leonardo_da_vinci is a real
ablation)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from dreamteam import registry
from dreamteam.config import GPTConfig
from jaxmodel import mla as jmla
from jaxmodel import model as jm
from parity import checks
from torchport import mla as tmla
from torchport.model import GPT
from torchport.rope import apply_rope

# JAX computes in float64 while this module's tests run (tests/conftest.py)
pytestmark = pytest.mark.jax_float64

CONFIGS = [GPTConfig(components=("rope", "mla")),
           GPTConfig(components=("rope", "mla"), mla_q_rank=12, mla_kv_rank=8, mla_rope_dim=2),
           GPTConfig(components=("mla",))]


@pytest.mark.parametrize("cfg", CONFIGS, ids=["kv-latent", "q-and-kv-latent", "no-rope"])
def test_absorbed_form_equals_explicit_form(cfg):
    torch.manual_seed(0)
    attn = tmla.MultiHeadLatentAttention(cfg).double()
    for p in attn.parameters():  # larger weights than the 0.02 init so the check is not trivially small
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(2, 16, 32, dtype=torch.float64)
    with torch.no_grad():
        explicit, absorbed = attn(x), attn.absorbed_attention(x)
    assert (explicit - absorbed).abs().max().item() <= 1e-10

    params = {"params": {n: {"weight": jnp.asarray(p.detach().numpy())} for n, p in
                         ((k.removesuffix(".weight"), v) for k, v in attn.state_dict().items())}}
    module = jm.CausalSelfAttention(cfg)  # the model's attention, its qkv slot filled by mla
    xj = jnp.asarray(x.numpy())
    explicit_j = module.apply(params, xj)
    absorbed_j = jmla.absorbed_attention(params, cfg, xj)
    assert float(jnp.max(jnp.abs(explicit_j - absorbed_j))) <= 1e-10
    assert np.max(np.abs(np.asarray(explicit_j) - explicit.numpy())) <= 1e-12  # and the frameworks agree


@pytest.mark.parametrize("components, expected", [(("rope", "mla"), 16 + 4), (("mla",), 16)])
def test_cache_size_per_token(components, expected):
    cfg = GPTConfig(components=components)
    assert tmla.cache_numbers_per_token(cfg) == jmla.cache_numbers_per_token(cfg) == expected
    assert tmla.cache_numbers_per_token(GPTConfig()) == 2 * 32
    attn = tmla.MultiHeadLatentAttention(cfg)
    c, k_r = attn.latents(torch.randn(1, 10, 32))
    assert c.shape[-1] + k_r.shape[-1] == expected  # what latents() returns is exactly the cache
    module = jmla.LatentQKV(cfg)
    xj = jnp.zeros((1, 10, 32))
    cj, krj = module.apply(module.init(jax.random.PRNGKey(0), xj), xj, method=jmla.LatentQKV.latents)
    assert cj.shape[-1] + krj.shape[-1] == expected


def test_rotary_key_and_positions_follow_rope():
    """With rope: a rotary key, no wpe, and shifting every position leaves attention unchanged (relative).
    Without rope: no rotary key, and wpe is what carries positions."""
    with_rope, without = GPT(GPTConfig(components=("rope", "mla"))), GPT(GPTConfig(components=("mla",)))
    names_with, names_without = dict(with_rope.named_parameters()), dict(without.named_parameters())
    assert "transformer.wpe.weight" not in names_with and "transformer.wpe.weight" in names_without
    assert any("k_rope" in n for n in names_with) and not any("k_rope" in n for n in names_without)

    # relative-position invariance of the rotary scores: rotate queries and keys at positions p and p + 5
    torch.manual_seed(1)
    attn = tmla.MultiHeadLatentAttention(GPTConfig(components=("rope", "mla"))).double()
    x = torch.randn(1, 6, 32, dtype=torch.float64)
    with torch.no_grad():
        q, k, _ = attn.qkv(x)
        q_r, _ = attn.queries(x)
        k_r = attn.k_rope(x)
        dr = attn.config.mla_rotary_dim
        shifted = lambda a, off: apply_rope(a, torch.arange(a.shape[-2]) + off, dr, attn.config.rope_base)
        s0 = shifted(q_r, 0) @ shifted(k_r[:, None], 0).transpose(-1, -2)
        s5 = shifted(q_r, 5) @ shifted(k_r[:, None], 5).transpose(-1, -2)
    assert torch.allclose(s0, s5, atol=1e-12) and torch.allclose(q[..., :dr] @ k[..., :dr].transpose(-1, -2), s0, atol=1e-12)


@pytest.mark.parametrize("framework", ["torch", "jax"])
@pytest.mark.parametrize("components", [("rope", "mla"), ("mla",)], ids=["rope", "no-rope"])
def test_causality(framework, components):
    cfg = GPTConfig(components=components)
    x = np.random.default_rng(0).normal(size=(1, 12, 32))
    x2 = x.copy()
    x2[:, 7] += 1.0
    if framework == "torch":
        attn = tmla.MultiHeadLatentAttention(cfg).double()
        with torch.no_grad():
            a, b = attn(torch.from_numpy(x)).numpy(), attn(torch.from_numpy(x2)).numpy()
    else:
        module = jm.CausalSelfAttention(cfg)
        params = module.init(jax.random.PRNGKey(0), jnp.asarray(x))
        a, b = np.asarray(module.apply(params, x)), np.asarray(module.apply(params, x2))
    np.testing.assert_array_equal(a[:, :7], b[:, :7])
    assert not np.allclose(a[:, 7:], b[:, 7:])


def test_mla_with_qknorm_parity_float64():
    persona = registry.build("baseline", add=("rope", "mla", "rms_qknorm"))
    failed = [(r.check, r.max_error) for r in checks.run_checks(persona, "float64", batch_size=1, steps=5) if not r.passed]
    assert not failed, failed


@pytest.mark.parametrize("add", [("mla",), ("rope", "mla")], ids=["mla-alone", "rope-mla"])
def test_mla_parity_float64(add):
    persona = registry.build("baseline", add=add)
    failed = [(r.check, r.max_error) for r in checks.run_checks(persona, "float64", batch_size=2, steps=20) if not r.passed]
    assert not failed, failed
