"""Shared pieces of the loop tests: a small-vocabulary data set and candidate folders."""

import shutil
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ORIGINAL = Path(__file__).resolve().parent / "fixtures" / "loop" / "original"
VOCAB = 256  # a small vocabulary so that a test step costs milliseconds, not the 50304-way head's ~0.25 s


def small_data(folder: Path) -> Path:
    """train.bin / val.bin of ids < 256 (seeded random walk, so rows are distinct windows)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ids = np.cumsum(rng.integers(1, 7, size=24000)) % VOCAB
    ids.astype(np.uint16)[:20000].tofile(folder / "train.bin")
    ids.astype(np.uint16)[20000:].tofile(folder / "val.bin")
    return folder


def replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"expected one {old!r}"
    return text.replace(old, new)


def original_candidate(folder: Path, *edits) -> Path:
    """A copy of the original-DreamTeam-style fixture with a small vocabulary and the given (old, new) edits."""
    shutil.copytree(ORIGINAL, folder)
    src = replace_once((folder / "train_mps.py").read_text(), "GPTConfig(n_layer=", f"GPTConfig(vocab_size={VOCAB}, n_layer=")
    for old, new in edits:
        src = replace_once(src, old, new)
    (folder / "train_mps.py").write_text(src)
    return folder


def project_variant(*edits) -> str:
    """The project's train_mps.py with (old, new) edits."""
    src = (ROOT / "train_mps.py").read_text()
    for old, new in edits:
        src = replace_once(src, old, new)
    return src
