"""The Flax model's initial parameters and first loss do not move when its code is restructured.

tests/fixtures/init_hashes_jax.json holds, as the code at 07de73c (before the model assembled by slot) gave
them, for every registered persona and for baseline + each single component:
- the sha256 of every leaf of init_params(cfg, PRNGKey(0), token_counts=<train.bin counts>), float32 (the
  training dtype), with its shape and dtype: Flax draws each parameter's key from its module path and its
  rank among the draws of its module, so a renamed or reordered parameter changes its hash;
- the same in float64, and the float64 loss (loss_fn, and jaxmodel/fast.py's fused_loss) on a fixed batch.
The float64 entries of the labels with difference_ssm were re-recorded when its initial theta became float32
values (numpy's exp/log differed by an ulp between processors with and without AVX-512); float32 did not move.

Regenerate (only for an intended change of the initial weights): PYTHONPATH=$PWD python tests/test_init_identity_jax.py
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

FIXTURE = Path(__file__).parent / "fixtures" / "init_hashes_jax.json"
B = 2  # batch rows of the fixed batch, windows of block_size tokens from the start of train.bin


def configs():
    """{label: GPTConfig}: the registered personas (as the fixture recorded them, where they are registered
    differently now: tests/reference_models.py), then baseline + each single component."""
    from dreamteam import registry
    from dreamteam.components import COMPONENTS
    from reference_models import REFERENCE_MODELS

    out = {name: REFERENCE_MODELS.get(name, p.model) for name, p in registry.PERSONAS.items()}
    for c in COMPONENTS:
        out[f"baseline+{c}"] = registry.build("baseline", add=(c,)).model
    return out


def leaf_hashes(variables) -> dict[str, str]:
    import jax

    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(variables)[0]:
        a = np.asarray(leaf)
        name = "/".join(str(getattr(k, "key", k)) for k in path)
        out[name] = f"{a.dtype} {a.shape} {hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()}"
    return out


def snapshot(cfg, counts, ids) -> dict:
    """{'float32': leaf hashes, 'float64': leaf hashes, 'loss': float64 loss_fn, 'fused_loss': float64 fused_loss}."""
    import jax
    import jax.numpy as jnp

    from dreamteam.components.ngram_memory import stats_for
    from jaxmodel.fast import fused_loss
    from jaxmodel.model import init_params, loss_fn

    stats = stats_for(cfg, ids)  # the head_mixture's n-gram counts (None without ngram_memory)
    key = jax.random.PRNGKey(0)
    out = {"float32": leaf_hashes(init_params(cfg, key, token_counts=counts))}
    with jax.enable_x64(True):
        params = init_params(cfg, key, jnp.float64, token_counts=counts)
        out["float64"] = leaf_hashes(params)
        T = cfg.block_size
        x_BxT = jnp.asarray(np.stack([ids[i * T: (i + 1) * T] for i in range(B)]).astype(np.int32))
        y_BxT = jnp.asarray(np.stack([ids[i * T + 1: (i + 1) * T + 1] for i in range(B)]).astype(np.int32))
        out["loss"] = float(jax.jit(lambda p: loss_fn(p, cfg, x_BxT, y_BxT, counts, ngram_stats=stats))(params))
        out["fused_loss"] = float(jax.jit(lambda p: fused_loss(p, cfg, x_BxT, y_BxT, token_counts=counts,
                                                                   ngram_stats=stats))(params))
    return out


def train_ids(folder: Path):
    from dreamteam.data import token_counts

    ids = np.fromfile(folder / "train.bin", dtype=np.uint16)
    return token_counts(ids), ids


def labels():
    """The recorded labels; baseline + one component is slow (every component is also in some persona, run
    by default; alone they add mla without rope, fixed_point_qat without tiled_attention, ...)."""
    recorded = json.loads(FIXTURE.read_text()) if FIXTURE.exists() else {}
    return [pytest.param(label, marks=pytest.mark.slow) if "+" in label else label for label in recorded]


@pytest.mark.parametrize("label", labels())
def test_initial_parameters_and_loss_are_the_recorded_ones(label, shared_data):
    want = json.loads(FIXTURE.read_text())[label]
    counts, ids = train_ids(shared_data)
    got = snapshot(configs()[label], counts, ids)
    for dtype in ("float32", "float64"):
        assert sorted(got[dtype]) == sorted(want[dtype]), f"{label} {dtype}: parameter paths differ"
        changed = [k for k in want[dtype] if got[dtype][k] != want[dtype][k]]
        assert not changed, f"{label} {dtype}: initial values differ at {changed}"
    for name in ("loss", "fused_loss"):
        assert abs(got[name] - want[name]) <= 1e-12, f"{label} {name}: {got[name]!r} != {want[name]!r}"


if __name__ == "__main__":
    from tests.conftest import SHARED_DATA

    counts, ids = train_ids(Path(sys.argv[1]) if len(sys.argv) > 1 else SHARED_DATA)
    table = {}
    for label, cfg in configs().items():
        table[label] = snapshot(cfg, counts, ids)
        print(label, len(table[label]["float32"]), "leaves, loss", table[label]["loss"], flush=True)
    FIXTURE.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
