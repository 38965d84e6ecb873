"""Checkpoint files of the char-rnn workflow: atomic writes, clear errors, CPU loading.

A checkpoint is one ``torch.save`` file holding a dict (loaded with ``weights_only=True``)::

    format          "charlstm-charrnn"        version    1
    config          CharRNN constructor arguments (vocab_size, rnn_size, num_layers, dropout,
                    backend)
    vocab           the vocabulary: a string of the sorted distinct characters
    model           the model's state_dict (CPU tensors)
    optimizer, scheduler, scaler    their state_dicts (scaler: None unless fp16)
    rng             {"torch": ByteTensor, "cuda": [ByteTensor] or None, "python": random.getstate()}
    iteration       iterations done; epoch: iteration / batches per epoch (float)
    data            {"sha256", "source", "batch_in_epoch", "num_batches"}: the data position
    hidden          the carried LSTM state (h, c) after the last batch, or None
    first_loss      the first training loss (the 3x divergence guard)
    best_val_loss   best validation loss so far (None when there is no validation split)
    val_loss        validation loss at this checkpoint (or None)
    train_args      every argument of the training run (for --resume)

Writes go to a temporary file in the same directory, are fsync-ed and then ``os.replace``-d over
the target, so a crash mid-write leaves the previous file intact.  Checkpoint directories hold
``latest.pt`` and ``best.pt``; every function taking a checkpoint accepts a file or a directory
(then its ``latest.pt``).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Union

import torch

__all__ = ["CheckpointError", "FORMAT", "VERSION", "LATEST", "BEST", "resolve",
           "save_atomic", "load", "build_model"]

FORMAT = "charlstm-charrnn"
VERSION = 1
LATEST = "latest.pt"
BEST = "best.pt"
_REQUIRED = ("config", "vocab", "model")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable (corrupt/truncated) or incompatible; names the file."""


def resolve(path: Union[str, os.PathLike]) -> Path:
    """A checkpoint file, or a checkpoint directory's ``latest.pt``."""
    p = Path(path)
    if p.is_dir():
        f = p / LATEST
        if not f.is_file():
            raise CheckpointError(f"{p}: checkpoint directory has no {LATEST}")
        return f
    if not p.is_file():
        raise CheckpointError(f"{p}: no such checkpoint file or directory")
    return p


def save_atomic(obj: dict, path: Union[str, os.PathLike]) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (tmp file in the same dir, fsync, os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())      # mkstemp makes 0600; use the usual mode
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def load(path: Union[str, os.PathLike]) -> tuple[dict, Path]:
    """Load and validate a checkpoint onto the CPU; returns ``(dict, resolved_path)``.

    Raises :class:`CheckpointError` naming the file and the problem.
    """
    f = resolve(path)
    try:
        ckpt = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, garbage, unpickling refusal...
        size = f.stat().st_size
        raise CheckpointError(f"{f}: cannot read checkpoint ({size} bytes): the file is corrupt "
                              f"or truncated ({type(e).__name__}: {str(e).splitlines()[0]})"
                              ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        what = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{f}: not a charlstm char-rnn checkpoint (format {what!r}, "
                              f"expected {FORMAT!r})")
    if ckpt.get("version") != VERSION:
        raise CheckpointError(f"{f}: checkpoint format version {ckpt.get('version')!r}, this "
                              f"charlstm reads version {VERSION}")
    missing = [k for k in _REQUIRED if k not in ckpt]
    if missing:
        raise CheckpointError(f"{f}: checkpoint lacks {', '.join(missing)}")
    return ckpt, f


def build_model(ckpt: dict, path: Union[str, os.PathLike] = "checkpoint", backend=None):
    """``(CharRNN with the checkpoint's weights on CPU, Vocab)``; ``backend`` overrides the saved
    one."""
    from .data import Vocab
    from .model import CharRNN

    cfg = dict(ckpt["config"])
    if backend is not None:
        cfg["backend"] = backend
    try:
        vocab = Vocab(ckpt["vocab"])
        if cfg.get("vocab_size") != len(vocab):
            raise ValueError(f"config says vocab_size={cfg.get('vocab_size')} but the stored "
                             f"vocabulary has {len(vocab)} characters")
        model = CharRNN(**cfg)
        model.load_state_dict(ckpt["model"])
    except (TypeError, ValueError, RuntimeError, KeyError) as e:
        raise CheckpointError(f"{path}: incompatible checkpoint: {e}") from None
    return model, vocab
