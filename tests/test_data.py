import filecmp

import numpy as np
import pytest

from dreamteam import data, protocol


def test_prepare_is_byte_identical_to_the_benchmark(shared_data, tmp_path):
    info = data.prepare(tmp_path, shared_data / "input.txt")
    assert info == {"train_tokens": 301966, "val_tokens": 36059, "data_dir": str(tmp_path)}
    for split in ("train", "val"):
        assert filecmp.cmp(tmp_path / f"{split}.bin", shared_data / f"{split}.bin", shallow=False)


def test_tokenizer_round_trip_and_known_ids():
    # GPT-2 ids of a known string (the published encoder: "Hello" = 15496, " world" = 995)
    assert data.encode("Hello world") == [15496, 995]
    text = "ROMEO:\nBut, soft! what light through yonder window breaks?"
    assert data.decode(data.encode(text)) == text


def test_decode_rejects_ids_outside_the_vocabulary():
    with pytest.raises(ValueError, match="outside the GPT-2 vocabulary"):
        data.decode([1, 50300])


def test_load_validates_files(tmp_path):
    with pytest.raises(data.DataError, match="not found"):
        data.load_split(tmp_path / "train.bin")
    odd = tmp_path / "odd.bin"
    odd.write_bytes(b"\x01\x00\x02")
    with pytest.raises(data.DataError, match="odd.bin has 3 bytes"):
        data.load_split(odd)
    big = tmp_path / "big.bin"
    ids = np.arange(200, dtype=np.uint16)
    ids[150] = 60000
    ids.tofile(big)
    with pytest.raises(data.DataError, match="token id 60000 at position 150"):
        data.load_split(big)


def test_load_without_bins_says_how_to_get_them(tmp_path):
    with pytest.raises(data.DataError, match="dreamteam prepare"):
        data.load(tmp_path)


def test_load_prepares_from_input_txt_when_bins_are_missing(shared_data, tmp_path):
    (tmp_path / "input.txt").write_bytes((shared_data / "input.txt").read_bytes())
    ds = data.load(tmp_path)
    assert filecmp.cmp(tmp_path / "val.bin", shared_data / "val.bin", shallow=False)
    assert len(ds.train) == 301966 and len(ds.val) == 36059


def test_data_dir_resolution_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = {data.DATA_ENV_VAR: "/some/where"}
    assert data.resolve_data_dir("given", env) == data.Path("given")
    assert data.resolve_data_dir(None, env) == data.Path("/some/where")
    assert data.resolve_data_dir(None, {}) == tmp_path / "data" / "shakespeare"


def test_val_windows_cover_the_validation_set(shared_data):
    val = data.load_split(shared_data / "val.bin")
    x, y = data.val_windows(val)
    assert x.shape == y.shape == (563, protocol.BLOCK_SIZE)
    assert np.array_equal(x.reshape(-1)[1:], y.reshape(-1)[:-1])  # y is x shifted by one token
    assert np.array_equal(x.reshape(-1), val[: 563 * 64])


def test_batch_sampler_is_seeded_and_shifted():
    stream = np.arange(1000, dtype=np.uint16)
    a = data.BatchSampler(stream, 8, 64, seed=(3, 0))
    b = data.BatchSampler(stream, 8, 64, seed=(3, 0))
    c = data.BatchSampler(stream, 8, 64, seed=(4, 0))
    xa, ya = a()
    xb, _ = b()
    xc, _ = c()
    assert xa.shape == (8, 64) and np.array_equal(xa, xb) and not np.array_equal(xa, xc)
    assert np.array_equal(ya, xa + 1)  # consecutive ids: the target is the next token
    assert xa.max() + 1 < 1000


def test_token_counts_counts_every_id_and_rejects_out_of_range():
    ids = np.array([0, 3, 3, 7, 3], dtype=np.uint16)
    counts = data.token_counts(ids, vocab_size=10)
    assert counts.dtype == np.int64 and counts.shape == (10,)
    assert counts.tolist() == [1, 0, 0, 3, 0, 0, 0, 1, 0, 0]
    with pytest.raises(data.DataError, match="out of range"):
        data.token_counts(np.array([10], dtype=np.uint16), vocab_size=10)


