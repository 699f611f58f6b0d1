import jax
import numpy as np
import pytest
import torch

from dreamteam.config import GPTConfig
from jaxmodel import model as jm
from parity.convert import ConversionError, flax_key_to_torch, flax_to_torch, torch_to_flax
from torchport.model import GPT


@pytest.fixture(scope="module")
def flax_template():
    return jm.init_params(GPTConfig(), jax.random.PRNGKey(0))


def test_key_mapping():
    assert flax_key_to_torch(("transformer", "h_2", "ln_1", "weight")) == "transformer.h.2.ln_1.weight"
    assert flax_key_to_torch(("transformer", "wte", "weight")) == "transformer.wte.weight"


def test_nanogpt_state_dict_round_trips_unchanged(flax_template):
    torch.manual_seed(3)
    sd = GPT(GPTConfig()).state_dict()
    tree = torch_to_flax(sd, template=flax_template)
    back = flax_to_torch(tree, template=sd)
    assert list(back) == list(sd) or set(back) == set(sd)
    for k, v in sd.items():
        assert torch.equal(back[k], v), k
    assert torch.equal(back["lm_head.weight"], back["transformer.wte.weight"])


def test_flax_tree_round_trips_unchanged(flax_template):
    sd = flax_to_torch(flax_template, template=GPT(GPTConfig()).state_dict())
    back = torch_to_flax(sd, template=flax_template)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), b), flax_template, back)


def test_converted_weights_give_the_same_logits(flax_template):
    model = GPT(GPTConfig())
    model.load_state_dict(flax_to_torch(flax_template, template=model.state_dict()))
    idx = np.random.default_rng(0).integers(0, 50257, (1, 16))
    with torch.no_grad():
        logits_t, _ = model(torch.from_numpy(idx), torch.from_numpy(idx))
    logits_j = jm.GPT(GPTConfig()).apply(flax_template, idx)
    np.testing.assert_allclose(logits_t.numpy(), np.asarray(logits_j), rtol=1e-4, atol=1e-5)


def test_untied_head_is_refused(flax_template):
    sd = {k: v.clone() for k, v in GPT(GPTConfig()).state_dict().items()}
    sd["lm_head.weight"] += 1.0
    with pytest.raises(ConversionError, match="tied"):
        torch_to_flax(sd, template=flax_template)


def test_name_and_shape_mismatches_are_refused(flax_template):
    sd = dict(GPT(GPTConfig()).state_dict())
    extra = dict(sd, **{"transformer.h.0.attn.bias": torch.zeros(1)})
    with pytest.raises(ConversionError, match="lacks"):
        torch_to_flax(extra, template=flax_template)
    missing = {k: v for k, v in sd.items() if k != "transformer.ln_f.weight"}
    with pytest.raises(ConversionError, match="no transformer.ln_f.weight"):
        torch_to_flax(missing, template=flax_template)
    small = GPT(GPTConfig(n_embd=16)).state_dict()
    with pytest.raises(ConversionError, match="shape"):
        flax_to_torch(flax_template, template=small)
