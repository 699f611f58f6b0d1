import importlib
import math

import numpy as np
import pytest
import torch

from dreamteam.components import COMPONENTS, STEP_SLOTS
from dreamteam.config import GPTConfig
from model import GPT as EntryGPT, GPTConfig as EntryConfig
from torchport import recipe as recipes
from torchport.fast import fused_loss
from torchport.model import GPT

NANOGPT_BLOCK_KEYS = ["ln_1.weight", "attn.c_attn.weight", "attn.c_proj.weight", "ln_2.weight", "mlp.c_fc.weight", "mlp.c_proj.weight"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GPT(GPTConfig())


def test_entry_module_exports_nanogpt_interface():
    assert EntryGPT is GPT and EntryConfig is GPTConfig


def test_state_dict_has_nanogpt_names(model):
    keys = list(model.state_dict())
    expected = ["transformer.wte.weight", "transformer.wpe.weight"]
    for i in range(4):
        expected += [f"transformer.h.{i}.{k}" for k in NANOGPT_BLOCK_KEYS]
    expected += ["transformer.ln_f.weight", "lm_head.weight"]
    assert keys == expected


def test_head_is_tied_and_parameter_count(model):
    assert model.lm_head.weight is model.transformer.wte.weight
    # 50304*32 + 64*32 + 4 * (2*32 + 96*32 + 32*32 + 128*32 + 32*128) + 32
    assert sum(p.numel() for p in model.parameters()) == 50304 * 32 + 64 * 32 + 4 * (64 + 3072 + 1024 + 4096 + 4096) + 32


def test_init_statistics(model):
    sd = model.state_dict()
    assert sd["transformer.wte.weight"].std().item() == pytest.approx(0.02, rel=0.02)
    proj = torch.cat([sd[f"transformer.h.{i}.mlp.c_proj.weight"].flatten() for i in range(4)])
    assert proj.std().item() == pytest.approx(0.02 / math.sqrt(8), rel=0.05)
    assert torch.equal(sd["transformer.h.0.ln_1.weight"], torch.ones(32))


def test_causality(model):
    idx = torch.randint(0, 50257, (2, 64))
    changed = idx.clone()
    changed[:, 40] = (changed[:, 40] + 1) % 50257
    with torch.no_grad():
        a, _ = model(idx, idx)
        b, _ = model(changed, changed)
    assert torch.equal(a[:, :40], b[:, :40])
    assert not torch.allclose(a[:, 40:], b[:, 40:])


def test_initial_loss_is_near_uniform(model):
    idx, targets = torch.randint(0, 50257, (2, 4, 64))  # targets independent of the inputs
    _, loss = model(idx, targets)
    assert loss.item() == pytest.approx(math.log(50304), abs=0.05)


def test_configure_optimizers_decays_matrices_only(model):
    opt = model.configure_optimizers(0.1, 3e-4, (0.9, 0.95), "cpu")
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and all(p.dim() >= 2 for p in decay["params"])
    assert no_decay["weight_decay"] == 0.0 and all(p.dim() == 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_fused_adamw_is_the_cpu_default_and_the_same_update_as_the_loop():
    """configure_optimizers picks torch's fused AdamW on the CPU and CUDA, the multi-tensor loop elsewhere (MPS)
    and where asked (the eager reference); both run the same AdamW update: 20 steps in float64 agree to 1e-12."""
    torch.manual_seed(0)
    models = [GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=8)).double() for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    fused = models[0].configure_optimizers(0.1, 3e-3, (0.9, 0.95), "cpu")
    loop = models[1].configure_optimizers(0.1, 3e-3, (0.9, 0.95), "cpu", fused=False)
    assert fused.defaults["fused"] is True and not loop.defaults["fused"]
    assert not models[0].configure_optimizers(0.1, 3e-3, (0.9, 0.95), "mps").defaults["fused"]
    assert recipes.is_fused(fused) and not recipes.is_fused(loop)
    # the eager reference keeps nanoGPT's choice: fused on CUDA only
    assert [recipes.reference_fused(d) for d in ("cpu", "cuda", "mps")] == [False, True, False]
    init = [p.detach().clone() for p in models[0].parameters()]
    gen = torch.Generator().manual_seed(1)
    for _ in range(20):
        idx, targets = torch.randint(0, 64, (2, 2, 16), generator=gen)
        for m, opt in zip(models, (fused, loop)):
            m(idx, targets)[1].backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    for p0, p_f, p_l in zip(init, models[0].parameters(), models[1].parameters()):
        assert (p_f - p_l).abs().max().item() <= 1e-12
        assert (p_f - p0).abs().max().item() > 1e-3  # both moved: the comparison is not of two idle copies


def test_generate_extends_the_prompt(model):
    torch.manual_seed(0)
    out = model.generate(torch.zeros((1, 3), dtype=torch.long), max_new_tokens=5, top_k=10)
    assert out.shape == (1, 8) and torch.equal(out[:, :3], torch.zeros((1, 3), dtype=torch.long))


def test_sequence_longer_than_block_is_refused(model):
    with pytest.raises(ValueError, match="block_size is 64"):
        model(torch.zeros((1, 65), dtype=torch.long))


@pytest.mark.parametrize("name", list(COMPONENTS))
def test_each_component_module_fills_exactly_the_model_slots_it_declares(name):
    """torchport/<name>.py's FILLS holds one entry for each slot of the model its declaration names (the training
    step's slots are the loops'): the model finds a component by its name alone."""
    module = importlib.import_module(f"torchport.{name}")
    assert set(getattr(module, "FILLS", {})) == set(COMPONENTS[name].slots) - set(STEP_SLOTS)


@pytest.mark.parametrize("components", [(), ("good_turing_prior",), ("adaptive_softmax",)])
def test_the_head_object_gives_the_models_logits_and_losses(components):
    cfg = GPTConfig(vocab_size=97, block_size=16, n_layer=2, n_head=2, n_embd=16, components=components,
                    adaptive_softmax_cutoffs=(10, 40))
    counts = np.arange(97) % 13  # some ids never seen
    torch.manual_seed(0)
    model = GPT(cfg, token_counts=counts).double()
    x, y = torch.randint(0, 97, (3, 16)), torch.randint(0, 97, (3, 16))
    y[0, :4] = -1  # ignored targets
    logits, loss = model(x, y)
    h = model.hidden(x)
    assert model.head is (model.transformer.adaptive_softmax if components == ("adaptive_softmax",) else model.lm_head)
    assert torch.equal(model.head.logits(h), logits) and logits.shape == (3, 16, 97)
    assert torch.equal(model.head.loss(h, y), loss)
    last = model(x)[0]  # generation: the last position only (other matmul shapes: other rounding)
    assert last.shape == (3, 1, 97) and torch.allclose(last, logits[:, [-1], :], rtol=0, atol=1e-12)
    assert abs(fused_loss(model, x, y).item() - loss.item()) <= 1e-12
