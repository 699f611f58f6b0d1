"""The component contract: every component is declared once (dreamteam/components), with its options, their
validation, its mathematics and source, and what it can be combined with follows from its slots alone."""

from __future__ import annotations

import dataclasses
import itertools
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

from dreamteam import config, registry
from dreamteam.components import (
    ADDED_SINCE,
    COMPONENTS,
    FIXED_ORDER,
    RECIPE_SLOTS,
    SLOTS,
    THEMES,
    Component,
    conflicts,
)
from dreamteam.config import ConfigError, GPTConfig, Recipe
from dreamteam.tools import bench

ROOT = Path(__file__).resolve().parents[1]
HOLDERS = {"GPTConfig": GPTConfig, "Recipe": Recipe}
# the fields that belong to no component: the protocol's sizes, nanoGPT's own settings, the baseline recipe
BASELINE_FIELDS = {
    "GPTConfig": {"block_size", "vocab_size", "n_layer", "n_head", "n_embd", "dropout", "bias", "components"},
    "Recipe": {"optimizer", "learning_rate", "schedule", "warmup_iters", "min_lr", "decay_iters", "beta1", "beta2",
               "eps", "weight_decay", "grad_clip"},
}
# The specification the slots replace: the pairs GPTConfig.__post_init__ refused by hand before the declarations
# (main at 07de73c), plus the two that the hand list missed (moe_mlp built with golden_swiglu or laplace_glu,
# one of the two MLPs silently ignored).
OLD_HAND_LIST = {
    frozenset(p) for p in [
        ("memory_tape", "mla"), ("laplace_bias", "memory_tape"), ("laplace_bias", "mla"),
        ("laplace_glu", "golden_swiglu"), ("adaptive_softmax", "good_turing_prior"),
        ("adaptive_softmax", "succession_objective"), ("moe_mlp", "fixed_point_qat"),
        ("moe_mlp", "succession_objective"),
    ]
}
NEW_CLASHES = {frozenset(("moe_mlp", "golden_swiglu")), frozenset(("moe_mlp", "laplace_glu"))}
# the pairs branch ngram's GPTConfig refused by hand: the mixture needs the tied head and the plain objective
NGRAM_HAND_LIST = {frozenset(("ngram_memory", "adaptive_softmax")), frozenset(("ngram_memory", "succession_objective"))}
# one bad value per component with options (its error names the option)
BAD_VALUES = {
    "rope": dict(rope_fraction=0.375),  # 3 of the 8 dims of a head: rotation needs pairs
    "rms_qknorm": dict(rms_qknorm_qk_gain=0.0),
    "dyt": dict(dyt_alpha=0.0),
    "mla": dict(mla_kv_rank=0),
    "difference_ssm": dict(difference_ssm_order=0),
    "fixed_point_qat": dict(fixed_point_qat_bits=1),
    "tiled_attention": dict(tiled_attention_block=0),
    "muon": dict(muon_ns_steps=0),
    "memory_tape": dict(memory_tape_slots=-1),
    "good_turing_prior": dict(good_turing_prior_lr_ratio=-0.1),
    "laplace_bias": dict(laplace_bias_exponent=0.0),
    "laplace_glu": dict(laplace_glu_gate_scale=0.0),
    "succession_objective": dict(succession_objective_zloss=-1e-4),
    "posterior_mean": dict(posterior_mean_decay=1.0),
    "moe_mlp": dict(moe_mlp_score="relu"),
    "adaptive_softmax": dict(adaptive_softmax_cutoffs=(60, 20)),
    "byte_ngram_embedding": dict(byte_ngram_embedding_min=0),  # an n-gram has at least one byte
    "ngram_memory": dict(ngram_memory_order=4),  # the memory is a bigram or a trigram
    "rms_embedding": dict(rms_embedding_eps=0.0),  # a row of zeros would divide by zero
}


def test_every_option_is_a_field_of_its_holder_named_after_its_component():
    for c in COMPONENTS.values():
        names = {f.name for f in dataclasses.fields(HOLDERS[c.options_in])}
        assert set(c.options) <= names, (c.name, set(c.options) - names)
        assert all(o.startswith(c.name + "_") for o in c.options), c.name


