"""Sampling text from a checkpoint (``charlstm sample``)."""
from __future__ import annotations

import os
import warnings
from typing import Callable, Optional, TextIO, Union

import torch
from torch import Tensor

from . import checkpoint as ckpt_io
from .data import describe_chars
from .runtime import resolve_device

__all__ = ["sample", "generate", "pick_next", "GraphedStep"]


def pick_next(logits: Tensor, temperature: float = 1.0, top_k: Optional[int] = None,
              argmax: bool = False, generator: Optional[torch.Generator] = None) -> Tensor:
    """Next ids ``[N]`` from logits ``[N, V]``: argmax when ``argmax`` or ``temperature == 0``,
    else a draw from ``softmax(logits / temperature)`` restricted to the ``top_k`` largest."""
    if argmax or temperature == 0:
        return logits.argmax(-1)
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    logits = logits.float() / temperature
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


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
                 argmax: bool, generator: Optional[torch.Generator]):
        self.model = model
        self.kw = dict(temperature=temperature, top_k=top_k, argmax=argmax, generator=generator)
        N = nxt.shape[0]
        if state is None:
            state = model.init_state(N)
        self.ids = nxt.view(N, 1).clone()
        self.state = tuple(t.clone() for t in state)
        self.graph = None

    def _step(self) -> None:
        logits, (h, c) = self.model(self.ids, self.state)
        nxt = pick_next(logits[:, -1], **self.kw)
        self.state[0].copy_(h)
        self.state[1].copy_(c)
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


@torch.inference_mode()
def generate(model, prime_ids: Optional[Tensor], length: int, *, num_samples: int = 1,
             temperature: float = 1.0, top_k: Optional[int] = None, argmax: bool = False,
             generator: Optional[torch.Generator] = None,
             on_chunk: Optional[Callable[[Tensor], None]] = None, chunk: int = 1,
             cuda_graph: bool = False) -> Tensor:
    """``[num_samples, length]`` generated ids (on the model's device).

    The prime (``[P]`` ids) is run once as one sequence; then each step feeds the chosen ids and
    carries the state.  Without a prime the first character is drawn uniformly from the
    vocabulary (char-rnn's behaviour) and counts as generated.  Ids stay on the device; every
    ``chunk`` steps the new columns are handed to ``on_chunk`` (one host copy per chunk).
    ``cuda_graph`` (CUDA only, ignored elsewhere): replay the steps from a CUDA graph
    (:class:`GraphedStep`); if capture fails, a warning says why and the steps run eagerly.
    With argmax the ids are the eager ones; with random draws they follow the same
    distribution but not the same draws (the capture's warm-up advances the generator).
    """
    dev = next(model.parameters()).device
    model.eval()
    N, V = num_samples, model.vocab_size
    out = torch.empty(N, length, dtype=torch.int64, device=dev)
    if length == 0:
        return out
    state = None
    if prime_ids is not None and len(prime_ids):
        x = prime_ids.to(dev, torch.int64).view(1, -1).expand(N, -1)
        logits, state = model(x, state)
        nxt = pick_next(logits[:, -1], temperature, top_k, argmax, generator)
    else:
        nxt = torch.randint(V, (N,), device=dev, generator=generator)
    graphed = None
    if cuda_graph and dev.type == "cuda" and length > 1:
        try:
            graphed = GraphedStep(model, state, nxt, temperature=temperature, top_k=top_k,
                                  argmax=argmax, generator=generator).capture()
        except Exception as e:  # noqa: BLE001  (any capture failure: run eagerly instead)
            warnings.warn(f"CUDA graph capture of the sampling step failed, sampling eagerly: "
                          f"{type(e).__name__}: {e}", RuntimeWarning, stacklevel=3)
    flushed = 0
    for t in range(length):
        out[:, t] = nxt
        if on_chunk is not None and (t + 1 - flushed >= chunk or t + 1 == length):
            on_chunk(out[:, flushed:t + 1])
            flushed = t + 1
        if t + 1 < length:
            if graphed is not None:
                nxt = graphed()
            else:
                logits, state = model(nxt.view(N, 1), state)
                nxt = pick_next(logits[:, -1], temperature, top_k, argmax, generator)
    return out


def sample(checkpoint: Union[str, os.PathLike], *, length: int = 2000, temperature: float = 1.0,
           top_k: Optional[int] = None, prime: str = "", seed: int = 123, argmax: bool = False,
           num_samples: int = 1, device: str = "auto", backend: Optional[str] = "auto",
           stream: Optional[TextIO] = None, cuda_graph: bool = False) -> list[str]:
    """Generate ``num_samples`` independent texts of ``length`` characters after ``prime``.

    Returns the generated continuations (without the prime).  With ``stream`` (e.g.
    ``sys.stdout``) the prime and then the characters are written as they are made when
    ``num_samples == 1``; several samples are each written whole, after a header line
    ``--- sample k ---``.  Characters of ``prime`` missing from the vocabulary raise a
    ValueError naming them.  ``temperature == 0`` is ``argmax``.  ``backend`` defaults to
    ``auto`` whatever backend trained the checkpoint (None: the one saved in it).
    ``cuda_graph``: replay each step from a CUDA graph on a GPU (see :func:`generate`).
    """
    if length < 0 or num_samples < 1:
        raise ValueError(f"length must be >= 0 and num_samples >= 1, got {length}, {num_samples}")
    ck, path = ckpt_io.load(checkpoint)
    model, vocab = ckpt_io.build_model(ck, path, backend=backend)
    bad = vocab.missing(prime)
    if bad:
        raise ValueError(f"--prime contains characters not in the vocabulary of {path} "
                         f"({len(vocab)} characters): {describe_chars(bad)}")
    dev = resolve_device(device)
    model.to(dev)
    gen = torch.Generator(device=dev)
    gen.manual_seed(seed)
    prime_ids = vocab.encode(prime) if prime else None

    on_chunk = None
    if stream is not None and num_samples == 1:
        stream.write(prime)
        stream.flush()

        def on_chunk(ids: Tensor) -> None:
            stream.write(vocab.decode(ids[0]))
            stream.flush()

    ids = generate(model, prime_ids, length, num_samples=num_samples, temperature=temperature,
                   top_k=top_k, argmax=argmax, generator=gen, on_chunk=on_chunk,
                   chunk=1 if dev.type == "cpu" else 64, cuda_graph=cuda_graph)
    ids = ids.cpu()
    texts = [vocab.decode(row) for row in ids]
    if stream is not None:
        if num_samples == 1:
            stream.write("\n")
        else:
            for k, text in enumerate(texts):
                stream.write(f"--- sample {k} ---\n{prime}{text}\n")
        stream.flush()
    return texts
