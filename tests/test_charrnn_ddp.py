"""Data-parallel char-rnn training: 2 CPU processes on gloo match one process on the same
global batch (gradients through DDP, and the trainer's losses and weights)."""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from charlstm.charrnn import CharRNN, train
from charlstm.charrnn import checkpoint as ckpt_io
from charlstm.charrnn.data import CACHE_ENV, StreamBatcher, load_corpus
from charlstm.charrnn.train import batch_loss

TRAIN_KW = dict(rnn_size=16, num_layers=2, seq_length=16, batch_size=8, max_iters=4,
                eval_val_every=2, progress=False, plot=False)


def _grads(model, batcher, k):
    x, y = batcher.batch(k)
    loss, _ = batch_loss(model, x, y, None, torch.device("cpu"))
    loss.backward()
    return loss.detach()


def _worker(rank, world, port, data, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    from torch.nn.parallel import DistributedDataParallel as DDP
    corpus = load_corpus(data)
    torch.manual_seed(0)
    model = CharRNN(len(corpus.vocab), 16, 2)
    _grads(DDP(model), StreamBatcher(corpus.ids, 8, 16, rank, world), 3)
    if rank == 0:
        torch.save({n: p.grad for n, p in model.named_parameters()}, os.path.join(out, "g.pt"))
    res = train(data, checkpoint_dir=os.path.join(out, f"ck{rank}"), **TRAIN_KW)
    if rank == 0:
        torch.save(res.train_losses, os.path.join(out, "losses.pt"))
    # tear down together: a rank that exits while the other still holds the gloo connection
    # was seen to abort ("terminate called without an active exception") on a loaded machine
    dist.barrier()
    dist.destroy_process_group()


def test_two_gloo_processes_match_one(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    data = tmp_path / "t.txt"
    data.write_text("".join(f"line {i % 17} says {'abc'[i % 3] * (i % 5)}\n" for i in range(300)))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(2, port, str(data), str(tmp_path)), nprocs=2, join=True)

    corpus = load_corpus(data)
    torch.manual_seed(0)
    model = CharRNN(len(corpus.vocab), 16, 2)
    _grads(model, StreamBatcher(corpus.ids, 8, 16), 3)
    ddp_grads = torch.load(tmp_path / "g.pt")
    for n, p in model.named_parameters():
        torch.testing.assert_close(ddp_grads[n], p.grad, rtol=1e-5, atol=1e-7, msg=n)

    single = train(str(data), checkpoint_dir=str(tmp_path / "single"), **TRAIN_KW)
    ddp_losses = torch.load(tmp_path / "losses.pt")
    assert [i for i, _ in ddp_losses] == [i for i, _ in single.train_losses] == [1, 2, 3, 4]
    for (_, a), (_, b) in zip(ddp_losses, single.train_losses):
        assert a == pytest.approx(b, rel=1e-4)
    assert not (tmp_path / "ck1").exists()                  # only rank 0 writes
    a, _ = ckpt_io.load(tmp_path / "ck0")
    b, _ = ckpt_io.load(tmp_path / "single")
    assert a["hidden"][0].shape == b["hidden"][0].shape == (2, 8, 16)
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=1e-3, atol=1e-4, msg=k)


def test_torchrun_two_processes_end_to_end(tmp_path):
    """`torchrun --nproc_per_node=2 -m charlstm train`: the trainer creates the process group
    itself (gloo on CPU), trains, and tears it down on every rank; exit 0, one checkpoint."""
    import subprocess
    import sys
    data = tmp_path / "t.txt"
    data.write_text("".join(f"line {i % 17} says {'abc'[i % 3] * (i % 5)}\n" for i in range(300)))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, OMP_NUM_THREADS="1", **{CACHE_ENV: str(tmp_path / "cache")})
    p = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
         f"--master_port={port}", "-m", "charlstm", "train", "--data", str(data),
         "--rnn-size", "16", "--num-layers", "1", "--seq-length", "16", "--batch-size", "8",
         "--max-iters", "4", "--eval-val-every", "2", "--checkpoint-dir", str(tmp_path / "ck"),
         "--no-progress", "--no-plot"],
        capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    assert "2 processes" in p.stderr
    assert (tmp_path / "ck" / "latest.pt").is_file()
