import math

import pytest

from dreamteam import config, protocol, registry


def test_unknown_persona_is_one_clear_error():
    with pytest.raises(registry.UnknownPersonaError, match=r"unknown persona 'nobody'; known personas: \[.*'baseline'"):
        registry.get("nobody")


def test_unknown_component_is_rejected():
    with pytest.raises(config.ConfigError, match="unknown component"):
        config.GPTConfig(components=("warp_drive",))


def test_baseline_is_the_protocol_model():
    p = registry.get("baseline")
    m = p.model
    assert (m.n_layer, m.n_head, m.n_embd, m.block_size, m.vocab_size) == (
        protocol.N_LAYER, protocol.N_HEAD, protocol.N_EMBD, protocol.BLOCK_SIZE, protocol.VOCAB_SIZE)
    assert m.bias is False and m.dropout == 0.0 and m.components == ()
    r = p.recipe
    assert (r.optimizer, r.learning_rate, r.beta1, r.beta2, r.eps, r.weight_decay, r.grad_clip) == (
        "adamw", 3e-4, 0.9, 0.95, 1e-8, 0.1, 1.0)


def test_build_cannot_remove_what_is_not_there():
    with pytest.raises(ValueError, match="no component"):
        registry.build("baseline", remove=("rope",))


def test_cosine_schedule_values():
    r = config.Recipe(schedule="cosine", learning_rate=3e-3, min_lr=3e-4, warmup_iters=200, decay_iters=10001)
    assert config.learning_rate(0, r) == pytest.approx(3e-3 / 200)
    assert config.learning_rate(199, r) == pytest.approx(3e-3)
    mid = 200 + (10001 - 200) / 2
    assert config.learning_rate(int(mid), r) == pytest.approx(3e-4 + 0.5 * (1 + math.cos(math.pi * (int(mid) - 200) / 9801)) * 2.7e-3)
    assert config.learning_rate(10001, r) == 3e-4
    assert config.learning_rate(5000, config.Recipe()) == 3e-4


def test_fitness_is_dreamteams():
    assert protocol.fitness(4.5, 10.0) == pytest.approx(4.6)
