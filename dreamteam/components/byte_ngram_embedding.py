"""byte_ngram_embedding: token embeddings composed from the bytes of each token (fastText's subword vectors).

Source: Bojanowski, Grave, Joulin and Mikolov 2017, "Enriching Word Vectors with Subword Information" (TACL 5):
a word's vector is the sum of vectors of its character n-grams, the word marked with boundary symbols '<' and
'>', the n-grams hashed into a fixed number of buckets (FNV-1a in fastText's code). Here the words are the
GPT-2 vocabulary's ids and the characters their bytes. Ada Lovelace's note G on the Analytical Engine: the
engine operates on symbols, not only numbers, "its operations ... on any objects whose mutual fundamental
relations could be expressed by those of the abstract science of operations": here an id is read through the
structure of its spelling, so that ids seen rarely share parameters with the ids that share their pieces.

Mathematics. For an id v with bytes b_1 .. b_m (`decode_single_token_bytes`; ids past the 50257 of GPT-2
have none), the marked sequence is s = (BOW, b_1, .., b_m, EOW), BOW and EOW two symbols outside the 256
bytes. Its n-grams for n in [n_min, n_max] are the windows s[i : i + n], i = 0 .. m + 2 - n, except the whole
of s (the id itself: its own row plays that part), counted with multiplicity. Each n-gram g is hashed into one of
K buckets,

    bucket(g) = FNV-1a-32(key(g)) mod K,     key(g) = [flags] + bytes of g without the markers,

flags = 1 (g starts with BOW) + 2 (g ends with EOW): one byte that tells the markers apart from the byte values
'<' and '>' (a GPT-2 token can hold any byte). FNV-1a 32-bit: h = 2166136261; for each byte c: h = (h xor c) *
16777619 mod 2^32. With the l-th n-gram of v in bucket idx[v, l] and weight w[v, l] = 1 / c_v (c_v its count of
n-grams; mean pooling, weights of an id sum to 1; an id without n-grams has none and keeps its own row):

    E_VxD = wte_VxD + sum_l w[v, l] G[idx[v, l]]         G the K x D bucket table (`byte_ngram.weight`)
    x = E[idx] (+ positions),   logits = h E^T            (the output head tied to the same E)

Gradients: d/d wte = dE;  d/d G[k] = sum_{(v, l): idx[v, l] = k} w[v, l] dE[v]. A bucket shared by two ids
carries a gradient of one id's row to the other's composed vector; an id shares nothing with an id none of whose
buckets it holds. With G = 0 the model is the baseline exactly.

This module is framework-neutral (numpy): the tables the torch and Flax modules read, and the composition as
the numpy reference of both (torchport/byte_ngram_embedding.py, jaxmodel/byte_ngram_embedding.py).
"""

from __future__ import annotations

import functools

import numpy as np

from dreamteam.components import Component

FNV_OFFSET = 2166136261
FNV_PRIME = 16777619
BOW, EOW = 1, 2  # the flag bits of an n-gram's key: it starts at the token's beginning / ends at its end


def fnv1a_32(data: bytes) -> int:
    """FNV-1a 32-bit of `data` (the scalar reference of `_fnv1a_rows`)."""
    h = FNV_OFFSET
    for c in data:
        h = ((h ^ c) * FNV_PRIME) & 0xFFFFFFFF
    return h


def ngrams(token: bytes, n_min: int, n_max: int) -> list[bytes]:
    """The keys of the byte n-grams of `token`, in order (n ascending, then position), with multiplicity:
    each key is one flag byte (BOW | EOW bits) followed by the n-gram's bytes without the markers.
    The whole marked token is left out; a token without bytes has no n-grams."""
    if not token:
        return []
    m = len(token)
    out = []
    for n in range(n_min, n_max + 1):
        for i in range(0, m + 2 - n + 1):  # windows of the marked sequence, of length m + 2
            j = i + n
            if i == 0 and j == m + 2:
                continue  # the whole token: its own row
            flags = (BOW if i == 0 else 0) | (EOW if j == m + 2 else 0)
            out.append(bytes([flags]) + token[max(i - 1, 0): min(j - 1, m)])
    return out


def token_bytes(vocab_size: int) -> list[bytes]:
    """The bytes of each id of the GPT-2 vocabulary padded to vocab_size (b'' past GPT-2's 50257 ids)."""
    from dreamteam.data import gpt2_encoding

    enc = gpt2_encoding()
    n = min(vocab_size, enc.n_vocab)
    return [enc.decode_single_token_bytes(v) for v in range(n)] + [b""] * (vocab_size - n)


def _fnv1a_rows(keys: list[bytes]) -> np.ndarray:
    """FNV-1a 32-bit of each key, vectorized over keys (one pass per byte position)."""
    if not keys:
        return np.zeros(0, np.uint64)
    lens = np.fromiter((len(k) for k in keys), np.int64, len(keys))
    buf = np.zeros((len(keys), int(lens.max())), np.uint8)
    for r, k in enumerate(keys):
        buf[r, : len(k)] = np.frombuffer(k, np.uint8)
    h = np.full(len(keys), FNV_OFFSET, np.uint64)
    for j in range(buf.shape[1]):
        on = j < lens
        h = np.where(on, ((h ^ buf[:, j].astype(np.uint64)) * np.uint64(FNV_PRIME)) & np.uint64(0xFFFFFFFF), h)
    return h


