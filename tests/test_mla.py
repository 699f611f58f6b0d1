"""mla: the absorbed (latent-cache) form equals the explicit form, the cache size, causality; both frameworks."""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from dreamteam import registry  # noqa: E402
from dreamteam.config import GPTConfig  # noqa: E402
from jaxmodel import mla as jmla  # noqa: E402
from parity import checks  # noqa: E402
from torchport import mla as tmla  # noqa: E402

CONFIGS = [GPTConfig(components=("mla",)), GPTConfig(components=("mla",), mla_q_rank=12, mla_kv_rank=8, mla_rope_dim=2)]


@pytest.mark.parametrize("cfg", CONFIGS, ids=["kv-latent", "q-and-kv-latent"])
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
    module = jmla.MultiHeadLatentAttention(cfg)
    xj = jnp.asarray(x.numpy())
    explicit_j = module.apply(params, xj)
    absorbed_j = module.apply(params, xj, method=jmla.MultiHeadLatentAttention.absorbed_attention)
    assert float(jnp.max(jnp.abs(explicit_j - absorbed_j))) <= 1e-10
    assert np.max(np.abs(np.asarray(explicit_j) - explicit.numpy())) <= 1e-12  # and the frameworks agree


def test_cache_size_per_token():
    cfg = GPTConfig(components=("mla",))
    assert tmla.cache_numbers_per_token(cfg) == jmla.cache_numbers_per_token(cfg) == 16 + 4
    assert tmla.cache_numbers_per_token(GPTConfig()) == 2 * 32
    attn = tmla.MultiHeadLatentAttention(cfg)
    c, k_r = attn.latents(torch.randn(1, 10, 32))
    assert c.shape[-1] + k_r.shape[-1] == 20  # what latents() returns is exactly the cache


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_causality(framework):
    cfg = GPTConfig(components=("mla",))
    x = np.random.default_rng(0).normal(size=(1, 12, 32))
    x2 = x.copy()
    x2[:, 7] += 1.0
    if framework == "torch":
        attn = tmla.MultiHeadLatentAttention(cfg).double()
        with torch.no_grad():
            a, b = attn(torch.from_numpy(x)).numpy(), attn(torch.from_numpy(x2)).numpy()
    else:
        module = jmla.MultiHeadLatentAttention(cfg)
        params = module.init(jax.random.PRNGKey(0), jnp.asarray(x))
        a, b = np.asarray(module.apply(params, x)), np.asarray(module.apply(params, x2))
    np.testing.assert_array_equal(a[:, :7], b[:, :7])
    assert not np.allclose(a[:, 7:], b[:, 7:])


def test_mla_with_qknorm_parity_float64():
    persona = registry.build("baseline", add=("mla", "rms_qknorm"))
    failed = [(r.check, r.max_error) for r in checks.run_checks(persona, "float64", batch_size=1, steps=5) if not r.passed]
    assert not failed, failed


def test_mla_alone_parity_float64():
    persona = registry.build("baseline", add=("mla",))
    failed = [(r.check, r.max_error) for r in checks.run_checks(persona, "float64", batch_size=2, steps=20) if not r.passed]
    assert not failed, failed
