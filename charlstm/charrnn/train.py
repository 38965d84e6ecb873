"""Training a CharRNN (``charlstm train``): char-rnn's train.lua on top of charlstm's layers
(``--model lstm|gru|rnn``).

One iteration = one batch of ``batch_size`` streams x ``seq_length`` characters (see
:class:`charlstm.charrnn.data.StreamBatcher`), the recurrent state carried from the previous batch
and detached (truncated BPTT), reset at the start of every epoch.  Loss: mean cross-entropy in
nats.  Gradients are clamped elementwise to ``[-grad_clip, grad_clip]`` (char-rnn).  The learning
rate is multiplied by ``lr_decay`` at the end of every epoch from epoch ``lr_decay_after`` on.

Every ``eval_val_every`` iterations and at the end: the validation loss over the whole val split,
and a checkpoint (``latest.pt``; also ``best.pt`` when the val loss improved).  ``metrics.jsonl``
(one JSON object per line, ``"split": "train" | "val" | "test"``) and ``loss_curve.png`` sit
next to the checkpoints.  Training stops with :class:`TrainingDiverged` when the loss is NaN or
exceeds 3x the first loss, keeping the last good checkpoint.

Distributed: under ``torchrun`` (``WORLD_SIZE`` > 1) the model is wrapped in
DistributedDataParallel (NCCL on CUDA, gloo on CPU); ``batch_size`` is the *global* batch, its
streams split evenly across ranks; only rank 0 writes checkpoints and logs.
"""
from __future__ import annotations

import inspect
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import torch
import torch.nn.functional as F

from . import checkpoint as ckpt_io
from .data import DEFAULT_STDLIB_CAP, StreamBatcher, describe_chars, load_corpus, split
from .evaluate import stream_loss
from .model import MODELS, CharRNN
from .runtime import autocast, check_amp, parse_dtype, resolve_device
from .train_samples import SampleLog, describe, draw, latest_val

__all__ = ["train", "TrainingDiverged", "TrainResult", "batch_loss", "RUN_ARGS"]

METRICS = "metrics.jsonl"
PLOT = "loss_curve.png"
#: arguments that define a run: ``--resume`` takes them from the checkpoint
RUN_ARGS = ("data", "model", "rnn_size", "num_layers", "dropout", "seq_length", "batch_size",
            "learning_rate", "lr_decay", "lr_decay_after", "grad_clip", "seed", "dtype",
            "optimizer", "train_frac", "val_frac", "stdlib_cap")
#: arguments that ``--resume`` takes from the checkpoint unless they are passed again
SAMPLE_ARGS = ("sample_every", "sample_length")


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or exceeded 3x the first loss."""


@dataclass
class TrainResult:
    iterations: int = 0
    epoch: float = 0.0
    train_losses: list = field(default_factory=list)   # [(iteration, loss)] of this call
    val_losses: list = field(default_factory=list)     # [(iteration, loss)]
    best_val_loss: Optional[float] = None
    test_loss: Optional[float] = None
    checkpoint_dir: Optional[str] = None
    latest: Optional[str] = None
    best: Optional[str] = None


def batch_loss(model, x, y, state, device, amp_dtype=None):
    """``(mean cross-entropy, new detached state)`` of one batch (``x``, ``y``: [B, T] long)."""
    with autocast(device, amp_dtype):
        logits, state = model(x, state)
    loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
    return loss, tuple(s.detach() for s in state)


# ---------------------------------------------------------------------------- helpers
def _dist_info() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def _capture_rng(device: torch.device) -> dict:
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else None,
            "python": random.getstate()}


def _restore_rng(rng: dict, device: torch.device) -> None:
    torch.set_rng_state(rng["torch"])
    if device.type == "cuda" and rng.get("cuda"):
        torch.cuda.set_rng_state_all(rng["cuda"])
    if rng.get("python") is not None:
        py = rng["python"]
        random.setstate((py[0], tuple(py[1]), py[2]))


def _lr_factor(lr_decay: float, lr_decay_after: int):
    def factor(epochs_done: int) -> float:
        return lr_decay ** max(0, epochs_done - lr_decay_after + 1) if lr_decay < 1 else 1.0
    return factor


def _make_optimizer(name: str, params, lr: float):
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, alpha=0.95, eps=1e-8)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr)
    raise ValueError(f"bad --optimizer {name!r}: expected adamw or rmsprop")


def _merge_run_args(passed: dict, defaults: dict, saved: dict, what: str, keys) -> dict:
    """Take ``keys`` from ``saved``; a passed non-default value that differs is an error."""
    out = dict(passed)
    for k in keys:
        if k not in saved:
            continue
        if passed[k] != defaults[k] and passed[k] != saved[k]:
            raise ValueError(f"--{k.replace('_', '-')} {passed[k]!r} conflicts with the value "
                             f"{saved[k]!r} stored in {what}; --resume continues the saved run "
                             "unchanged (use --init-from to start a new run from its weights)")
        out[k] = saved[k]
    return out


def _plot(records: list, path: Path) -> Optional[str]:
    """Write the loss curve PNG (matplotlib Agg, no pyplot); returns a note when skipped."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return "matplotlib is not installed: no loss_curve.png (pip install matplotlib)"
    fig = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for split_name, style in (("train", "-"), ("val", "o-"), ("test", "s")):
        pts = [(r["iter"], r["loss"]) for r in records if r.get("split") == split_name]
        if pts:
            ax.plot(*zip(*pts), style, label=f"{split_name} loss", markersize=3,
                    linewidth=0.8 if split_name == "train" else 1.5)
    ax.set_xlabel("iteration")
    ax.set_ylabel("cross-entropy (nats/char)")
    ax.grid(alpha=0.3)
    ax.legend()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, path)
    return None


