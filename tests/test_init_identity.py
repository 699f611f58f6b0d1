"""The torch GPT's initial weights and first losses are those of the reference code (main at 07de73c).

tests/fixtures/init_hashes_torch.json holds, for every registered persona and for baseline + each single
component: the sha256 of every state_dict tensor (in state_dict order) of GPT(config, token_counts) built after
torch.manual_seed(0) in float32 with the counts of train.bin, and the eager and fused losses (float.hex) on a
fixed batch of train.bin. A refactor of torchport/model.py that consumes torch's RNG in another order, renames
or reorders a parameter, or changes the forward pass fails here.

Regenerate (only from the reference code): PYTHONPATH=$PWD python tests/test_init_identity.py
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

FIXTURE = Path(__file__).parent / "fixtures" / "init_hashes_torch.json"
SEED = 0
BATCH_OFFSETS = (0, 1000, 20000, 50000, 100000, 150000, 200000, 250000)  # 8 windows of train.bin
BLOCK = 64


def labels() -> list[str]:
    from dreamteam import registry
    from dreamteam.config import KNOWN_COMPONENTS

    return sorted(registry.PERSONAS) + [f"baseline+{c}" for c in KNOWN_COMPONENTS]


def config_of(label: str):
    """The model the fixture recorded under `label` (a persona as it was then, where it is registered differently now)."""
    from dreamteam import registry
    from reference_models import REFERENCE_MODELS

    if label in REFERENCE_MODELS:
        return REFERENCE_MODELS[label]
    if "+" in label:
        name, component = label.split("+")
        return registry.build(name, add=(component,)).model
    return registry.get(label).model


def fingerprint(label: str, train_ids: np.ndarray) -> dict:
    """{'params': [[key, shape, sha256], ...] in state_dict order, 'eager_loss': hex, 'fused_loss': hex}."""
    from dreamteam.components.ngram_memory import stats_for
    from dreamteam.data import token_counts
    from torchport.fast import fused_loss
    from torchport.model import GPT

    config = config_of(label)
    torch.manual_seed(SEED)
    model = GPT(config, token_counts=token_counts(train_ids, config.vocab_size), ngram_stats=stats_for(config, train_ids))
    params = [[k, list(t.shape), hashlib.sha256(t.detach().contiguous().numpy().tobytes()).hexdigest()]
              for k, t in model.state_dict().items()]
    ix = np.array(BATCH_OFFSETS)[:, None] + np.arange(BLOCK)
    x = torch.from_numpy(train_ids[ix].astype(np.int64))
    y = torch.from_numpy(train_ids[ix + 1].astype(np.int64))
    with torch.no_grad():
        eager = float(model(x, y)[1])
        fused = float(fused_loss(model, x, y))
    return {"params": params, "eager_loss": eager.hex(), "fused_loss": fused.hex()}


def train_ids_from(folder: Path) -> np.ndarray:
    return np.fromfile(folder / "train.bin", dtype=np.uint16)


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads(FIXTURE.read_text())


@pytest.fixture
def train_ids(shared_data) -> np.ndarray:
    return train_ids_from(shared_data)


# what existed at the reference commit: identity is a promise about those models (a component or persona added
# since has no earlier weights to equal)
REFERENCE_PERSONAS = ("ada_lovelace", "alan_turing", "baseline", "charles_babbage", "leonardo_da_vinci",
                      "pierre_simon_laplace")
REFERENCE_COMPONENTS = 16


def test_fixture_covers_every_persona_and_component_of_the_reference(reference):
    recorded = set(reference["models"])
    assert set(REFERENCE_PERSONAS) <= recorded and recorded <= set(labels())
    assert len([label for label in recorded if "+" in label]) == REFERENCE_COMPONENTS


# the personas on every run (together they hold every component); each component alone with -m slow
LABELS = [label if "+" not in label else pytest.param(label, marks=pytest.mark.slow)
          for label in sorted(json.loads(FIXTURE.read_text())["models"])]


@pytest.mark.parametrize("label", LABELS)
def test_initial_weights_and_losses_are_the_reference(label, reference, train_ids):
    torch.set_num_threads(1)
    want = reference["models"][label]
    got = fingerprint(label, train_ids)
    assert [p[0] for p in got["params"]] == [p[0] for p in want["params"]], "state_dict keys or their order changed"
    changed = [k for (k, s, h), (_, s0, h0) in zip(got["params"], want["params"]) if (s, h) != (s0, h0)]
    assert not changed, f"initial values changed: {changed}"
    for loss in ("eager_loss", "fused_loss"):  # bitwise: the same forward pass, the same operations in order
        assert got[loss] == want[loss], (loss, float.fromhex(got[loss]), float.fromhex(want[loss]))


if __name__ == "__main__":
    import os

    torch.set_num_threads(1)
    folder = Path(os.environ.get("DREAMTEAM_DATA") or Path(__file__).resolve().parents[2] / "shared/data/shakespeare")
    ids = train_ids_from(folder)
    out = {"reference": sys.argv[1] if len(sys.argv) > 1 else "unknown", "torch": torch.__version__,
           "models": {label: fingerprint(label, ids) for label in labels()}}
    FIXTURE.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {FIXTURE}: {len(out['models'])} models")