class Table:
    """The n-grams of every id as bucket ids and pooling weights, in two layouts of the same numbers:

    flat (CSR): bucket_M, weight_M, the n-grams of id v at offsets_V1[v] : offsets_V1[v + 1] (M in all);
    padded: idx_VxL, w_VxL, L the most n-grams of an id, padding with bucket 0 and weight 0.
    """

    def __init__(self, bucket_M: np.ndarray, weight_M: np.ndarray, offsets_V1: np.ndarray, buckets: int):
        self.bucket_M, self.weight_M, self.offsets_V1, self.buckets = bucket_M, weight_M, offsets_V1, buckets
        self.count_V = np.diff(offsets_V1)
        self.segment_M = np.repeat(np.arange(len(self.count_V)), self.count_V)  # the id of each n-gram

    @property
    def vocab_size(self) -> int:
        return len(self.count_V)

    def padded(self) -> tuple[np.ndarray, np.ndarray]:
        """(idx_VxL, w_VxL): bucket ids and weights per id, padded with bucket 0, weight 0."""
        V, L = self.vocab_size, max(1, int(self.count_V.max(initial=0)))
        col_M = np.arange(len(self.bucket_M)) - np.repeat(self.offsets_V1[:-1], self.count_V)
        idx, w = np.zeros((V, L), np.int64), np.zeros((V, L), np.float64)
        idx[self.segment_M, col_M] = self.bucket_M
        w[self.segment_M, col_M] = self.weight_M
        return idx, w


def build_table(tokens: list[bytes], buckets: int, n_min: int, n_max: int) -> Table:
    """The Table of `tokens` (one bytes per id): each id's n-grams, hashed, with weights 1 / (its count)."""
    per_id = [ngrams(t, n_min, n_max) for t in tokens]
    count_V = np.fromiter((len(g) for g in per_id), np.int64, len(per_id))
    keys = [k for g in per_id for k in g]
    distinct = sorted(set(keys))
    hash_of = dict(zip(distinct, (_fnv1a_rows(distinct) % np.uint64(buckets)).astype(np.int64).tolist()))
    bucket_M = np.fromiter((hash_of[k] for k in keys), np.int64, len(keys))
    weight_M = np.repeat(1.0 / np.maximum(count_V, 1), count_V)
    return Table(bucket_M, weight_M, np.concatenate([[0], np.cumsum(count_V)]), buckets)


@functools.lru_cache(maxsize=4)
def table(vocab_size: int, buckets: int, n_min: int, n_max: int) -> Table:
    """The Table of the GPT-2 vocabulary padded to vocab_size, once per process and setting (~2 s for V = 50304)."""
    return build_table(token_bytes(vocab_size), buckets, n_min, n_max)


def table_of(cfg) -> Table:
    """The Table of a GPTConfig's byte_ngram_embedding settings."""
    return table(cfg.vocab_size, cfg.byte_ngram_embedding_buckets, cfg.byte_ngram_embedding_min,
                 cfg.byte_ngram_embedding_max)


def compose(wte_VxD: np.ndarray, G_KxD: np.ndarray, t: Table) -> np.ndarray:
    """E = wte + sum_l w[v, l] G[idx[v, l]], the numpy reference of both frameworks' composition."""
    E = np.array(wte_VxD, dtype=np.result_type(wte_VxD, G_KxD), copy=True)
    np.add.at(E, t.segment_M, t.weight_M[:, None] * G_KxD[t.bucket_M])
    return E


def validate(cfg) -> list[str]:
    if not cfg.has("byte_ngram_embedding"):
        return []
    lo, hi, k = cfg.byte_ngram_embedding_min, cfg.byte_ngram_embedding_max, cfg.byte_ngram_embedding_buckets
    problems = []
    if not all(isinstance(a, int) and not isinstance(a, bool) for a in (lo, hi, k)) or not 1 <= lo <= hi or k < 1:
        problems.append(f"byte_ngram_embedding_min={lo!r}, byte_ngram_embedding_max={hi!r}, "
                        f"byte_ngram_embedding_buckets={k!r}: expected ints 1 <= min <= max and buckets >= 1")
    if not cfg.byte_ngram_embedding_init_std >= 0:
        problems.append(f"byte_ngram_embedding_init_std={cfg.byte_ngram_embedding_init_std} must be >= 0")
    return problems


# the composed rows E are what every head reads (the tied head, adaptive_softmax's head and tied tails)
COMPONENT = Component(
    "byte_ngram_embedding", ("token_embedding",),
    "each id's row plus the mean of hashed vectors of its byte n-grams, tied into the head (fastText's subword vectors)",
    # buckets K of the hashed table, n-gram lengths [min, max], the table's init std (0: starts as the baseline)
    options=("byte_ngram_embedding_buckets", "byte_ngram_embedding_min", "byte_ngram_embedding_max",
             "byte_ngram_embedding_init_std"),
    validate=validate,
    math="""\
E_VxD = wte_VxD + sum_l w[v, l] G[idx[v, l]],   x = E[idx],   logits = h E^T (the head tied to the same E)
idx[v, l]: the bucket FNV-1a-32(key) mod K of the l-th byte n-gram (n in [min, max], boundary-marked, the
whole token left out) of id v; w[v, l] = 1 / (v's count of n-grams) (mean pooling); G the K x D table
byte_ngram.weight. A bucket shared by two ids carries one id's gradient to the other's composed row.""",
    source='Bojanowski, Grave, Joulin and Mikolov 2017, "Enriching Word Vectors with Subword Information"; '
           "Lovelace's note G (the engine operates on symbols by their structure)",
    persona="ada_lovelace",
)