def test_the_shipped_text_prepares_the_benchmark_bytes(shared_data, tmp_path):
    """The package's own input.txt (dreamteam/assets) gives train.bin and val.bin byte for byte the benchmark's."""
    assert data.embedded_text() == (shared_data / "input.txt").read_text(encoding="utf-8")
    info = data.prepare(tmp_path)  # no input.txt there, no download: the shipped text
    assert info["train_tokens"] == 301966 and info["val_tokens"] == 36059
    for split in ("train", "val"):
        assert filecmp.cmp(tmp_path / f"{split}.bin", shared_data / f"{split}.bin", shallow=False)


def test_a_fresh_install_prepares_the_cache_once_and_says_so(shared_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./data/shakespeare here
    environ = {"XDG_CACHE_HOME": str(tmp_path / "cache")}  # no $DREAMTEAM_DATA
    lines = []
    ds = data.load(None, environ, log=lines.append)
    cache = tmp_path / "cache" / "dreamteam" / "shakespeare"
    assert ds.data_dir == cache and len(lines) == 1 and str(cache) in lines[0]
    assert filecmp.cmp(cache / "val.bin", shared_data / "val.bin", shallow=False)
    assert data.load(None, environ, log=lines.append).data_dir == cache and len(lines) == 1  # prepared once
    # a folder the user names (or ./data/shakespeare where it holds data) comes first
    assert data.load(None, {**environ, data.DATA_ENV_VAR: str(shared_data)}).data_dir == shared_data
    local = tmp_path / "data" / "shakespeare"
    local.mkdir(parents=True)
    (local / "input.txt").write_text("First Citizen:\nBefore we proceed any further, hear me speak.\n" * 100)
    assert data.load(None, environ, log=lines.append).data_dir == local and len(lines) == 1


def test_default_cache_dir_follows_xdg_then_home(tmp_path):
    assert data.default_cache_dir({"XDG_CACHE_HOME": "/x", "HOME": "/h"}) == data.Path("/x/dreamteam/shakespeare")
    assert data.default_cache_dir({"HOME": "/h"}) == data.Path("/h/.cache/dreamteam/shakespeare")


def test_a_named_folder_without_data_is_an_error_not_the_cache(tmp_path):
    environ = {"XDG_CACHE_HOME": str(tmp_path / "cache"), data.DATA_ENV_VAR: str(tmp_path / "empty")}
    with pytest.raises(data.DataError, match="no train.bin/val.bin in .*empty"):
        data.load(None, environ)
    assert not (tmp_path / "cache").exists()


def test_a_damaged_shipped_text_is_one_error(tmp_path, monkeypatch):
    fake = tmp_path / "input.txt"
    fake.write_text("not Shakespeare")
    monkeypatch.setattr(data, "EMBEDDED_INPUT", fake)
    with pytest.raises(data.DataError, match="sha256 differs"):
        data.prepare(tmp_path / "out")


def test_an_offline_download_leaves_nothing_behind(tmp_path, monkeypatch):
    import urllib.error
    import urllib.request

    def offline(url, timeout=None):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(data.DataError, match=r"could not download https://example.org/t.txt \(no network\); .*--input PATH"):
        data.prepare(tmp_path / "a" / "b", download="https://example.org/t.txt")
    assert not (tmp_path / "a").exists()


def test_a_download_is_kept_as_input_txt(tmp_path, monkeypatch):
    import io
    import urllib.request

    text = "Hello world. " * 20
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: io.BytesIO(text.encode()))
    info = data.prepare(tmp_path / "d", download=True)
    assert (tmp_path / "d" / "input.txt").read_text() == text
    assert info["train_tokens"] + info["val_tokens"] == len(data.encode(text[: int(len(text) * 0.9)])) + len(
        data.encode(text[int(len(text) * 0.9):]))
