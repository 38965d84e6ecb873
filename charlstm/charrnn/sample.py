"""Sampling text from a checkpoint (``charlstm sample``)."""
from __future__ import annotations

import contextlib
import os
import sys
import warnings
from pathlib import Path
from typing import Callable, Optional, TextIO, Union

import torch
from torch import Tensor

from . import checkpoint as ckpt_io
from .cpu_step import CpuStep, cpu_step_reason
from .data import describe_chars
from .draw import check_options, filter_logits_, pick_next
from .runtime import resolve_device

__all__ = ["sample", "generate", "pick_next", "filter_logits_", "GraphedStep", "uses_cpu_step"]

#: characters per write when streaming one sample (and per stop check): ~3 ms at 20k chars/s
STREAM_CHUNK = 64


class GraphedStep:
    """One sampling step -- ``model(ids [N, 1], state)``, :func:`pick_next`, state carried --
    captured once in a CUDA graph and replayed for every character (GPU only).

    At batch 1 a step is a handful of small kernels whose launch overhead dominates; a replay
    launches them all at once.  Static buffers hold the input ids and the state; a replay reads
    them and writes the next ids and state back into them.  The generator is registered with
    the graph, so draws advance it as eager sampling does.  Capture needs every op of the step
    to be capturable (the backends' kernels are launched on the current stream without host
    synchronisation); :meth:`capture` raises if it is not, and :func:`generate` then falls back
    to eager steps with a warning.  Status: written without a GPU; its test
    (``tests/test_charrnn_sample_graph.py``, marked ``cuda``) compares it with eager sampling.
    """

    def __init__(self, model, state, nxt: Tensor, *, temperature: float, top_k: Optional[int],
                 argmax: bool, generator: Optional[torch.Generator],
                 top_p: Optional[float] = None):
        self.model = model
        self.kw = dict(temperature=temperature, top_k=top_k, argmax=argmax, generator=generator,
                       top_p=top_p)
        N = nxt.shape[0]
        if state is None:
            state = model.init_state(N)
        self.ids = nxt.view(N, 1).clone()
        self.state = tuple(t.clone() for t in state)
        self.graph = None

    def _step(self) -> None:
        logits, new = self.model(self.ids, self.state)
        nxt = pick_next(logits[:, -1], **self.kw)
        for t, v in zip(self.state, new):
            t.copy_(v)
        self.ids.copy_(nxt.view(-1, 1))

    def capture(self) -> GraphedStep:
        """Warm up on a side stream (as CUDA graph capture requires), then capture one step.
        The warm-up steps are undone (ids and state restored) so that the generated text
        starts where eager sampling would -- except for the generator, which the warm-up has
        advanced."""
        saved = (self.ids.clone(), tuple(t.clone() for t in self.state))
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                self._step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        gen = self.kw["generator"]
        if gen is not None:
            register = getattr(graph, "register_generator_state", None)
            if register is None:
                raise RuntimeError(f"torch {torch.__version__} cannot register a generator with "
                                   f"a CUDA graph")
            register(gen)
        with torch.cuda.graph(graph):
            self._step()
        self.ids.copy_(saved[0])
        for t, v in zip(self.state, saved[1]):
            t.copy_(v)
        self.graph = graph
        return self

    def __call__(self) -> Tensor:
        """One step: returns the next ids ``[N]`` (a view of the static buffer: copy it before
        the next call if it must be kept)."""
        self.graph.replay()
        return self.ids.view(-1)


def uses_cpu_step(model) -> bool:
    """Whether :func:`generate` runs ``model`` with the CPU step by default: on a CPU, float32,
    and the backend in force (``CHARLSTM_BACKEND``, :func:`charlstm.use_backend`, the model's
    own) is ``auto``.  A named backend (``--backend torch|reference``) runs the model itself."""
    from charlstm import backends
    return (cpu_step_reason(model) is None
            and backends.requested(model.backend).lower() == "auto")


