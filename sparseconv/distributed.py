"""Multi-process training on ``torch.distributed``: launch, process group, helpers.

sparseconv adds nothing home-made to distributed training: processes are started with
``torch.multiprocessing`` (or ``torchrun``), models are wrapped in
``torch.nn.parallel.DistributedDataParallel``, batches are split with
``torch.utils.data.DistributedSampler``, and :class:`sparseconv.nn.SyncBatchNorm` shares
BatchNorm statistics with one ``all_reduce``. The backend is gloo on CPU and nccl on GPU.

Sparse tensors cross process boundaries without their kernel-map caches (they are dropped on
pickling and rebuilt where needed), so checkpoints and inter-process messages stay small.
"""
from __future__ import annotations

import os
import socket
from typing import Callable, Optional

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ._validation import positive_int


def default_backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def free_port() -> int:
    """A free TCP port on the loopback interface, for the rendezvous of local processes."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def init_process_group(rank: int, world_size: int, port: int, backend: Optional[str] = None) -> None:
    """Join a process group of ``world_size`` local processes rendezvousing on ``127.0.0.1:port``."""
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group(backend or default_backend(), rank=rank, world_size=world_size)


def _entry(rank: int, fn: Callable, world_size: int, port: int, backend: Optional[str], args) -> None:
    init_process_group(rank, world_size, port, backend)
    try:
        fn(rank, world_size, *args)
    finally:
        dist.destroy_process_group()


def launch(fn: Callable, nproc: int, *args, backend: Optional[str] = None) -> None:
    """Run ``fn(rank, world_size, *args)`` in ``nproc`` processes joined in a process group.

    ``fn`` must be importable (a module-level function). With ``nproc == 1`` it runs in this
    process without a process group. Raises if any process fails.
    """
    nproc = positive_int(nproc, "nproc")
    if nproc == 1:
        fn(0, 1, *args)
        return
    mp.spawn(_entry, args=(fn, nproc, free_port(), backend, args), nprocs=nproc, join=True)


def is_main_process() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    """Sum of ``value`` over all processes (itself outside a process group); not differentiable."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        value = value.clone()
        dist.all_reduce(value)
    return value