def test_every_field_beyond_the_baseline_belongs_to_exactly_one_component():
    for holder, cls in HOLDERS.items():
        owners: dict[str, list[str]] = {}
        for c in COMPONENTS.values():
            for o in c.options:
                owners.setdefault(o, []).append(c.name)
        for f in dataclasses.fields(cls):
            if f.name in BASELINE_FIELDS[holder]:
                assert f.name not in owners, f.name
                continue
            owned = [n for n in owners.get(f.name, []) if COMPONENTS[n].options_in == holder]
            assert len(owned) == 1, f"{holder}.{f.name} belongs to {owned or 'no component'}"


def test_every_declaration_states_its_mathematics_and_source():
    for c in COMPONENTS.values():
        assert c.summary and c.math.strip() and c.source.strip(), c.name
        assert c.slots and all(s in SLOTS for s in c.slots), c.name


def test_every_declaration_names_its_persona_and_each_persona_switches_on_only_its_own():
    assert all(c.persona in THEMES for c in COMPONENTS.values()), {c.name: c.persona for c in COMPONENTS.values()}
    assert set(THEMES) <= set(registry.PERSONAS)
    for name in THEMES:  # a persona keeps its theme: every component of its network is one of its own
        assert _network_themes(registry.get(name)) == {name}, name
    # only the recipe's slots (optimizer, weight average) may hold another persona's component: leonardo_da_vinci
    # evaluates Laplace's weight average, but Laplace's objective or Turing's output bias would not be its network
    assert _network_themes(registry.build("leonardo_da_vinci", add=("muon",))) == {"leonardo_da_vinci"}
    for other in ("succession_objective", "good_turing_prior"):
        assert COMPONENTS[other].persona in _network_themes(registry.build("leonardo_da_vinci", add=(other,)))


def _network_themes(persona) -> set[str]:
    """The personas whose themes the components of `persona`'s network come from (RECIPE_SLOTS left out)."""
    return {COMPONENTS[c].persona for c in persona.model.components if not set(COMPONENTS[c].slots) <= set(RECIPE_SLOTS)}


def test_conflicts_reproduce_the_hand_list_plus_the_mlp_slot():
    clashing = {frozenset((a, b)) for a, b in itertools.combinations(COMPONENTS, 2) if conflicts((a, b))}
    # the hand lists knew the components of FIXED_ORDER; one declared since clashes by its slots alone
    assert {pair for pair in clashing if pair <= set(FIXED_ORDER)} == OLD_HAND_LIST | NEW_CLASHES | NGRAM_HAND_LIST
    for a, b in itertools.combinations(COMPONENTS, 2):  # the config refuses exactly these, and builds the rest
        if frozenset((a, b)) in clashing:
            with pytest.raises(ConfigError, match=f"{a}|{b}"):
                GPTConfig(components=(a, b))
        else:
            GPTConfig(components=(a, b))


def test_the_registered_personas_and_a_listed_twice_name_build():
    for persona in registry.PERSONAS.values():
        assert conflicts(persona.model.components) == []
    assert conflicts(("golden_swiglu", "golden_swiglu")) == []


def test_an_unknown_slot_is_refused():
    with pytest.raises(ValueError, match="unknown slot"):
        Component("x", ("attention_sink",), "a component filling a slot that does not exist")
    with pytest.raises(ValueError, match="unknown slot"):
        Component("x", ("mlp",), "requires a slot that does not exist", requires=(("sink", (None,)),))
    with pytest.raises(KeyError, match="unknown slot"):
        GPTConfig().filler("attention_sink")
    with pytest.raises(ValueError, match="must be named x_"):
        Component("x", ("mlp",), "an option without the prefix", options=("width",))


@pytest.mark.parametrize("name", sorted(BAD_VALUES))
def test_each_validation_rejects_a_bad_value(name):
    c = COMPONENTS[name]
    (key, value), = BAD_VALUES[name].items()
    assert key in c.options
    if c.options_in == "Recipe":
        with pytest.raises(ConfigError, match=key):
            Recipe(**{key: value})
        assert c.problems(Recipe()) == []
    else:
        with pytest.raises(ConfigError, match=key):
            GPTConfig(components=(name,), **{key: value})
        assert c.problems(GPTConfig(components=(name,))) == []
    assert c.problems(GPTConfig() if c.options_in == "Recipe" else Recipe()) == []  # another holder: not its options


