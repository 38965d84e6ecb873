"""Text corpora for the char-rnn workflow: reading, vocabulary, cached encoding, splits, batches.

* :func:`load_corpus` reads a UTF-8 file, a directory of files (concatenated in sorted order of
  their relative paths, hidden files skipped) or, with no path, the bundled corpus (the running
  interpreter's standard-library sources, see :func:`stdlib_files`).  The text is encoded once
  into a compact integer tensor (``uint8`` / ``int16`` / ``int32`` as the vocabulary size
  allows) and the encoding is cached on disk, keyed by the SHA-256 of the raw bytes: next to
  the file (``.NAME.charlstm-HASH.pt``) or, when that directory is not writable (e.g. a
  read-only share), in the cache directory (:func:`cache_dir`).  Characters never exist as one
  Python object each: decoding and encoding run through numpy on UTF-32 code points.
* :class:`Vocab`: the sorted distinct characters of the training text; stored with every
  checkpoint.  :meth:`Vocab.remap` re-expresses an encoding in another vocabulary and reports
  the characters it lacks.
* :func:`split` cuts an encoding into train/val/test by fractions.
* :class:`StreamBatcher`: char-rnn's loader semantics.  A split of ``N`` characters is cut into
  ``batch_size`` contiguous streams; batch ``k`` is columns ``[k*T, (k+1)*T)`` of every stream,
  so batch ``k+1`` continues each stream of batch ``k`` and the hidden state can be carried
  across batches (truncated BPTT).  Under data parallelism each rank takes its own slice of the
  streams (rows ``rank*b : (rank+1)*b`` with ``b = batch_size // world``).
"""
from __future__ import annotations

import hashlib
import os
import sysconfig
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

__all__ = ["Vocab", "Corpus", "load_corpus", "encode_text", "split", "StreamBatcher",
           "stdlib_files", "cache_dir", "DEFAULT_STDLIB_CAP", "CACHE_ENV"]

#: default size cap (bytes) of the bundled standard-library corpus
DEFAULT_STDLIB_CAP = 3_000_000
#: environment variable naming the cache directory
CACHE_ENV = "CHARLSTM_CACHE_DIR"
_CACHE_VERSION = 1
#: directory names never read into the bundled corpus
_STDLIB_SKIP = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__",
                "_bundled", "lib2to3"}


def _codes(text: str) -> np.ndarray:
    """Unicode code points of ``text`` as a uint32 array (no per-character Python objects)."""
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


def _ids_dtype(vocab_size: int) -> torch.dtype:
    if vocab_size <= 256:
        return torch.uint8
    if vocab_size <= 32767:
        return torch.int16
    return torch.int32


class Vocab:
    """The sorted distinct characters of a text; id ``i`` is ``chars[i]``."""

    def __init__(self, chars: str) -> None:
        if not isinstance(chars, str) or not chars:
            raise ValueError(f"vocabulary must be a non-empty string of characters, got {chars!r}")
        codes = _codes(chars)
        if np.any(np.diff(codes.astype(np.int64)) <= 0):
            raise ValueError("vocabulary characters must be distinct and sorted")
        self.chars = chars
        self._codes = codes

    @classmethod
    def from_codes(cls, codes: np.ndarray) -> Vocab:
        return cls(codes.astype("<u4").tobytes().decode("utf-32-le"))

    def __len__(self) -> int:
        return len(self.chars)

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocab) and other.chars == self.chars

    def __repr__(self) -> str:
        return f"Vocab({len(self)} characters)"

    @property
    def dtype(self) -> torch.dtype:
        """The smallest integer dtype that holds every id."""
        return _ids_dtype(len(self))

    def lookup(self, codes: np.ndarray) -> np.ndarray:
        """Ids of code points (int64 array); -1 where a character is not in the vocabulary."""
        pos = np.searchsorted(self._codes, codes)
        pos_c = np.minimum(pos, len(self._codes) - 1)
        return np.where(self._codes[pos_c] == codes, pos_c, -1).astype(np.int64)

    def missing(self, text: str) -> list[str]:
        """The sorted distinct characters of ``text`` that are not in the vocabulary."""
        codes = _codes(text)
        bad = np.unique(codes[self.lookup(codes) < 0])
        return list(Vocab.from_codes(bad).chars) if len(bad) else []

    def encode(self, text: str) -> Tensor:
        """``text`` as a LongTensor of ids; ValueError naming any character not in the
        vocabulary."""
        ids = self.lookup(_codes(text))
        if (ids < 0).any():
            raise ValueError(f"text contains characters not in the vocabulary: "
                             f"{describe_chars(self.missing(text))}")
        return torch.from_numpy(ids)

    def decode(self, ids: Union[Tensor, Sequence[int], np.ndarray]) -> str:
        """The characters of ``ids`` (any integer tensor/array/list)."""
        if isinstance(ids, Tensor):
            ids = ids.detach().cpu().to(torch.int64).numpy()
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        return self._codes[ids].astype("<u4").tobytes().decode("utf-32-le")

    def remap(self, ids: Tensor, target: Vocab) -> tuple[Tensor, dict[str, int]]:
        """Re-express ``ids`` (in this vocabulary) in ``target``'s ids.

        Returns ``(new_ids, missing)``: ``new_ids`` is int64 with ``-1`` where the character is
        not in ``target``; ``missing`` maps each such character to its number of occurrences.
        """
        table = torch.from_numpy(target.lookup(self._codes))        # [len(self)]
        new = table[ids.to(torch.int64)]
        missing: dict[str, int] = {}
        bad = (table < 0).nonzero().flatten()
        if len(bad):
            counts = torch.bincount(ids.to(torch.int64), minlength=len(self))
            for i in bad.tolist():
                if counts[i] > 0:
                    missing[self.chars[i]] = int(counts[i])
        return new, missing


