"""charlstm.charrnn.data: vocabulary, Unicode, cached encoding, corpora, splits, stream batches."""
import tempfile
from pathlib import Path

import pytest
import torch

from charlstm.charrnn import data as D


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv(D.CACHE_ENV, str(tmp_path / "cache"))


def test_unicode_round_trip():
    text = "naïve café — 日本語 😀\n"
    ids, vocab = D.encode_text(text)
    assert vocab.chars == "".join(sorted(set(text)))
    assert vocab.decode(ids) == text
    assert vocab.decode(vocab.encode(text)) == text
    assert ids.dtype == torch.uint8


def test_id_dtype_grows_with_vocab():
    text = "".join(chr(0x4E00 + i) for i in range(300))
    ids, vocab = D.encode_text(text)
    assert len(vocab) == 300 and ids.dtype == torch.int16
    assert vocab.decode(ids) == text


def test_encode_rejects_and_remap_counts_missing_chars():
    _, vocab = D.encode_text("abc")
    with pytest.raises(ValueError, match=r"'é' \(U\+00E9\)"):
        vocab.encode("cafébé")
    assert vocab.missing("xaéé") == ["x", "é"]
    src_ids, src_vocab = D.encode_text("aébéc")
    new, missing = src_vocab.remap(src_ids, vocab)
    assert missing == {"é": 2}
    assert new.tolist() == [0, -1, 1, -1, 2]


def test_file_corpus_is_cached_next_to_the_file(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("naïve café — 日本語\n" * 50, encoding="utf-8")
    c1 = D.load_corpus(f)
    assert c1.cache_path is not None and Path(c1.cache_path).parent == tmp_path
    assert c1.vocab.decode(c1.ids) == f.read_text(encoding="utf-8")
    c2 = D.load_corpus(f)          # second read comes from the cache
    assert c2.cache_path == c1.cache_path and torch.equal(c1.ids, c2.ids)
    f.write_text("other text\n", encoding="utf-8")   # new content -> new key, stale cache gone
    c3 = D.load_corpus(f)
    assert c3.sha256 != c1.sha256 and not Path(c1.cache_path).exists()
    assert c3.vocab.decode(c3.ids) == "other text\n"


def test_cache_falls_back_to_cache_dir_when_data_dir_not_writable(tmp_path, monkeypatch):
    ro = tmp_path / "readonly"
    ro.mkdir()
    f = ro / "t.txt"
    f.write_text("hello\n" * 10)
    real = tempfile.mkstemp

    def mkstemp(*a, dir=None, **k):
        if Path(dir) == ro:
            raise PermissionError(13, "Permission denied", str(dir))
        return real(*a, dir=dir, **k)
    monkeypatch.setattr(D.tempfile, "mkstemp", mkstemp)
    c = D.load_corpus(f)
    assert Path(c.cache_path).parent == tmp_path / "cache"
    assert list(ro.iterdir()) == [f]
    assert D.load_corpus(f).cache_path == c.cache_path


def test_directory_corpus_sorted_and_skips_hidden(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "2.txt").write_text("B2 ")
    (tmp_path / "a.txt").write_text("A ")
    (tmp_path / "c.txt").write_text("C")
    (tmp_path / ".hidden").write_text("HIDDEN")
    c = D.load_corpus(tmp_path)
    assert c.vocab.decode(c.ids) == "A B2 C"


def test_invalid_utf8_names_the_file(tmp_path):
    f = tmp_path / "bad.txt"
    f.write_bytes(b"ok \xff\xfe")
    with pytest.raises(ValueError, match="bad.txt: not valid UTF-8"):
        D.load_corpus(f)
    with pytest.raises(FileNotFoundError, match="nope"):
        D.load_corpus(tmp_path / "nope")


def test_bundled_stdlib_corpus():
    files = D.stdlib_files(cap=150_000)
    assert files and sum(f.stat().st_size for f in files) <= 150_000
    root = Path(__import__("sysconfig").get_paths()["stdlib"])
    rel = [f.relative_to(root).as_posix() for f in files]
    assert rel == sorted(rel)
    assert not any(set(r.split("/")) & {"site-packages", "test", "tests"} for r in rel)
    c = D.load_corpus(None, stdlib_cap=150_000)
    assert "import" in c.vocab.decode(c.ids[:20000]) and c.num_bytes <= 150_000


def test_split_fractions():
    ids = torch.arange(100)
    tr, va, te = D.split(ids, 0.8, 0.15)
    assert (len(tr), len(va), len(te)) == (80, 15, 5)
    assert torch.equal(torch.cat([tr, va, te]), ids)
    with pytest.raises(ValueError, match="fractions"):
        D.split(ids, 0.9, 0.2)


def test_stream_batcher_continues_streams_and_slices_ranks():
    ids = torch.arange(1000) % 251
    B, T = 4, 10
    full = D.StreamBatcher(ids.to(torch.uint8), B, T)
    assert len(full) == 999 // (B * T)
    L = len(full) * T
    for k in range(len(full)):
        x, y = full.batch(k)
        assert x.shape == (B, T) and x.dtype == torch.int64
        for r in range(B):   # row r, batch k = characters [r*L + k*T, ...) of the text
            assert x[r].tolist() == ids[r * L + k * T: r * L + (k + 1) * T].tolist()
        assert torch.equal(y[:, :-1], x[:, 1:])
        if k + 1 < len(full):
            assert torch.equal(full.batch(k + 1)[0][:, 0], y[:, -1])
    parts = [D.StreamBatcher(ids.to(torch.uint8), B, T, rank=r, world=2).batch(3) for r in (0, 1)]
    assert torch.equal(torch.cat([p[0] for p in parts]), full.batch(3)[0])
    with pytest.raises(ValueError, match="divisible"):
        D.StreamBatcher(ids, 3, T, world=2)
    with pytest.raises(ValueError, match="fewer than one batch"):
        D.StreamBatcher(ids[:30], B, T, name="val")