def test_every_component_with_options_has_a_bad_value_example():
    assert set(BAD_VALUES) == {n for n, c in COMPONENTS.items() if c.options}


def test_positions_and_qk_order_follow_the_declarations():
    assert config.POSITION_COMPONENTS == ("rope", "laplace_bias")
    assert GPTConfig(components=("rope", "rms_qknorm")).fillers("qk_transform") == ("rms_qknorm", "rope")
    assert GPTConfig(components=("rope",)).learned_positions is False
    assert GPTConfig(components=("mla",)).learned_positions is True


def test_known_components_keep_the_order_the_search_records():
    # evolve.json holds the list; a resumed search compares it and draws mutations by index into it
    recorded = json.loads((ROOT / "results/evolve/search1/evolve.json").read_text())["config"]["components"]
    assert list(config.KNOWN_COMPONENTS[:len(recorded)]) == recorded
    assert set(config.KNOWN_COMPONENTS) == set(COMPONENTS)


def test_the_package_finds_every_declaration_and_puts_a_new_one_after_the_fixed_order():
    import dreamteam.components as package

    assert set(COMPONENTS) == {m.name for m in pkgutil.iter_modules(package.__path__)}
    names, n, m = list(COMPONENTS), len(FIXED_ORDER), len(FIXED_ORDER) + len(ADDED_SINCE)
    assert names[:n] == list(FIXED_ORDER) and names[n:m] == list(ADDED_SINCE) and names[m:] == sorted(names[m:])


def test_renamed_options_load_from_old_records_genomes_and_set(tmp_path):
    for old, new in config.RENAMED_OPTIONS.items():
        assert new in {f.name for f in dataclasses.fields(GPTConfig)}
        assert old not in {f.name for f in dataclasses.fields(GPTConfig)}
    cfg = GPTConfig.from_fields({"components": ["rms_qknorm"], "rms_eps": 1e-5, "difference_ssm_layers": [1]})
    assert cfg.rms_qknorm_eps == 1e-5 and cfg.components == ("rms_qknorm",) and cfg.difference_ssm_layers == (1,)
    with pytest.raises(ConfigError, match="rms_eps and rms_qknorm_eps"):
        GPTConfig.from_fields({"rms_eps": 1e-5, "rms_qknorm_eps": 1e-6})
    assert bench.parse_settings(["rms_eps=1e-5"]) == {"rms_qknorm_eps": 1e-5}
    # a record written before the rename is the same spec as the persona now
    persona = registry.get("leonardo_da_vinci")
    spec = bench.spec_fields(persona)
    old_config = {("rms_eps" if k == "rms_qknorm_eps" else k): v for k, v in spec["config"].items()}
    record = {k: 0 for k in bench.RECORD_KEYS} | {"config": old_config, "recipe": spec["recipe"]}
    (tmp_path / "old.json").write_text(json.dumps(record))
    (_, read), = bench.read_records(tmp_path)
    assert bench.same_spec(read, spec)
    assert GPTConfig.from_fields(read["config"]) == persona.model


def test_committed_run_records_load_with_current_names():
    found = bench.read_records(ROOT / "results" / "cpu")
    assert found
    for _, record in found:
        if record.get("config"):
            GPTConfig.from_fields(record["config"])  # no unknown field, no refused combination


def test_the_core_imports_no_engine():
    code = ("import pkgutil, importlib, sys\n"
            "import dreamteam.components as c, dreamteam.config, dreamteam.registry, dreamteam.sampling\n"
            "for m in pkgutil.iter_modules(c.__path__):\n"
            "    importlib.import_module('dreamteam.components.' + m.name)\n"
            "print(sorted(n for n in sys.modules if n.split('.')[0] in ('torch', 'jax', 'flax', 'jaxmodel', 'torchport')))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