# ---------------------------------------------------------------------------- train
def train(data: Union[str, os.PathLike, None] = None, *, model: Optional[str] = None,
          rnn_size: int = 128, num_layers: int = 2,
          dropout: float = 0.0, seq_length: int = 50, batch_size: int = 50,
          learning_rate: float = 2e-3, lr_decay: float = 0.97, lr_decay_after: int = 10,
          grad_clip: float = 5.0, max_epochs: float = 50, max_iters: Optional[int] = None,
          eval_val_every: int = 1000, checkpoint_dir: Union[str, os.PathLike] = "checkpoints",
          init_from: Union[str, os.PathLike, None] = None,
          resume: Union[bool, str, os.PathLike, None] = None, seed: int = 123,
          device: str = "auto", dtype: str = "float32", backend: str = "auto",
          compile: bool = False, optimizer: str = "rmsprop", train_frac: float = 0.95,
          val_frac: float = 0.05, stdlib_cap: int = DEFAULT_STDLIB_CAP, progress: bool = True,
          print_every: int = 100, plot: bool = True, sample_every: Optional[int] = None,
          sample_length: int = 200) -> TrainResult:
    """Train a :class:`CharRNN` on ``data`` (file, directory, or None for the bundled corpus).

    Keyword arguments are the ``charlstm train`` options (``--rnn-size`` -> ``rnn_size`` ...).
    ``model``: ``"lstm"``, ``"gru"`` or ``"rnn"`` (tanh), char-rnn's ``-model``; None means
    ``"lstm"`` for a new run and the checkpoint's with ``resume`` / ``init_from`` (a value that
    differs from the checkpoint's is an error naming both).
    ``max_iters`` counts iterations of the whole run (a resumed run stops at the same total);
    training ends at ``min(max_iters, max_epochs * batches_per_epoch)``.  ``resume=True``
    continues from ``checkpoint_dir``'s ``latest.pt`` (a path: that checkpoint), restoring model,
    optimizer, scheduler, RNG states, data position and carried state, so that on CPU the losses
    are exactly those of an uninterrupted run; the run-defining arguments (:data:`RUN_ARGS`) come
    from the checkpoint.  ``init_from`` starts a new run (fresh optimizer, iteration 0) from a
    checkpoint's weights and vocabulary; the new data must use only characters of that
    vocabulary.  ``sample_every``: every that many iterations, a sample of ``sample_length``
    characters, printed and recorded in ``samples.md`` and ``metrics.jsonl`` (see
    :mod:`charlstm.charrnn.train_samples`).  Returns a :class:`TrainResult`; raises
    :class:`TrainingDiverged` on NaN or exploding loss.
    """
    passed = {k: v for k, v in locals().items()}
    if data is not None:
        passed["data"] = str(Path(data).resolve())
    defaults = {k: p.default for k, p in inspect.signature(train).parameters.items()}
    if init_from is not None and resume not in (None, False):
        raise ValueError("--init-from and --resume are exclusive: --resume continues a run, "
                         "--init-from starts a new one from a checkpoint's weights")
    rank, world, local_rank = _dist_info()
    own_pg = False
    if world > 1:
        import torch.distributed as dist
        if not dist.is_initialized():
            dist.init_process_group("nccl" if resolve_device(device).type == "cuda" else "gloo")
            own_pg = True
    try:
        result = _train(passed, defaults, rank, world, local_rank)
    except BaseException:
        if own_pg:   # no barrier: the other ranks may never get there
            import torch.distributed as dist
            dist.destroy_process_group()
        raise
    if own_pg:
        import gc

        import torch.distributed as dist
        # The DDP wrapper's reducer holds the process group; if a reference cycle keeps it alive
        # past destroy_process_group, gloo's worker threads are torn down at interpreter exit
        # and a rank aborts ("terminate called without an active exception", seen on a loaded
        # 2-core machine).  Free it now, while the group is alive.
        gc.collect()
        dist.barrier()   # every rank is done before any tears its connections down
        dist.destroy_process_group()
    return result


