"""Training a CharRNN (``charlstm train``): char-rnn's train.lua on top of ``charlstm.LSTM``.

One iteration = one batch of ``batch_size`` streams x ``seq_length`` characters (see
:class:`charlstm.charrnn.data.StreamBatcher`), the LSTM state carried from the previous batch
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
from .model import CharRNN
from .runtime import autocast, check_amp, parse_dtype, resolve_device

__all__ = ["train", "TrainingDiverged", "TrainResult", "batch_loss", "RUN_ARGS"]

METRICS = "metrics.jsonl"
PLOT = "loss_curve.png"
#: arguments that define a run: ``--resume`` takes them from the checkpoint
RUN_ARGS = ("data", "rnn_size", "num_layers", "dropout", "seq_length", "batch_size",
            "learning_rate", "lr_decay", "lr_decay_after", "grad_clip", "seed", "dtype",
            "optimizer", "train_frac", "val_frac", "stdlib_cap")


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
    return loss, (state[0].detach(), state[1].detach())


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
def train(data: Union[str, os.PathLike, None] = None, *, rnn_size: int = 128, num_layers: int = 2,
          dropout: float = 0.0, seq_length: int = 50, batch_size: int = 50,
          learning_rate: float = 2e-3, lr_decay: float = 0.97, lr_decay_after: int = 10,
          grad_clip: float = 5.0, max_epochs: float = 50, max_iters: Optional[int] = None,
          eval_val_every: int = 1000, checkpoint_dir: Union[str, os.PathLike] = "checkpoints",
          init_from: Union[str, os.PathLike, None] = None,
          resume: Union[bool, str, os.PathLike, None] = None, seed: int = 123,
          device: str = "auto", dtype: str = "float32", backend: str = "auto",
          compile: bool = False, optimizer: str = "rmsprop", train_frac: float = 0.95,
          val_frac: float = 0.05, stdlib_cap: int = DEFAULT_STDLIB_CAP, progress: bool = True,
          print_every: int = 100, plot: bool = True) -> TrainResult:
    """Train a :class:`CharRNN` on ``data`` (file, directory, or None for the bundled corpus).

    Keyword arguments are the ``charlstm train`` options (``--rnn-size`` -> ``rnn_size`` ...).
    ``max_iters`` counts iterations of the whole run (a resumed run stops at the same total);
    training ends at ``min(max_iters, max_epochs * batches_per_epoch)``.  ``resume=True``
    continues from ``checkpoint_dir``'s ``latest.pt`` (a path: that checkpoint), restoring model,
    optimizer, scheduler, RNG states, data position and carried state, so that on CPU the losses
    are exactly those of an uninterrupted run; the run-defining arguments (:data:`RUN_ARGS`) come
    from the checkpoint.  ``init_from`` starts a new run (fresh optimizer, iteration 0) from a
    checkpoint's weights and vocabulary; the new data must use only characters of that
    vocabulary.  Returns a :class:`TrainResult`; raises :class:`TrainingDiverged` on NaN or
    exploding loss.
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
        import torch.distributed as dist
        dist.barrier()   # every rank is done before any tears its connections down
        dist.destroy_process_group()
    return result