@contextlib.contextmanager
def _one_torch_thread():
    """torch's intra-op threads at 1 inside the block (restored after): the CPU step's few
    torch calls (noise, top-k/top-p) are too small to gain from a thread pool."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _run_steps(out: Tensor, buf, first, step: Callable, on_chunk, chunk: int) -> int:
    """The sampling loop shared by every step kind: ``buf[:, t] = ids`` and ``ids = step(ids)``
    for each column of ``out`` (``buf`` is ``out`` or a numpy view of it); every ``chunk``
    columns (and at the end) ``on_chunk(out[:, done:t+1])``, which stops the loop by returning
    a true value.  Returns the number of columns generated."""
    length, nxt, flushed = out.shape[1], first, 0
    for t in range(length):
        buf[:, t] = nxt
        if on_chunk is not None and (t + 1 - flushed >= chunk or t + 1 == length):
            stop = on_chunk(out[:, flushed:t + 1])
            flushed = t + 1
            if stop:
                return t + 1
        if t + 1 < length:
            nxt = step(nxt)
    return length


@torch.inference_mode()
def generate(model, prime_ids: Optional[Tensor], length: int, *, num_samples: int = 1,
             temperature: float = 1.0, top_k: Optional[int] = None,
             top_p: Optional[float] = None, argmax: bool = False,
             generator: Optional[torch.Generator] = None,
             on_chunk: Optional[Callable[[Tensor], Optional[bool]]] = None, chunk: int = 1,
             cuda_graph: bool = False, cpu_step: Optional[bool] = None) -> Tensor:
    """``[num_samples, n]`` generated ids (on the model's device), ``n == length`` unless
    ``on_chunk`` stopped early.

    The prime (``[P]`` ids) is run once through the model as one sequence at batch 1 and its
    state copied to every sample; then each step feeds the chosen ids and carries the state.
    Without a prime the first character is drawn uniformly from the vocabulary (char-rnn's
    behaviour) and counts as generated.  Every ``chunk`` steps the new columns are handed to
    ``on_chunk`` (one host copy per chunk); when it returns a true value, generation stops.

    Steps: ``cpu_step`` (None: :func:`uses_cpu_step`) runs :class:`.cpu_step.CpuStep` (numpy,
    one torch thread); ``cuda_graph`` (CUDA only, ignored elsewhere) replays the model's step
    from a CUDA graph (:class:`GraphedStep`; if capture fails, a warning says why and the steps
    run eagerly); otherwise the model runs each step.  Greedy ids agree across the three (to
    float32 rounding in near ties); random draws follow the same distribution, not the same
    sequence (the CPU step draws by Gumbel-max, the others with ``torch.multinomial``).
    """
    check_options(temperature, top_k, top_p)
    dev = next(model.parameters()).device
    model.eval()
    N, V = num_samples, model.vocab_size
    out = torch.empty(N, length, dtype=torch.int64, device=dev)
    if length == 0:
        return out
    state = logits = None
    if prime_ids is not None and len(prime_ids):
        logits, state = model(prime_ids.to(dev, torch.int64).view(1, -1))
        logits = logits[:, -1].expand(N, -1)
        state = tuple(s.expand(-1, N, -1).contiguous() for s in state)
    draw = dict(temperature=temperature, top_k=top_k, top_p=top_p, argmax=argmax,
                generator=generator)
    if cpu_step is None:
        cpu_step = uses_cpu_step(model)
    if cpu_step:
        with _one_torch_thread():
            step = CpuStep(model, N, length=length, **draw)
            if state is not None:
                step.load_state(*state)
            first = (step.pick(logits) if logits is not None else
                     torch.randint(V, (N,), generator=generator).numpy())
            n = _run_steps(out, out.numpy(), first, step, on_chunk, chunk)
        return out[:, :n]
    first = (pick_next(logits, **draw) if logits is not None else
             torch.randint(V, (N,), device=dev, generator=generator))

    def model_step(nxt: Tensor) -> Tensor:
        nonlocal state
        step_logits, state = model(nxt.view(N, 1), state)
        return pick_next(step_logits[:, -1], **draw)

    step = model_step
    if cuda_graph and dev.type == "cuda" and length > 1:
        try:
            graphed = GraphedStep(model, state, first, **draw).capture()
            step = lambda nxt: graphed()   # noqa: E731  (the graph holds ids and state)
        except Exception as e:  # noqa: BLE001  (any capture failure: run eagerly instead)
            warnings.warn(f"CUDA graph capture of the sampling step failed, sampling eagerly: "
                          f"{type(e).__name__}: {e}", RuntimeWarning, stacklevel=3)
    n = _run_steps(out, out, first, step, on_chunk, chunk)
    return out[:, :n]


class _Stops:
    """Where each sample ends: after ``stop_at`` first appears in its generated text, or after
    its ``lines``-th newline, whichever comes first (the text keeps the stop string / newline).
    Holds each sample's text (as pieces: appending stays linear in the length); :meth:`feed`
    appends a decoded chunk and returns the part of it that belongs to the sample (all of it
    until the stop, then nothing)."""

    def __init__(self, n: int, stop_at: Optional[str], lines: Optional[int]) -> None:
        self.stop_at, self.lines = stop_at, lines
        self.pieces: list[list[str]] = [[] for _ in range(n)]
        self.tails = [""] * n       # the last len(stop_at) - 1 characters, for a straddling stop
        self.newlines = [0] * n
        self.done = [False] * n

    @property
    def texts(self) -> list[str]:
        return ["".join(p) for p in self.pieces]

    def feed(self, k: int, new: str) -> str:
        if self.done[k]:
            return ""
        end = None
        if self.stop_at:
            tail = self.tails[k]
            at = (tail + new).find(self.stop_at)
            if at >= 0:
                end = at + len(self.stop_at) - len(tail)
            self.tails[k] = (tail + new)[len(tail + new) - len(self.stop_at) + 1:]
        if self.lines is not None:
            need, have = self.lines - self.newlines[k], new.count("\n")
            if need <= have:
                pos = -1
                for _ in range(need):
                    pos = new.index("\n", pos + 1)
                end = pos + 1 if end is None else min(end, pos + 1)
            self.newlines[k] += new.count("\n", 0, end)
        if end is not None:
            new, self.done[k] = new[:end], True
        self.pieces[k].append(new)
        return new


def read_prime(prime: str, prime_file: Union[str, os.PathLike, None]) -> str:
    """The prime text: ``prime``, or the UTF-8 contents of ``prime_file`` (not both)."""
    if prime_file is None:
        return prime
    if prime:
        raise ValueError("give the prime as --prime TEXT or --prime-file FILE, not both")
    try:
        return Path(prime_file).read_text(encoding="utf-8")
    except OSError as e:
        raise ValueError(f"--prime-file {prime_file}: cannot read it: "
                         f"{e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"--prime-file {prime_file}: not UTF-8 text ({e.reason} at byte "
                         f"{e.start})") from None


def sample(checkpoint: Union[str, os.PathLike], *, length: int = 2000, temperature: float = 1.0,
           top_k: Optional[int] = None, top_p: Optional[float] = None, prime: str = "",
           prime_file: Union[str, os.PathLike, None] = None, skip_unknown: bool = False,
           stop_at: Optional[str] = None, lines: Optional[int] = None, seed: int = 123,
           argmax: bool = False, num_samples: int = 1, device: str = "auto",
           backend: Optional[str] = "auto", stream: Optional[TextIO] = None,
           cuda_graph: bool = False, note: Optional[TextIO] = None) -> list[str]:
    """Generate ``num_samples`` independent texts of up to ``length`` characters after the prime.

    Returns the generated continuations (without the prime).  The prime is ``prime`` or the
    contents of ``prime_file``; its characters missing from the vocabulary raise a ValueError
    naming them, or with ``skip_unknown`` are dropped with a note on ``note`` (default
    ``sys.stderr``).  A sample ends early after ``stop_at`` first appears in it or after its
    ``lines``-th newline (the stop string / newline is kept).  ``temperature == 0`` is
    ``argmax``; ``top_k`` / ``top_p`` restrict the draws (:func:`filter_logits_`).  With
    ``stream`` (e.g. ``sys.stdout``) the prime and then the characters are written as they are
    made when ``num_samples == 1`` (every 64 characters); several samples are each written
    whole, after a header line ``--- sample k ---``.  ``backend`` defaults to ``auto`` whatever
    backend trained the checkpoint (None: the one saved in it); on a CPU ``auto`` samples with
    the CPU step (:func:`generate`).  ``cuda_graph``: replay each step from a CUDA graph on a GPU.
    """
    if length < 0 or num_samples < 1:
        raise ValueError(f"length must be >= 0 and num_samples >= 1, got {length}, {num_samples}")
    if stop_at is not None and not stop_at:
        raise ValueError("--stop-at needs a non-empty string")
    if lines is not None and lines < 1:
        raise ValueError(f"--lines must be >= 1, got {lines}")
    check_options(temperature, top_k, top_p)
    dev = resolve_device(device)
    prime = read_prime(prime, prime_file)
    ck, path = ckpt_io.load(checkpoint)
    model, vocab = ckpt_io.build_model(ck, path, backend=backend)
    bad = vocab.missing(prime)
    if bad and not skip_unknown:
        raise ValueError(f"the prime contains characters not in the vocabulary of {path} "
                         f"({len(vocab)} characters): {describe_chars(bad)}; --skip-unknown "
                         f"drops them")
    if bad:
        kept = "".join(ch for ch in prime if ch not in set(bad))
        print(f"note: skipped {len(prime) - len(kept)} characters of the prime that are not in "
              f"the vocabulary ({describe_chars(bad)})", file=note or sys.stderr)
        prime = kept
    model.to(dev)
    gen = torch.Generator(device=dev)
    gen.manual_seed(seed)
    prime_ids = vocab.encode(prime) if prime else None

    stops = _Stops(num_samples, stop_at, lines)
    streaming = stream is not None and num_samples == 1
    if streaming:
        stream.write(prime)
        stream.flush()

    def on_chunk(ids: Tensor) -> bool:
        ids = ids.cpu()
        for k in range(num_samples):
            new = stops.feed(k, vocab.decode(ids[k]))
            if streaming and new:
                stream.write(new)
                stream.flush()
        return all(stops.done)

    generate(model, prime_ids, length, num_samples=num_samples, temperature=temperature,
             top_k=top_k, top_p=top_p, argmax=argmax, generator=gen, on_chunk=on_chunk,
             chunk=STREAM_CHUNK, cuda_graph=cuda_graph)
    texts = stops.texts
    if stream is not None:
        if streaming:
            stream.write("\n")
        else:
            for k, text in enumerate(texts):
                stream.write(f"--- sample {k} ---\n{prime}{text}\n")
        stream.flush()
    return texts
