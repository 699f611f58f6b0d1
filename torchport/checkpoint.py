"""Loading a run's checkpoint into a torch model for the commands that read one (sample, anatomy, export-int8):
failures are one CommandError line, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

from dreamteam.arguments import CommandError
from dreamteam.config import GPTConfig


def load_checkpoint(model, path, persona_name: str) -> None:
    """load_model(model, path), its failures as one CommandError: a missing file, a file that is no
    safetensors checkpoint, weights of another model."""
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    try:
        load_model(model, str(path))
    except FileNotFoundError:
        raise CommandError(f"checkpoint {path} does not exist") from None
    except SafetensorError as e:
        raise CommandError(f"{path} is not a safetensors checkpoint ({e})") from None
    except RuntimeError as e:
        raise CommandError(f"checkpoint {path} does not fit persona {persona_name!r}: {str(e).splitlines()[0]}") from None


def config_of_checkpoint(checkpoint, persona_name: str | None) -> GPTConfig:
    """The GPTConfig of a run checkpoint: the named persona's, else the one in its run record (NAME.json)."""
    from dreamteam import registry

    if persona_name:
        return registry.get(persona_name).model
    record = Path(checkpoint).with_suffix(".json")
    if not record.exists():
        raise CommandError(f"no run record {record} beside the checkpoint; pass --persona NAME")
    try:
        fields = json.loads(record.read_text())["config"]
    except (UnicodeDecodeError, ValueError, KeyError, TypeError):
        raise CommandError(f"{record} beside the checkpoint is not a run record with a config; pass --persona NAME") from None
    return GPTConfig.from_fields(fields)