def _train(a: dict, defaults: dict, rank: int, world: int, local_rank: int) -> TrainResult:
    is_main = rank == 0
    say_stream = sys.stderr

    # ---------------------------------------------------------------- resume / init-from
    resume_ck, resume_path, init_ck, init_path = None, None, None, None
    if a["resume"] not in (None, False):
        where = a["checkpoint_dir"] if a["resume"] is True else a["resume"]
        resume_ck, resume_path = ckpt_io.load(where)
        saved = resume_ck.get("train_args")
        if not saved or "iteration" not in resume_ck or "optimizer" not in resume_ck:
            raise ckpt_io.CheckpointError(f"{resume_path}: cannot resume: the checkpoint lacks "
                                          "training state (use --init-from to fine-tune)")
        a = _merge_run_args(a, defaults, saved, str(resume_path), RUN_ARGS)
        if a["checkpoint_dir"] == defaults["checkpoint_dir"] and a["resume"] is not True:
            a["checkpoint_dir"] = str(resume_path.parent)
    if a["init_from"] is not None:
        init_ck, init_path = ckpt_io.load(a["init_from"])
        cfg = init_ck["config"]
        for k in ("rnn_size", "num_layers"):
            if a[k] != defaults[k] and a[k] != cfg[k]:
                raise ValueError(f"--{k.replace('_', '-')} {a[k]} conflicts with {init_path}'s "
                                 f"{cfg[k]} (--init-from keeps the checkpoint's architecture)")
            a[k] = cfg[k]

    dev = resolve_device(a["device"])
    if dev.type == "cuda" and world > 1:
        dev = torch.device("cuda", local_rank)
    if dev.type == "cuda" and dev.index is not None:
        torch.cuda.set_device(dev)
    amp_dtype = parse_dtype(a["dtype"])
    check_amp(dev, amp_dtype)
    if a["optimizer"] not in ("adamw", "rmsprop"):
        raise ValueError(f"bad --optimizer {a['optimizer']!r}: expected adamw or rmsprop")
    for k in ("seq_length", "batch_size", "eval_val_every"):
        if int(a[k]) < 1:
            raise ValueError(f"--{k.replace('_', '-')} must be >= 1, got {a[k]}")
    ckdir = Path(a["checkpoint_dir"])

    def say(msg: str) -> None:
        if is_main:
            if pbar is not None:
                pbar.write(msg, file=say_stream)
            else:
                print(msg, file=say_stream, flush=True)
    pbar = None

    # ---------------------------------------------------------------- data
    if world > 1:
        import torch.distributed as dist
    if world > 1 and not is_main:
        dist.barrier()                       # rank 0 builds the encoding cache first
    corpus = load_corpus(a["data"], stdlib_cap=a["stdlib_cap"])
    if world > 1 and is_main:
        dist.barrier()
    vocab, ids = corpus.vocab, corpus.ids
    if init_ck is not None:
        from .data import Vocab
        vocab = Vocab(init_ck["vocab"])
        ids, missing = corpus.vocab.remap(corpus.ids, vocab)
        if missing:
            raise ValueError(f"--init-from {init_path}: the new data ({corpus.source}) has "
                             f"characters not in the checkpoint's vocabulary of {len(vocab)}: "
                             f"{describe_chars(sorted(missing))}")
        ids = ids.to(vocab.dtype)
    if resume_ck is not None:
        d = resume_ck.get("data", {})
        if d.get("sha256") != corpus.sha256:
            raise ValueError(f"cannot resume {resume_path}: the data ({corpus.source}) is not the "
                             f"data it was trained on (content hash {corpus.sha256[:12]} vs "
                             f"{str(d.get('sha256'))[:12]})")
        if resume_ck["vocab"] != vocab.chars:
            raise ckpt_io.CheckpointError(f"{resume_path}: vocabulary differs from the data's")
    train_ids, val_ids, test_ids = split(ids, a["train_frac"], a["val_frac"])
    batcher = StreamBatcher(train_ids, a["batch_size"], a["seq_length"], rank, world)
    nb = len(batcher)
    total = int(math.floor(a["max_epochs"] * nb))
    if a["max_iters"] is not None:
        total = min(total, int(a["max_iters"]))

    # ---------------------------------------------------------------- model & optimizer
    torch.manual_seed(a["seed"])
    random.seed(a["seed"])
    model = CharRNN(len(vocab), a["rnn_size"], a["num_layers"], a["dropout"], a["backend"])
    src = resume_ck or init_ck
    if src is not None:
        try:
            model.load_state_dict(src["model"])
        except RuntimeError as e:
            raise ckpt_io.CheckpointError(
                f"{resume_path or init_path}: incompatible weights: {e}") from e
    model.to(dev)
    opt = _make_optimizer(a["optimizer"], model.parameters(), a["learning_rate"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_factor(a["lr_decay"], a["lr_decay_after"]))
    scaler = torch.amp.GradScaler(dev.type, enabled=amp_dtype == torch.float16)
    start, hidden, first_loss, best_val = 0, None, None, None
    if resume_ck is not None:
        opt.load_state_dict(resume_ck["optimizer"])
        sched.load_state_dict(resume_ck["scheduler"])
        if resume_ck.get("scaler"):
            scaler.load_state_dict(resume_ck["scaler"])
        start = int(resume_ck["iteration"])
        first_loss, best_val = resume_ck.get("first_loss"), resume_ck.get("best_val_loss")
        if resume_ck.get("hidden") is not None and start % nb != 0:
            h, c = resume_ck["hidden"]
            per = a["batch_size"] // world
            hidden = (h[:, rank * per:(rank + 1) * per].to(dev),
                      c[:, rank * per:(rank + 1) * per].to(dev))
        _restore_rng(resume_ck["rng"], dev)
    raw_model = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP
        model = DDP(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    if a["compile"]:
        model = torch.compile(model)

    # ---------------------------------------------------------------- logging
    res = TrainResult(iterations=start, epoch=start / nb, best_val_loss=best_val,
                      checkpoint_dir=str(ckdir))
    records: list = []
    log_f = None
    plot_note = None
    if is_main:
        ckdir.mkdir(parents=True, exist_ok=True)
        mpath = ckdir / METRICS
        if resume_ck is not None and mpath.exists():
            for line in mpath.read_text(encoding="utf-8").splitlines():
                try:
                    r = json.loads(line)
                except ValueError:
                    continue
                if r.get("iter", 0) <= start and "event" not in r:
                    records.append(r)
        log_f = open(mpath, "w", encoding="utf-8")
        for r in records:
            log_f.write(json.dumps(r) + "\n")
        params = sum(p.numel() for p in raw_model.parameters())
        start_ev = {"event": "resume" if resume_ck is not None else "start", "iter": start,
                    "time": time.time(), "params": params, "vocab_size": len(vocab),
                    "data": corpus.source, "train_chars": len(train_ids),
                    "val_chars": len(val_ids), "test_chars": len(test_ids),
                    "batches_per_epoch": nb, "world_size": world, "device": str(dev),
                    "args": {k: v for k, v in a.items() if k != "progress"}}
        log_f.write(json.dumps(start_ev, default=str) + "\n")
        say(f"charlstm train: {corpus.source}; vocabulary {len(vocab)} characters; "
            f"train/val/test {len(train_ids)}/{len(val_ids)}/{len(test_ids)} chars; "
            f"{nb} batches per epoch; model {a['num_layers']}x{a['rnn_size']} "
            f"({params:,} parameters) on {dev}, backend {a['backend']}"
            + (f", {world} processes" if world > 1 else "")
            + (f"; resuming at iteration {start} from {resume_path}" if resume_ck else ""))

    def log(rec: dict) -> None:
        if is_main:
            records.append(rec)
            log_f.write(json.dumps(rec) + "\n")

    def make_ckpt(it: int, val_loss, hid, rng) -> dict:
        args = {k: (str(v) if isinstance(v, os.PathLike) else v) for k, v in a.items()}
        return {
            "format": ckpt_io.FORMAT, "version": ckpt_io.VERSION,
            "config": raw_model.config(), "vocab": vocab.chars,
            "model": {k: v.detach().cpu() for k, v in raw_model.state_dict().items()},
            "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else None,
            "rng": rng, "iteration": it, "epoch": it / nb,
            "data": {"sha256": corpus.sha256, "source": corpus.source,
                     "batch_in_epoch": it % nb, "num_batches": nb},
            "hidden": None if hid is None else _gather_hidden(hid, world),
            "first_loss": first_loss, "best_val_loss": res.best_val_loss,
            "val_loss": val_loss, "train_args": args,
        }

    def save(it: int, val_loss, hid, rng, improved: bool) -> None:
        ck = make_ckpt(it, val_loss, hid, rng)      # every rank joins the hidden gather
        if not is_main:
            return
        res.latest = str(ckpt_io.save_atomic(ck, ckdir / ckpt_io.LATEST))
        if improved:
            res.best = str(ckpt_io.save_atomic(ck, ckdir / ckpt_io.BEST))
        log_f.flush()
        if a["plot"]:
            nonlocal plot_note
            note = _plot(records, ckdir / PLOT)
            if note and not plot_note:
                plot_note = note
                say(note)

    def validate(it: int) -> Optional[float]:
        if len(val_ids) < 2:
            return None
        tot, n = stream_loss(raw_model, val_ids, a["batch_size"], a["seq_length"], dev, amp_dtype)
        v = tot / n
        log({"split": "val", "iter": it, "epoch": it / nb, "loss": v,
             "bits_per_char": v / math.log(2), "chars": n, "time": time.time()})
        res.val_losses.append((it, v))
        return v

    # ---------------------------------------------------------------- loop
    if is_main and a["progress"]:
        from tqdm.auto import tqdm
        pbar = tqdm(total=total, initial=start, desc="train", unit="it", file=say_stream,
                    dynamic_ncols=True, smoothing=0.1)
    if start >= total:
        say(f"nothing to do: the run is already at iteration {start} of {total}")
    chars_per_it = a["batch_size"] * a["seq_length"]
    t_last, it_last = time.perf_counter(), start
    chars_s = 0.0
    it = start
    try:
        while it < total:
            it += 1
            k = (it - 1) % nb
            if k == 0:
                hidden = None                   # streams restart at each epoch
            rng_before, hidden_before, stepped = _capture_rng(dev), hidden, False
            try:
                x, y = batcher.batch(k)
                x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
                model.train()
                loss, new_hidden = batch_loss(model, x, y, hidden, dev, amp_dtype)
                lval = loss.detach()
                if world > 1:
                    lval = lval.clone()
                    dist.all_reduce(lval)
                    lval /= world
                lval = float(lval)
                if first_loss is None:
                    first_loss = lval
                if not math.isfinite(lval) or lval > 3 * first_loss:
                    why = ("is NaN" if math.isnan(lval) else
                           "is infinite" if not math.isfinite(lval) else
                           f"exceeds 3x the first loss {first_loss:.4f}")
                    kept = (f"the last good checkpoint is {ckdir / ckpt_io.LATEST}"
                            if is_main and (ckdir / ckpt_io.LATEST).exists()
                            else "no checkpoint was written")
                    log({"event": "diverged", "iter": it, "loss": lval if math.isfinite(lval)
                         else str(lval)})
                    raise TrainingDiverged(f"training stopped at iteration {it} (epoch "
                                           f"{it / nb:.2f}): train loss {lval:.4f} {why}; "
                                           f"{kept}. Try a lower --learning-rate or "
                                           "--grad-clip.")
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if a["grad_clip"] and a["grad_clip"] > 0:
                    scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_value_(raw_model.parameters(), a["grad_clip"])
                scaler.step(opt)
                scaler.update()
                hidden, stepped = new_hidden, True
                if k == nb - 1:
                    sched.step()                # one epoch done: decay the learning rate
            except KeyboardInterrupt:
                if world > 1:
                    raise
                if stepped:
                    save(it, None, hidden, _capture_rng(dev), False)
                else:
                    it -= 1
                    save(it, None, hidden_before, rng_before, False)
                say(f"interrupted: saved iteration {it} to {ckdir / ckpt_io.LATEST} "
                    "(continue with --resume)")
                raise
            res.iterations, res.epoch = it, it / nb
            res.train_losses.append((it, lval))
            log({"split": "train", "iter": it, "epoch": it / nb, "loss": lval,
                 "lr": opt.param_groups[0]["lr"]})
            now = time.perf_counter()
            if now - t_last >= 0.5 or it == total:
                chars_s = (it - it_last) * chars_per_it / max(now - t_last, 1e-9)
                t_last, it_last = now, it
            if pbar is not None:
                rate = f"{chars_s:,.0f}" if chars_s else "-"
                pbar.set_postfix_str(f"train loss {lval:.4f}, {rate} chars/s, epoch "
                                     f"{it / nb:.2f}", refresh=False)
                pbar.update(1)
            elif it % max(1, a["print_every"]) == 0:
                say(f"iter {it}/{total} (epoch {it / nb:.2f}): train loss {lval:.4f}, "
                    f"{chars_s:,.0f} chars/s")
            if it % a["eval_val_every"] == 0 or it == total:
                v = validate(it)
                improved = v is not None and (res.best_val_loss is None or v < res.best_val_loss)
                if improved:
                    res.best_val_loss = v
                save(it, v, hidden, _capture_rng(dev), improved)
                if v is not None:
                    say(f"iter {it} (epoch {it / nb:.2f}): val loss {v:.4f} "
                        f"({v / math.log(2):.4f} bits/char), best val loss "
                        f"{res.best_val_loss:.4f}; checkpoint {ckdir / ckpt_io.LATEST}")
        if len(test_ids) >= 2 and it == total and total > start:
            tot, n = stream_loss(raw_model, test_ids, a["batch_size"], a["seq_length"], dev,
                                 amp_dtype)
            res.test_loss = tot / n
            log({"split": "test", "iter": it, "epoch": it / nb, "loss": res.test_loss,
                 "bits_per_char": res.test_loss / math.log(2), "chars": n})
            say(f"test loss {res.test_loss:.4f} ({res.test_loss / math.log(2):.4f} bits/char)")
            if is_main and a["plot"]:
                _plot(records, ckdir / PLOT)
    finally:
        if pbar is not None:
            pbar.close()
        if log_f is not None:
            log_f.close()
    if is_main and res.latest is None and (ckdir / ckpt_io.LATEST).exists():
        res.latest = str(ckdir / ckpt_io.LATEST)
    return res


def _gather_hidden(hid, world: int):
    """The carried state of the whole global batch on CPU (all ranks' rows, rank order)."""
    h, c = hid
    if world > 1:
        import torch.distributed as dist
        hs = [torch.empty_like(h) for _ in range(world)]
        cs = [torch.empty_like(c) for _ in range(world)]
        dist.all_gather(hs, h.contiguous())
        dist.all_gather(cs, c.contiguous())
        h, c = torch.cat(hs, 1), torch.cat(cs, 1)
    return (h.detach().float().cpu(), c.detach().float().cpu())
