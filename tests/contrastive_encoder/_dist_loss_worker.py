"""Run ClipLoss on 2 gloo processes over shards of fixed global features; write each rank's loss and
feature gradients. Usage: python _dist_loss_worker.py OUT_DIR (spawns its own processes)."""

from __future__ import annotations

import os
import socket
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "packages", "contrastive_encoder", "src"))
from contrastive_encoder.loss import ClipLoss  # noqa: E402

WORLD, BATCH, DIM = 2, 6, 8


def global_features():
    g = torch.Generator().manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(WORLD * BATCH, DIM, generator=g), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(WORLD * BATCH, DIM, generator=g), dim=-1)
    return img, txt, torch.tensor(3.0)


def worker(rank: int, out: str, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    img, txt, scale = global_features()
    results = {}
    for local in (False, True):
        i = img[rank * BATCH : (rank + 1) * BATCH].clone().requires_grad_(True)
        t = txt[rank * BATCH : (rank + 1) * BATCH].clone().requires_grad_(True)
        s = scale.clone().requires_grad_(True)
        loss = ClipLoss(local_loss=local)(i, t, s)
        loss.backward()
        results[local] = {"loss": loss.detach(), "gi": i.grad, "gt": t.grad, "gs": s.grad}
    torch.save(results, os.path.join(out, f"rank{rank}.pt"))
    dist.destroy_process_group()


if __name__ == "__main__":
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free_port = sock.getsockname()[1]
    mp.spawn(worker, args=(sys.argv[1], free_port), nprocs=WORLD)
