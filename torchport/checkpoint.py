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


def trained_model(checkpoint, train_ids, persona_name: str | None = None):
    """The torch GPT of a run checkpoint, in eval mode, with what its config builds from train.bin and the checkpoint
    does not hold (the token counts, the n-gram tables), and its GPTConfig; failures as one CommandError."""
    from dreamteam import data
    from dreamteam.components import ngram_memory
    from torchport.model import GPT

    config = config_of_checkpoint(checkpoint, persona_name)
    model = GPT(config, token_counts=data.token_counts(train_ids, config.vocab_size),
                ngram_stats=ngram_memory.stats_for(config, train_ids))
    load_checkpoint(model, checkpoint, persona_name or Path(checkpoint).stem)
    return model.eval(), config