def describe_chars(chars) -> str:
    """``'é' (U+00E9), ...`` for error messages."""
    return ", ".join(f"{c!r} (U+{ord(c):04X})" for c in chars)


def encode_text(text: str) -> tuple[Tensor, Vocab]:
    """Build the vocabulary of ``text`` (sorted distinct characters) and encode it with it."""
    codes = _codes(text)
    if len(codes) == 0:
        raise ValueError("cannot build a vocabulary from empty text")
    uniq, inv = np.unique(codes, return_inverse=True)
    vocab = Vocab.from_codes(uniq)
    return torch.from_numpy(inv.reshape(-1).astype(np.int64)).to(vocab.dtype), vocab


@dataclass
class Corpus:
    """An encoded text: ``ids`` (compact integer tensor) in ``vocab``, plus where it came from."""
    ids: Tensor
    vocab: Vocab
    sha256: str
    source: str          # human-readable description of the data
    num_bytes: int
    cache_path: Optional[str] = None

    def __len__(self) -> int:
        return len(self.ids)


# ---------------------------------------------------------------------------- reading
def stdlib_files(cap: int = DEFAULT_STDLIB_CAP) -> list[Path]:
    """The bundled corpus's files: ``*.py`` under ``sysconfig.get_paths()["stdlib"]``.

    Sorted by relative path; directories named in ``_STDLIB_SKIP`` (site-packages, test suites,
    caches) are skipped; files are taken in order while the running total stays within ``cap``
    bytes (a file that would overflow the cap is skipped, later smaller ones may still fit).
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _STDLIB_SKIP and not d.startswith(".")]
        for f in filenames:
            if f.endswith(".py"):
                p = Path(dirpath) / f
                found.append((p.relative_to(root).as_posix(), p))
    found.sort()
    out, total = [], 0
    for _, p in found:
        size = p.stat().st_size
        if size and total + size <= cap:
            out.append(p)
            total += size
    return out


def _dir_files(path: Path) -> list[Path]:
    files = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for f in filenames:
            if not f.startswith("."):
                p = Path(dirpath) / f
                files.append((p.relative_to(path).as_posix(), p))
    files.sort()
    return [p for _, p in files]


def _read_files(files: list[Path], skip_undecodable: bool) -> bytes:
    parts = []
    for p in files:
        raw = p.read_bytes()
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as e:
            if skip_undecodable:
                continue
            raise ValueError(f"{p}: not valid UTF-8 text ({e})") from None
        parts.append(raw)
    return b"".join(parts)


# ---------------------------------------------------------------------------- cache
def cache_dir() -> Path:
    """``$CHARLSTM_CACHE_DIR``, else ``$XDG_CACHE_HOME/charlstm``, else ``~/.cache/charlstm``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "charlstm"


def _cache_candidates(name: str, beside: Optional[Path], sha: str) -> list[Path]:
    fname = f".{name}.charlstm-{sha[:16]}.pt"
    out = []
    if beside is not None:
        out.append(beside / fname)
    out.append(cache_dir() / fname.lstrip("."))
    return out


def _load_cache(path: Path, sha: str) -> Optional[tuple[Tensor, Vocab]]:
    try:
        if not path.is_file():
            return None
        obj = torch.load(path, map_location="cpu", weights_only=True)
        if obj.get("version") != _CACHE_VERSION or obj.get("sha256") != sha:
            return None
        return obj["ids"], Vocab(obj["vocab"])
    except Exception:  # a damaged cache is only a cache: re-encode
        return None