def _train(a: dict, defaults: dict, rank: int, world: int, local_rank: int) -> TrainResult:
    """One run, step by step (each step is a method of :class:`_Run`, in this order)."""
    run = _Run(a, defaults, rank, world, local_rank)
    run.read_starting_point()      # --resume / --init-from checkpoints; run arguments merged
    run.choose_device()            # device, autocast dtype, argument checks
    run.load_data()                # corpus, vocabulary, splits, batcher, iteration budget
    run.build_model()              # seeded model, optimizer, schedule, gradient scaler
    run.restore()                  # --resume: optimizer, schedule, RNG, position, carried state
    run.wrap_model()               # DDP, torch.compile
    run.open_log()                 # metrics.jsonl and samples.md (rewound on resume), banner
    try:
        run.loop()                 # iterations; validation, samples, checkpoints on schedule
        run.test()                 # the test split, once, at the end of a complete run
    finally:
        run.close()                # progress bar and metrics file
    return run.finish()


class _RunLog:
    """Rank 0's outputs: messages (under the progress bar when there is one), ``metrics.jsonl``
    and ``loss_curve.png``.  On other ranks every method is a no-op."""

    def __init__(self, ckdir: Path, is_main: bool, plot: bool, stream=None) -> None:
        self.ckdir, self.is_main, self.plot_enabled = ckdir, is_main, plot
        self.stream = stream if stream is not None else sys.stderr
        self.records: list = []
        self.file = None
        self.pbar = None
        self.plot_note: Optional[str] = None

    def say(self, msg: str) -> None:
        if not self.is_main:
            return
        if self.pbar is not None:
            self.pbar.write(msg, file=self.stream)
        else:
            print(msg, file=self.stream, flush=True)

    def open(self, resumed_at: Optional[int], start_record: dict) -> None:
        """Create ``metrics.jsonl``; on resume keep the records up to ``resumed_at`` (the
        checkpoint's iteration: later ones belong to iterations that will run again)."""
        if not self.is_main:
            return
        self.ckdir.mkdir(parents=True, exist_ok=True)
        path = self.ckdir / METRICS
        if resumed_at is not None and path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    r = json.loads(line)
                except ValueError:
                    continue
                if r.get("iter", 0) <= resumed_at and "event" not in r:
                    self.records.append(r)
        self.file = open(path, "w", encoding="utf-8")
        for r in self.records:
            self.file.write(json.dumps(r) + "\n")
        self.file.write(json.dumps(start_record, default=str) + "\n")

    def log(self, rec: dict) -> None:
        if self.is_main:
            self.records.append(rec)
            self.file.write(json.dumps(rec) + "\n")

    def flush(self) -> None:
        if self.file is not None:
            self.file.flush()

    def plot(self) -> None:
        """Redraw the loss curve (when enabled); a missing matplotlib is said once."""
        if not (self.is_main and self.plot_enabled):
            return
        note = _plot(self.records, self.ckdir / PLOT)
        if note and not self.plot_note:
            self.plot_note = note
            self.say(note)

    def start_progress(self, total: int, start: int) -> None:
        from tqdm.auto import tqdm
        self.pbar = tqdm(total=total, initial=start, desc="train", unit="it", file=self.stream,
                         dynamic_ncols=True, smoothing=0.1)

    def close(self) -> None:
        if self.pbar is not None:
            self.pbar.close()
        if self.file is not None:
            self.file.close()


