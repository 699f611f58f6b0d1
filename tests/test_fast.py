"""torchport.fast: the chunked linear cross-entropy equals F.cross_entropy(h @ W.T, t), and the fast training
path (fused_loss) follows the eager reference's training trajectory within the project's parity bounds."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dreamteam import registry
from dreamteam.config import GPTConfig
from torchport import recipe as recipes
from torchport.fast import LinearCrossEntropy, fused_loss, linear_cross_entropy
from torchport.model import GPT

N, D, V = 50, 8, 97


def make(dtype, seed=0, ignore=True):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(N, D, generator=g, dtype=dtype).mul_(2.0).requires_grad_()
    W = torch.randn(V, D, generator=g, dtype=dtype).requires_grad_()
    t = torch.randint(0, V, (N,), generator=g)
    if ignore:
        t[::7] = -1
    return h, W, t


def value_and_grads(loss_fn, h, W, t, weight=2.5):
    loss = loss_fn(h, W, t)
    grads = torch.autograd.grad(weight * loss, (h, W))  # an incoming gradient other than 1
    return loss.detach(), grads


def reference(h, W, t):
    return F.cross_entropy(h @ W.T, t, ignore_index=-1)


@pytest.mark.parametrize("chunk", [1, 3, 7, 16, 49, 50, 64, 1000])
@pytest.mark.parametrize("ignore", [False, True])
def test_equals_cross_entropy_float64(chunk, ignore):
    h, W, t = make(torch.float64, ignore=ignore)
    loss, (gh, gW) = value_and_grads(lambda h, W, t: linear_cross_entropy(h, W, t, chunk), h, W, t)
    loss_r, (gh_r, gW_r) = value_and_grads(reference, h, W, t)
    assert abs(loss.item() - loss_r.item()) <= 1e-12
    assert (gh - gh_r).abs().max().item() <= 1e-12
    assert (gW - gW_r).abs().max().item() <= 1e-12
    if ignore:
        assert gh[t == -1].abs().max().item() == 0.0  # ignored tokens get no gradient


def test_equals_cross_entropy_float32():
    h, W, t = make(torch.float32)
    loss, grads = value_and_grads(lambda h, W, t: linear_cross_entropy(h, W, t, 16), h, W, t)
    loss_r, grads_r = value_and_grads(reference, h, W, t)
    assert loss.dtype == torch.float32
    assert abs(loss.item() - loss_r.item()) <= 1e-6 * abs(loss_r.item())
    for g, g_r in zip(grads, grads_r):
        assert g.dtype == torch.float32
        assert ((g - g_r).norm() / g_r.norm()).item() <= 1e-6


def test_gradcheck():
    h, W, _ = make(torch.float64)
    h, W = h[:6].detach().requires_grad_(), W[:11].detach().requires_grad_()
    t = torch.tensor([1, -1, 10, 0, 3, 3])
    assert torch.autograd.gradcheck(lambda h, W: LinearCrossEntropy.apply(h, W, t, 4), (h, W))


def test_only_one_input_needs_grad_and_no_grad_mode():
    h, W, t = make(torch.float64)
    gW = torch.autograd.grad(linear_cross_entropy(h.detach(), W, t, 8), W)[0]
    gW_r = torch.autograd.grad(reference(h.detach(), W, t), W)[0]
    assert (gW - gW_r).abs().max().item() <= 1e-12
    with torch.no_grad():
        loss = linear_cross_entropy(h, W, t, 8)
    assert not loss.requires_grad
    assert abs(loss.item() - reference(h, W, t).item()) <= 1e-12


def test_all_ignored_is_nan_with_zero_gradients_like_cross_entropy():
    h, W, _ = make(torch.float64)
    t = torch.full((N,), -1)
    loss, (gh, gW) = value_and_grads(lambda h, W, t: linear_cross_entropy(h, W, t, 8), h, W, t)
    assert math.isnan(loss.item()) and math.isnan(reference(h, W, t).item())
    assert gh.abs().max().item() == 0.0 and gW.abs().max().item() == 0.0


@pytest.mark.parametrize("ignore", [True, False])
def test_sum_reduction_equals_cross_entropy_sum_float64(ignore):
    # adaptive_softmax's tail clusters add up sums over the tokens in each: reduction="sum"
    h, W, t = make(torch.float64, seed=3, ignore=ignore)
    ref = lambda h, W, t: F.cross_entropy(h @ W.T, t, ignore_index=-1, reduction="sum")  # noqa: E731
    loss, grads = value_and_grads(lambda h, W, t: linear_cross_entropy(h, W, t, 7, reduction="sum"), h, W, t)
    ref_loss, ref_grads = value_and_grads(ref, h, W, t)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-13, atol=0)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-14)
    with torch.no_grad():  # the no-gradient path sums too
        torch.testing.assert_close(linear_cross_entropy(h, W, t, 7, reduction="sum"), ref_loss, rtol=1e-13, atol=0)
    # no kept token: a sum of nothing, 0, with zero gradients (the mean is nan)
    t_none = torch.full((N,), -1)
    loss, (gh, gW) = value_and_grads(lambda h, W, t: linear_cross_entropy(h, W, t, 7, reduction="sum"), h, W, t_none)
    assert loss.item() == 0.0 and gh.abs().max().item() == 0.0 and gW.abs().max().item() == 0.0
    with pytest.raises(ValueError, match="reduction"):
        linear_cross_entropy(h, W, t, 7, reduction="none")


@pytest.mark.parametrize(
    "h_shape, W_shape, t, chunk, match",
    [
        ((N, D), (V, D + 1), None, 8, "same D"),
        ((N, D), (V, D), torch.zeros(N + 1, dtype=torch.long), 8, "targets must have shape"),
        ((N, D), (V, D), torch.full((N,), V), 8, r"targets\[0\] = 97"),
        ((N, D), (V, D), torch.full((N,), -2), 8, r"targets\[0\] = -2"),
        ((N, D), (V, D), torch.zeros(N), 8, "integer token ids"),
        ((N, D), (V, D), None, 0, "chunk must be a positive int"),
    ],
)
def test_bad_input_gets_one_clear_error(h_shape, W_shape, t, chunk, match):
    h, W = torch.randn(h_shape, requires_grad=True), torch.randn(W_shape)
    t = torch.zeros(N, dtype=torch.long) if t is None else t
    with pytest.raises(ValueError, match=match):
        linear_cross_entropy(h, W, t, chunk)


def test_fused_loss_equals_model_loss_float64():
    cfg = GPTConfig(vocab_size=211, block_size=16, n_layer=2, n_head=2, n_embd=16)
    torch.manual_seed(0)
    a = GPT(cfg).double()
    b = GPT(cfg).double()
    b.load_state_dict(a.state_dict())
    x = torch.randint(0, 211, (3, 16))
    y = torch.randint(0, 211, (3, 16))
    y[0, :5] = -1
    loss_a = a(x, y)[1]
    loss_b = fused_loss(b, x, y, chunk=10)
    loss_a.backward()
    loss_b.backward()
    assert abs(loss_a.item() - loss_b.item()) <= 1e-12
    grads_b = dict(b.named_parameters())
    for name, p in a.named_parameters():
        assert (p.grad - grads_b[name].grad).abs().max().item() <= 1e-12, name


@pytest.mark.parametrize("name", sorted(registry.PERSONAS))
def test_fused_loss_equals_model_loss_for_every_persona(name):
    """fused_loss assumes the head is lm_head(hidden(x)) with a plain cross-entropy: a persona that changes the
    head must fail here until fused_loss follows it."""
    base = registry.get(name).model
    # adaptive_softmax: cluster edges inside the small vocabulary
    extra = {"adaptive_softmax_cutoffs": (20, 60)} if base.has("adaptive_softmax") else {}
    cfg = base.replace(vocab_size=211, block_size=16, dropout=0.0, **extra)
    from dreamteam.components.ngram_memory import stats_for
    from parity.checks import synthetic_stream, synthetic_token_counts

    torch.manual_seed(0)
    model = GPT(cfg, token_counts=synthetic_token_counts(cfg), ngram_stats=stats_for(cfg, synthetic_stream(cfg))).double()
    # training mode, as built: ngram_memory's held-out estimate on both sides
    x, y = torch.randint(0, 211, (2, 16)), torch.randint(0, 211, (2, 16))
    loss_a = model(x, y)[1]
    grads_a = torch.autograd.grad(loss_a, list(model.parameters()))
    loss_b = fused_loss(model, x, y, chunk=7)
    grads_b = torch.autograd.grad(loss_b, list(model.parameters()))
    assert abs(loss_a.item() - loss_b.item()) <= 1e-12
    for ga, gb in zip(grads_a, grads_b):
        assert (ga - gb).abs().max().item() <= 1e-12


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-6)])
@pytest.mark.parametrize("chunk", [1, 7, 16, 64])
def test_output_bias_equals_cross_entropy(dtype, tol, chunk):
    """With a bias b: F.cross_entropy(h @ W.T + b), value and the gradients of h, W and b = sum_n (P - Y)_n / N."""
    h, W, t = make(dtype)
    b = torch.randn(V, dtype=dtype, generator=torch.Generator().manual_seed(3)).mul_(3.0).requires_grad_()
    loss = linear_cross_entropy(h, W, t, chunk, bias=b)
    grads = torch.autograd.grad(2.5 * loss, (h, W, b))
    ref = F.cross_entropy(h @ W.T + b, t, ignore_index=-1)
    grads_r = torch.autograd.grad(2.5 * ref, (h, W, b))
    assert abs(loss.item() - ref.item()) <= tol * abs(ref.item())
    for g, g_r in zip(grads, grads_r):
        assert (g - g_r).norm().item() <= tol * g_r.norm().item()
    keep = t != -1  # grad_b is the mean over kept tokens of P - Y, which sums to zero over the vocabulary
    P = torch.softmax(h @ W.T + b, -1)[keep].detach()
    Y = F.one_hot(t[keep], V).to(dtype)
    assert (grads[2] / 2.5 - (P - Y).mean(0)).abs().max().item() <= 10 * tol
    assert abs(grads[2].sum().item()) <= 10 * tol
    with torch.no_grad():  # the gradient-free path takes the bias too
        assert abs(linear_cross_entropy(h, W, t, chunk, bias=b).item() - ref.item()) <= tol * abs(ref.item())
    with pytest.raises(ValueError, match="bias"):
        linear_cross_entropy(h, W, t, chunk, bias=b[:-1])


# ---- the fast path against the eager reference over a training trajectory of the real baseline model ----

STEPS, BATCH = 20, 2


@pytest.fixture(scope="module")
def batches():
    checks = pytest.importorskip("parity.checks", reason="parity.checks (fixed_batches) needs jax")
    return [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in checks.fixed_batches(GPTConfig(), STEPS, BATCH)]


def trajectory(model, loss_fn, batches, recipe, fused=None):
    opt = recipes.build_optimizer(model, recipe, fused=fused)
    losses = []
    for it, (x, y) in enumerate(batches):
        loss = loss_fn(model, x, y)
        loss.backward()
        recipes.optimizer_step(model, opt, recipe, it)
        losses.append(loss.item())
    return np.array(losses)


def rel_error(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_trajectory_parity_with_eager(batches, dtype):
    persona = registry.get("baseline")
    tdtype = getattr(torch, dtype)
    torch.manual_seed(0)
    eager = GPT(persona.model).to(tdtype)
    fast = GPT(persona.model).to(tdtype)
    fast.load_state_dict(eager.state_dict())
    init = torch.cat([p.detach().flatten() for p in eager.parameters()]).clone()
    assert fast.lm_head.weight is fast.transformer.wte.weight
    # the reference: eager loss and AdamW loop (train_mps --eager); the fast path: chunked loss and fused AdamW
    losses_e = trajectory(eager, lambda m, x, y: m(x, y)[1], batches, persona.recipe, fused=False)
    losses_f = trajectory(fast, fused_loss, batches, persona.recipe)
    params_f = dict(fast.named_parameters())
    if dtype == "float64":
        assert np.max(np.abs(losses_f - losses_e)) <= 1e-9
        for name, p in eager.named_parameters():
            assert (params_f[name] - p).abs().max().item() <= 1e-9, name
    else:
        assert rel_error(losses_f, losses_e) <= 1e-5
        for name, p in eager.named_parameters():
            assert rel_error(params_f[name].detach().numpy(), p.detach().numpy()) <= 1e-5, name
    flat_e = torch.cat([p.detach().flatten() for p in eager.parameters()])
    flat_f = torch.cat([p.detach().flatten() for p in fast.parameters()])
    assert (flat_e - init).norm() > 1e3 * (flat_f - flat_e).norm()  # the steps moved the weights far more than the paths differ
