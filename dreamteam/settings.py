"""Settings: `--set KEY=VALUE` on a persona, as `train_mps.py`, `dreamteam train` and `dreamteam bench` take it.

A setting is a field of Recipe or GPTConfig (an option of a component, named after it, or a recipe field),
typed from its default; the protocol's fields and the component list are not settings. A persona with
settings is labelled NAME@k=v,k=v, the name its run records carry.
"""

from __future__ import annotations

from dreamteam import registry
from dreamteam.config import RENAMED_OPTIONS


class SettingError(ValueError):
    """A setting that names no tunable field, does not parse, or breaks the config's checks."""


def parse_settings(items) -> dict:
    """['weight_decay=0.1', 'succession_objective_eps=0.2'] -> {field: value} for fields of Recipe or GPTConfig,
    each value converted to the field's type (from its default); one clear SettingError otherwise."""
    from dataclasses import fields

    from dreamteam.config import GPTConfig, Recipe

    known = {f.name: cls for cls in (Recipe, GPTConfig) for f in fields(cls)}
    settings = {}
    for item in items or ():
        key, sep, text = str(item).partition("=")
        if not sep or not key or not text:
            raise SettingError(f"--set {item!r}: expected KEY=VALUE")
        key = RENAMED_OPTIONS.get(key, key)  # an option renamed since (rms_eps -> rms_qknorm_eps)
        if key not in known or key in ("components", "n_layer", "n_head", "n_embd", "block_size", "vocab_size"):
            raise SettingError(f"--set {key}: not a tunable field of Recipe or GPTConfig (the protocol and the "
                             "components are fixed; use --ablate to remove a component)")
        default = getattr(known[key](), key)
        try:
            if isinstance(default, bool):
                if text.lower() not in ("true", "false"):
                    raise ValueError("expected true or false")
                value = text.lower() == "true"
            elif isinstance(default, tuple):  # 'adaptive_softmax_cutoffs=4000,8000'; elements typed as the default's
                kind = type(default[0]) if default else str
                value = tuple(kind(part) for part in text.split(","))
            else:
                value = type(default)(text)
        except ValueError as e:
            raise SettingError(f"--set {item!r}: {e}") from None
        settings[key] = value
    return settings


def with_settings(persona, settings: dict):
    """`persona` (a registry name or label, or a Persona) with `settings` applied, labelled 'name@k=v,k=v'; unchanged
    without settings. A setting that breaks the config's own checks is one clear SettingError."""
    from dataclasses import fields

    from dreamteam.config import OPTION_OWNERS, ConfigError, Persona, Recipe

    if not settings:
        return persona
    spec = registry.from_label(persona) if isinstance(persona, str) else persona
    for key in settings:  # a component's setting (its declaration's option) on a persona without it would change nothing
        owner = OPTION_OWNERS.get(key)
        if owner and not spec.model.has(owner):
            raise SettingError(f"--set {key}: {spec.name} has no {owner} component, so the setting would change "
                             "nothing")
    recipe_fields = {f.name for f in fields(Recipe)}
    try:
        recipe = spec.recipe.replace(**{k: v for k, v in settings.items() if k in recipe_fields})
        model = spec.model.replace(**{k: v for k, v in settings.items() if k not in recipe_fields})
    except ConfigError as e:
        raise SettingError(f"--set: {e}") from None
    def text(v):  # a tuple as 4000:8000, so that the label stays one word (it names the run files)
        return ":".join(map(str, v)) if isinstance(v, tuple) else str(v)

    label = spec.name + "@" + ",".join(f"{k}={text(v)}" for k, v in settings.items())
    return Persona(label, model, recipe, spec.description)