class _Throughput:
    """Characters per second over windows of at least ``window`` seconds.  Until the first
    window is complete, the rate since the start: a real number from the first iteration on."""

    def __init__(self, chars_per_it: int, it: int, window: float = 0.5) -> None:
        self.chars_per_it, self.window = chars_per_it, window
        self.t_last, self.it_last = time.perf_counter(), it
        self.rate: Optional[float] = None      # of the last complete window

    def update(self, it: int, final: bool = False) -> float:
        """Called after iteration ``it``; returns the current rate in characters/s."""
        now = time.perf_counter()
        current = (it - self.it_last) * self.chars_per_it / max(now - self.t_last, 1e-9)
        if now - self.t_last >= self.window or final:
            self.rate = current
            self.t_last, self.it_last = now, it
        return self.rate if self.rate is not None else current


class _Run:
    """The state of one training run; :func:`_train` calls the steps in order."""

    def __init__(self, a: dict, defaults: dict, rank: int, world: int, local_rank: int) -> None:
        self.a, self.defaults = a, defaults
        self.rank, self.world, self.local_rank = rank, world, local_rank
        self.is_main = rank == 0

    # ------------------------------------------------------------ 1. starting point
    def read_starting_point(self) -> None:
        a, defaults = self.a, self.defaults
        self.resume_ck, self.resume_path, self.init_ck, self.init_path = None, None, None, None
        if a["resume"] not in (None, False):
            where = a["checkpoint_dir"] if a["resume"] is True else a["resume"]
            self.resume_ck, self.resume_path = ckpt_io.load(where)
            saved = self.resume_ck.get("train_args")
            if not saved or "iteration" not in self.resume_ck or "optimizer" not in self.resume_ck:
                raise ckpt_io.CheckpointError(f"{self.resume_path}: cannot resume: the checkpoint "
                                              "lacks training state (use --init-from to fine-tune)")
            # checkpoints from before --model hold LSTMs and do not record it in train_args
            saved = dict(saved, model=saved.get("model") or _cell_of(self.resume_ck))
            a = _merge_run_args(a, defaults, saved, str(self.resume_path), RUN_ARGS)
            for k in SAMPLE_ARGS:                # the saved ones unless given again
                if a[k] == defaults[k] and k in saved:
                    a[k] = saved[k]
            if a["checkpoint_dir"] == defaults["checkpoint_dir"] and a["resume"] is not True:
                a["checkpoint_dir"] = str(self.resume_path.parent)
        if a["init_from"] is not None:
            self.init_ck, self.init_path = ckpt_io.load(a["init_from"])
            cfg = self.init_ck["config"]
            cell = _cell_of(self.init_ck)
            if a["model"] is not None and a["model"] != cell:
                raise ValueError(f"--model {a['model']} conflicts with {self.init_path}, a "
                                 f"{cell} model: --init-from starts from its weights, which do "
                                 f"not fit a {a['model']} model (omit --model, or train a new "
                                 f"{a['model']} model without --init-from)")
            a["model"] = cell
            for k in ("rnn_size", "num_layers"):
                if a[k] != defaults[k] and a[k] != cfg[k]:
                    raise ValueError(f"--{k.replace('_', '-')} {a[k]} conflicts with "
                                     f"{self.init_path}'s {cfg[k]} (--init-from keeps the "
                                     "checkpoint's architecture)")
                a[k] = cfg[k]
        if a["model"] is None:
            a["model"] = "lstm"
        if a["model"] not in MODELS:
            raise ValueError(f"bad --model {a['model']!r}: expected one of {', '.join(MODELS)}")
        self.a = a

    # ------------------------------------------------------------ 2. device and checks
    def choose_device(self) -> None:
        a = self.a
        dev = resolve_device(a["device"])
        if dev.type == "cuda" and self.world > 1:
            dev = torch.device("cuda", self.local_rank)
        if dev.type == "cuda" and dev.index is not None:
            torch.cuda.set_device(dev)
        self.amp_dtype = parse_dtype(a["dtype"])
        check_amp(dev, self.amp_dtype)
        if a["optimizer"] not in ("adamw", "rmsprop"):
            raise ValueError(f"bad --optimizer {a['optimizer']!r}: expected adamw or rmsprop")
        for k in ("seq_length", "batch_size", "eval_val_every", "sample_length"):
            if int(a[k]) < 1:
                raise ValueError(f"--{k.replace('_', '-')} must be >= 1, got {a[k]}")
        if a["sample_every"] is not None and int(a["sample_every"]) < 0:
            raise ValueError(f"--sample-every must be >= 1 (0: no samples), got "
                             f"{a['sample_every']}")
        self.dev = dev
        self.ckdir = Path(a["checkpoint_dir"])
        self.out = _RunLog(self.ckdir, self.is_main, a["plot"])

    # ------------------------------------------------------------ 3. data
    def load_data(self) -> None:
        a, world = self.a, self.world
        if world > 1 and not self.is_main:
            _barrier()                           # rank 0 builds the encoding cache first
        corpus = load_corpus(a["data"], stdlib_cap=a["stdlib_cap"])
        if world > 1 and self.is_main:
            _barrier()
        vocab, ids = corpus.vocab, corpus.ids
        if self.init_ck is not None:
            from .data import Vocab
            vocab = Vocab(self.init_ck["vocab"])
            ids, missing = corpus.vocab.remap(corpus.ids, vocab)
            if missing:
                raise ValueError(f"--init-from {self.init_path}: the new data ({corpus.source}) "
                                 f"has characters not in the checkpoint's vocabulary of "
                                 f"{len(vocab)}: {describe_chars(sorted(missing))}")
            ids = ids.to(vocab.dtype)
        if self.resume_ck is not None:
            d = self.resume_ck.get("data", {})
            if d.get("sha256") != corpus.sha256:
                raise ValueError(f"cannot resume {self.resume_path}: the data ({corpus.source}) "
                                 f"is not the data it was trained on (content hash "
                                 f"{corpus.sha256[:12]} vs {str(d.get('sha256'))[:12]})")
            if self.resume_ck["vocab"] != vocab.chars:
                raise ckpt_io.CheckpointError(f"{self.resume_path}: vocabulary differs from the "
                                              "data's")
        self.corpus, self.vocab = corpus, vocab
        self.train_ids, self.val_ids, self.test_ids = split(ids, a["train_frac"], a["val_frac"])
        self.batcher = StreamBatcher(self.train_ids, a["batch_size"], a["seq_length"], self.rank,
                                     world)
        self.nb = len(self.batcher)
        total = int(math.floor(a["max_epochs"] * self.nb))
        if a["max_iters"] is not None:
            total = min(total, int(a["max_iters"]))
        self.total = total

    # ------------------------------------------------------------ 4. model and optimizer
    def build_model(self) -> None:
        a = self.a
        torch.manual_seed(a["seed"])
        random.seed(a["seed"])
        model = CharRNN(len(self.vocab), a["rnn_size"], a["num_layers"], a["dropout"],
                        a["backend"], cell=a["model"])
        src = self.resume_ck or self.init_ck
        if src is not None:
            try:
                model.load_state_dict(src["model"])
            except RuntimeError as e:
                raise ckpt_io.CheckpointError(f"{self.resume_path or self.init_path}: "
                                              f"incompatible weights: {e}") from e
        model.to(self.dev)
        self.raw_model = self.model = model
        self.opt = _make_optimizer(a["optimizer"], model.parameters(), a["learning_rate"])
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, _lr_factor(a["lr_decay"], a["lr_decay_after"]))
        self.scaler = torch.amp.GradScaler(self.dev.type,
                                           enabled=self.amp_dtype == torch.float16)

    # ------------------------------------------------------------ 5. resume
    def restore(self) -> None:
        """Iteration, losses, optimizer, schedule, scaler, carried state and RNG states from the
        resumed checkpoint (fresh values without one).  The RNG states come last: nothing may
        draw from them between here and the first iteration."""
        self.start, self.hidden, self.first_loss, best_val = 0, None, None, None
        ck = self.resume_ck
        if ck is not None:
            self.opt.load_state_dict(ck["optimizer"])
            self.sched.load_state_dict(ck["scheduler"])
            if ck.get("scaler"):
                self.scaler.load_state_dict(ck["scaler"])
            self.start = int(ck["iteration"])
            self.first_loss, best_val = ck.get("first_loss"), ck.get("best_val_loss")
            if ck.get("hidden") is not None and self.start % self.nb != 0:
                per = self.a["batch_size"] // self.world
                rows = slice(self.rank * per, (self.rank + 1) * per)
                self.hidden = tuple(s[:, rows].to(self.dev) for s in ck["hidden"])
            _restore_rng(ck["rng"], self.dev)
        self.res = TrainResult(iterations=self.start, epoch=self.start / self.nb,
                               best_val_loss=best_val, checkpoint_dir=str(self.ckdir))

    def wrap_model(self) -> None:
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP
            self.model = DDP(self.model,
                             device_ids=[self.dev.index] if self.dev.type == "cuda" else None)
        if self.a["compile"]:
            self.model = torch.compile(self.model)

    # ------------------------------------------------------------ 6. logging
    def open_log(self) -> None:
        a, resumed = self.a, self.resume_ck is not None
        params = sum(p.numel() for p in self.raw_model.parameters())
        self.out.open(self.start if resumed else None, {
            "event": "resume" if resumed else "start", "iter": self.start, "time": time.time(),
            "params": params, "vocab_size": len(self.vocab), "data": self.corpus.source,
            "train_chars": len(self.train_ids), "val_chars": len(self.val_ids),
            "test_chars": len(self.test_ids), "batches_per_epoch": self.nb,
            "world_size": self.world, "device": str(self.dev),
            "args": {k: v for k, v in a.items() if k != "progress"}})
        self.out.say(
            f"charlstm train: {self.corpus.source}; vocabulary {len(self.vocab)} characters; "
            f"train/val/test {len(self.train_ids)}/{len(self.val_ids)}/{len(self.test_ids)} "
            f"chars; {self.nb} batches per epoch; model {a['num_layers']}x{a['rnn_size']} "
            f"{a['model']} "
            f"({params:,} parameters) on {self.dev}, backend {a['backend']}"
            + (f", {self.world} processes" if self.world > 1 else "")
            + (f"; resuming at iteration {self.start} from {self.resume_path}" if resumed else ""))
        self.samples = None
        if self.is_main and (a["sample_every"] or any("sample" in r for r in self.out.records)):
            self.samples = SampleLog(self.ckdir, f"{self.corpus.source}; model "
                                     f"{a['num_layers']}x{a['rnn_size']} {a['model']}. Each "
                                     "entry: the model at that iteration, temperature 1, no "
                                     "prime, seeded with --seed + iteration.")
            self.samples.rewrite(self.out.records)

    # ------------------------------------------------------------ 7. the loop
    def loop(self) -> None:
        a, nb, total = self.a, self.nb, self.total
        if self.is_main and a["progress"]:
            self.out.start_progress(total, self.start)
        if self.start >= total:
            self.out.say(f"nothing to do: the run is already at iteration {self.start} of {total}")
        speed = _Throughput(a["batch_size"] * a["seq_length"], self.start)
        it = self.start
        while it < total:
            it += 1
            k = (it - 1) % nb
            if k == 0:
                self.hidden = None                   # streams restart at each epoch
            rng_before, hidden_before = _capture_rng(self.dev), self.hidden
            self.stepped = False
            try:
                lval = self.step(it, k)
            except KeyboardInterrupt:
                if self.world > 1:
                    raise
                if self.stepped:                     # the update was applied: keep it
                    self.save(it, None, self.hidden, _capture_rng(self.dev), False)
                else:
                    it -= 1
                    self.save(it, None, hidden_before, rng_before, False)
                self.out.say(f"interrupted: saved iteration {it} to {self.ckdir / ckpt_io.LATEST} "
                             "(continue with --resume)")
                raise
            self.res.iterations, self.res.epoch = it, it / nb
            self.res.train_losses.append((it, lval))
            self.out.log({"split": "train", "iter": it, "epoch": it / nb, "loss": lval,
                          "lr": self.opt.param_groups[0]["lr"]})
            self.report(it, lval, speed.update(it, final=it == total))
            evaluate = it % a["eval_val_every"] == 0 or it == total
            v = self.validate(it) if evaluate else None
            if a["sample_every"] and it % a["sample_every"] == 0:
                self.sample(it)              # before the checkpoint: a resume keeps it
            if evaluate:
                self.checkpoint_validated(it, v)
        self.it = it

    def step(self, it: int, k: int) -> float:
        """Iteration ``it`` (batch ``k`` of its epoch): forward, divergence guard, backward,
        clipping, update, and the schedule at an epoch's end.  Returns the train loss (the mean
        over ranks); advances ``self.hidden`` and sets ``self.stepped`` once the update is in."""
        a = self.a
        x, y = self.batcher.batch(k)
        x, y = x.to(self.dev, non_blocking=True), y.to(self.dev, non_blocking=True)
        self.model.train()
        loss, new_hidden = batch_loss(self.model, x, y, self.hidden, self.dev, self.amp_dtype)
        lval = loss.detach()
        if self.world > 1:
            import torch.distributed as dist
            lval = lval.clone()
            dist.all_reduce(lval)
            lval /= self.world
        lval = float(lval)
        if self.first_loss is None:
            self.first_loss = lval
        self.check_divergence(it, lval)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if a["grad_clip"] and a["grad_clip"] > 0:
            self.scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_value_(self.raw_model.parameters(), a["grad_clip"])
        self.scaler.step(self.opt)
        self.scaler.update()
        self.hidden, self.stepped = new_hidden, True
        if k == self.nb - 1:
            self.sched.step()                        # one epoch done: decay the learning rate
        return lval

    def check_divergence(self, it: int, lval: float) -> None:
        """char-rnn's rule: stop before the update when the loss is NaN/inf or > 3x the first."""
        if math.isfinite(lval) and lval <= 3 * self.first_loss:
            return
        why = ("is NaN" if math.isnan(lval) else
               "is infinite" if not math.isfinite(lval) else
               f"exceeds 3x the first loss {self.first_loss:.4f}")
        latest = self.ckdir / ckpt_io.LATEST
        kept = (f"the last good checkpoint is {latest}" if self.is_main and latest.exists()
                else "no checkpoint was written")
        self.out.log({"event": "diverged", "iter": it,
                      "loss": lval if math.isfinite(lval) else str(lval)})
        raise TrainingDiverged(f"training stopped at iteration {it} (epoch {it / self.nb:.2f}): "
                               f"train loss {lval:.4f} {why}; {kept}. Try a lower "
                               "--learning-rate or --grad-clip.")

    def report(self, it: int, lval: float, chars_s: float) -> None:
        """The progress bar's postfix, or a log line every ``print_every`` iterations."""
        epoch = it / self.nb
        if self.out.pbar is not None:
            self.out.pbar.set_postfix_str(f"train loss {lval:.4f}, {chars_s:,.0f} chars/s, "
                                          f"epoch {epoch:.2f}", refresh=False)
            self.out.pbar.update(1)
        elif it % max(1, self.a["print_every"]) == 0:
            self.out.say(f"iter {it}/{self.total} (epoch {epoch:.2f}): train loss {lval:.4f}, "
                         f"{chars_s:,.0f} chars/s")

    # ------------------------------------------------------------ 8. evaluation, checkpoints
    def validate(self, it: int) -> Optional[float]:
        """Loss over the whole validation split (None without one); logged."""
        if len(self.val_ids) < 2:
            return None
        tot, n = stream_loss(self.raw_model, self.val_ids, self.a["batch_size"],
                             self.a["seq_length"], self.dev, self.amp_dtype)
        v = tot / n
        self.out.log({"split": "val", "iter": it, "epoch": it / self.nb, "loss": v,
                      "bits_per_char": v / math.log(2), "chars": n, "time": time.time()})
        self.res.val_losses.append((it, v))
        return v

    def checkpoint_validated(self, it: int, v: Optional[float]) -> None:
        """The checkpoint after validation (``best.pt`` too when ``v`` improved)."""
        improved = v is not None and (self.res.best_val_loss is None or v < self.res.best_val_loss)
        if improved:
            self.res.best_val_loss = v
        self.save(it, v, self.hidden, _capture_rng(self.dev), improved)
        if v is not None:
            self.out.say(f"iter {it} (epoch {it / self.nb:.2f}): val loss {v:.4f} "
                         f"({v / math.log(2):.4f} bits/char), best val loss "
                         f"{self.res.best_val_loss:.4f}; checkpoint {self.ckdir / ckpt_io.LATEST}")

    def sample(self, it: int) -> None:
        """A sample of the current weights: printed, in ``samples.md`` and ``metrics.jsonl``."""
        if not self.is_main:
            return
        a = self.a
        seed = a["seed"] + it
        text = draw(self.raw_model, self.vocab, a["sample_length"], seed)
        val_iter, val_loss = latest_val(self.out.records)
        rec = {"sample": text, "iter": it, "epoch": it / self.nb, "val_loss": val_loss,
               "val_iter": val_iter, "length": a["sample_length"], "temperature": 1.0,
               "seed": seed}
        self.out.log(rec)
        self.samples.append(rec)
        self.out.say(f"--- sample: {describe(rec)} ---\n{text}\n---")

    def checkpoint(self, it: int, val_loss: Optional[float], hid, rng: dict) -> dict:
        """The checkpoint dict after iteration ``it`` (every rank joins the hidden gather)."""
        a, raw = self.a, self.raw_model
        args = {k: (str(v) if isinstance(v, os.PathLike) else v) for k, v in a.items()}
        return {
            "format": ckpt_io.FORMAT, "version": ckpt_io.VERSION,
            "config": raw.config(), "vocab": self.vocab.chars,
            "model": {k: v.detach().cpu() for k, v in raw.state_dict().items()},
            "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "rng": rng, "iteration": it, "epoch": it / self.nb,
            "data": {"sha256": self.corpus.sha256, "source": self.corpus.source,
                     "batch_in_epoch": it % self.nb, "num_batches": self.nb},
            "hidden": None if hid is None else _gather_hidden(hid, self.world),
            "first_loss": self.first_loss, "best_val_loss": self.res.best_val_loss,
            "val_loss": val_loss, "train_args": args,
        }

    def save(self, it: int, val_loss: Optional[float], hid, rng: dict, improved: bool) -> None:
        ck = self.checkpoint(it, val_loss, hid, rng)
        if not self.is_main:
            return
        self.res.latest = str(ckpt_io.save_atomic(ck, self.ckdir / ckpt_io.LATEST))
        if improved:
            self.res.best = str(ckpt_io.save_atomic(ck, self.ckdir / ckpt_io.BEST))
        self.out.flush()
        self.out.plot()

    def test(self) -> None:
        """The test split, scored once when the run reached its end in this call."""
        it = self.it
        if len(self.test_ids) < 2 or it != self.total or self.total <= self.start:
            return
        tot, n = stream_loss(self.raw_model, self.test_ids, self.a["batch_size"],
                             self.a["seq_length"], self.dev, self.amp_dtype)
        loss = self.res.test_loss = tot / n
        self.out.log({"split": "test", "iter": it, "epoch": it / self.nb, "loss": loss,
                      "bits_per_char": loss / math.log(2), "chars": n})
        self.out.say(f"test loss {loss:.4f} ({loss / math.log(2):.4f} bits/char)")
        self.out.plot()

    # ------------------------------------------------------------ 9. teardown
    def close(self) -> None:
        self.out.close()

    def finish(self) -> TrainResult:
        latest = self.ckdir / ckpt_io.LATEST
        if self.is_main and self.res.latest is None and latest.exists():
            self.res.latest = str(latest)
        return self.res


def _barrier() -> None:
    import torch.distributed as dist
    dist.barrier()


def _gather_hidden(hid, world: int):
    """The carried state (``(h, c)`` or ``(h,)``) of the whole global batch on CPU (all ranks'
    rows, rank order)."""
    if world > 1:
        import torch.distributed as dist

        def gather(s):
            parts = [torch.empty_like(s) for _ in range(world)]
            dist.all_gather(parts, s.contiguous())
            return torch.cat(parts, 1)
        hid = tuple(gather(s) for s in hid)
    return tuple(s.detach().float().cpu() for s in hid)


def _cell_of(ck: dict) -> str:
    """The ``--model`` of a checkpoint (checkpoints from before ``--model`` hold LSTMs)."""
    return ck["config"].get("cell", "lstm")
