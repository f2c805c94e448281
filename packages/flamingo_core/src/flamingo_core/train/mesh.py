"""The device mesh of a sharded stage-2 run: data x tensor (``torch.distributed.device_mesh``), and the
accelerator as one data-parallel replica sees it.

With ``--tensor-parallel T`` on ``W`` processes the mesh is ``(W / T, T)``: the ``T`` processes of a row split
the model's matrices (``train/tensor_parallel.py``) and run the same batch; the ``W / T`` rows are the data
parallel replicas, each reading its own share of the data, sharded with FSDP2 over the ``dp`` dimension when
``--fsdp`` is on (``train/fsdp.py``). Without tensor parallelism the mesh is the 1-D ``(W,)`` FSDP mesh.
"""

from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist

__all__ = ["DataParallelView", "build_mesh"]


def build_mesh(device: torch.device, tensor_parallel: int):
    """The 2-D ``("dp", "tp")`` mesh over every process (a process group of one is made for a lone process)."""
    from torch.distributed.device_mesh import init_device_mesh

    from flamingo_core.train.fsdp import ensure_process_group

    ensure_process_group(device)
    world = dist.get_world_size()
    return init_device_mesh(device.type, (world // tensor_parallel, tensor_parallel), mesh_dim_names=("dp", "tp"))


class DataParallelView:
    """An ``accelerate.Accelerator`` seen from one data-parallel replica of a 2-D mesh: ``num_processes`` and
    ``process_index`` count replicas (the data loaders split the data by them, ``train_step`` normalises the loss
    by them), ``reduce`` sums over the replicas only (the processes of a tensor-parallel group hold the same
    values), and gradients are clipped by their norm over every mesh (``tensor_parallel.clip_grad_norm``).
    Everything else (device, precision, printing, barriers) is the accelerator's.
    """

    def __init__(self, accelerator, mesh):
        self._accelerator = accelerator
        self._group = mesh["dp"].get_group()
        self.num_processes = mesh["dp"].size()
        self.process_index = mesh["dp"].get_local_rank()

    def __getattr__(self, name: str):
        return getattr(self._accelerator, name)

    def reduce(self, tensor: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduce: reduction {reduction!r}: expected 'sum' or 'mean'")
        out = tensor.clone()
        if self.num_processes > 1:
            dist.all_reduce(out, group=self._group)
        return out / self.num_processes if reduction == "mean" else out

    def no_sync(self, model):  # no DDP wrapper to silence: FSDP reduces each backward, TP needs no reduction
        return contextlib.nullcontext()

    def clip_grad_norm_(self, parameters, max_norm: float) -> torch.Tensor:
        from flamingo_core.train.tensor_parallel import clip_grad_norm

        return clip_grad_norm(list(parameters), max_norm)