def _write_cache(paths: list[Path], sha: str, ids: Tensor, vocab: Vocab) -> Optional[Path]:
    obj = {"version": _CACHE_VERSION, "sha256": sha, "vocab": vocab.chars, "ids": ids}
    for path in paths:
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                torch.save(obj, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            # drop stale caches of the same source (other content hashes)
            stem = path.name[: path.name.rindex("-") + 1]
            for old in path.parent.glob(stem + "*.pt"):
                if old != path:
                    try:
                        old.unlink()
                    except OSError:
                        pass
            return path
        except OSError:
            if tmp is not None and os.path.exists(tmp):
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
            continue
    warnings.warn("charlstm: could not write the encoding cache anywhere "
                  f"(tried {', '.join(map(str, paths))}); continuing without it", stacklevel=2)
    return None


def load_corpus(data: Union[str, os.PathLike, None] = None, *,
                stdlib_cap: int = DEFAULT_STDLIB_CAP, use_cache: bool = True) -> Corpus:
    """Read and encode a corpus (see the module docstring); ``data=None`` is the bundled corpus."""
    if data is None:
        files = stdlib_files(stdlib_cap)
        raw = _read_files(files, skip_undecodable=True)
        source = (f"bundled corpus: {len(files)} stdlib *.py files from "
                  f"{sysconfig.get_paths()['stdlib']} (cap {stdlib_cap} bytes)")
        name, beside = f"stdlib-{stdlib_cap}", None
    else:
        path = Path(data)
        if path.is_dir():
            files = _dir_files(path)
            if not files:
                raise ValueError(f"{path}: directory holds no (non-hidden) files to read")
            raw = _read_files(files, skip_undecodable=False)
            source = f"{path} ({len(files)} files)"
        elif path.is_file():
            raw = _read_files([path], skip_undecodable=False)
            source = str(path)
        else:
            raise FileNotFoundError(f"data {str(path)!r}: no such file or directory")
        name, beside = path.resolve().name, path.resolve().parent
    if not raw:
        raise ValueError(f"{source}: the text is empty")
    sha = hashlib.sha256(raw).hexdigest()
    candidates = _cache_candidates(name, beside, sha)
    if use_cache:
        for c in candidates:
            hit = _load_cache(c, sha)
            if hit is not None:
                return Corpus(hit[0], hit[1], sha, source, len(raw), str(c))
    ids, vocab = encode_text(raw.decode("utf-8"))
    written = _write_cache(candidates, sha, ids, vocab) if use_cache else None
    return Corpus(ids, vocab, sha, source, len(raw), str(written) if written else None)


# ---------------------------------------------------------------------------- splits & batches
def split(ids: Tensor, train_frac: float, val_frac: float) -> tuple[Tensor, Tensor, Tensor]:
    """Contiguous train / val / test parts; test gets ``1 - train_frac - val_frac``."""
    if not (0 < train_frac <= 1 and 0 <= val_frac <= 1 and train_frac + val_frac <= 1 + 1e-9):
        raise ValueError(f"bad split fractions: train_frac={train_frac}, val_frac={val_frac} "
                         "(need 0 < train_frac, 0 <= val_frac, train_frac + val_frac <= 1)")
    n = len(ids)
    n_train = int(n * train_frac)
    n_val = n - n_train if train_frac + val_frac >= 1 - 1e-9 else min(n - n_train,
                                                                        int(n * val_frac))
    return ids[:n_train], ids[n_train:n_train + n_val], ids[n_train + n_val:]


class StreamBatcher:
    """Batches of ``batch_size`` contiguous streams of ``seq_length`` characters (char-rnn).

    ``num_batches = (N - 1) // (batch_size * seq_length)``; stream ``r`` is characters
    ``[r*L, (r+1)*L)`` with ``L = num_batches * seq_length`` and its targets are shifted by one.
    ``batch(k)`` returns ``(x, y)`` LongTensors of shape ``[batch_size // world, seq_length]``:
    this rank's rows of columns ``[k*T, (k+1)*T)``.
    """

    def __init__(self, ids: Tensor, batch_size: int, seq_length: int, rank: int = 0,
                 world: int = 1, name: str = "train") -> None:
        if batch_size < 1 or seq_length < 1:
            raise ValueError(f"batch_size and seq_length must be >= 1, got {batch_size}, "
                             f"{seq_length}")
        if batch_size % world:
            raise ValueError(f"batch_size {batch_size} must be divisible by the number of "
                             f"processes {world} (the global batch is split across them)")
        n = (len(ids) - 1) // (batch_size * seq_length)
        if n < 1:
            raise ValueError(f"the {name} split has {len(ids)} characters, fewer than one batch "
                             f"needs (batch_size * seq_length + 1 = "
                             f"{batch_size * seq_length + 1}); use more data or smaller "
                             "--batch-size / --seq-length")
        self.num_batches, self.seq_length = n, seq_length
        L = n * seq_length
        per = batch_size // world
        rows = slice(rank * per, (rank + 1) * per)
        self.x = ids[: batch_size * L].view(batch_size, L)[rows]
        self.y = ids[1: batch_size * L + 1].view(batch_size, L)[rows]

    def __len__(self) -> int:
        return self.num_batches

    def batch(self, k: int) -> tuple[Tensor, Tensor]:
        if not 0 <= k < self.num_batches:
            raise IndexError(f"batch {k} out of range [0, {self.num_batches})")
        cols = slice(k * self.seq_length, (k + 1) * self.seq_length)
        return self.x[:, cols].to(torch.int64), self.y[:, cols].to(torch.int64)
