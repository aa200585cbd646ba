"""Data-parallel training on `torch.distributed`, launched with torchrun (single- and multi-node).

    torchrun --standalone --nproc_per_node=N -m robolearn train ...                      # one machine, N processes
    torchrun --nnodes=2 --node_rank=R --nproc_per_node=N \\
             --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 -m robolearn train ...       # several machines

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous address in each process's environment; without them
a run is one process (rank 0 of 1) and nothing here does anything. Backends: NCCL between CUDA devices (each
process takes cuda:LOCAL_RANK), Gloo on CPUs.

Conventions of the training apps: every rank builds the same model from the same seed and reads the same global
batch order; rank r trains on rows [r * B/N, (r + 1) * B/N) of each global batch of B (`shard`), and
DistributedDataParallel averages gradients, so N ranks at B/N per rank take the same steps as one process at B.
Only rank 0 writes checkpoints, logs and prints; evaluation rollouts are split across ranks and gathered
(`split`, `gather`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from robolearn.devices import pick_device
from robolearn.errors import UserError
from robolearn.lock import WriterLock


@dataclass(frozen=True)
class Distributed:
    """This process's place in a run: rank in [0, world_size), local_rank on its machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def processes(self) -> str:
        """", N processes" for a distributed run, "" otherwise (for a run's opening line)."""
        return f", {self.world_size} processes" if self.enabled else ""

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def gather(self, obj) -> list:
        """Every rank's `obj` (picklable), in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def average_gradients(self, parameters) -> None:
        """All-reduce the gradients of `parameters` to their mean over ranks (what DistributedDataParallel does,
        for update code that is not one module's forward)."""
        if not self.enabled:
            return
        grads = [p.grad for p in parameters if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def total(self, value: float) -> float:
        """The sum of a number over ranks (float64; whole counts stay exact)."""
        if not self.enabled:
            return float(value)
        t = torch.tensor([float(value)], dtype=torch.float64)
        dist.all_reduce(t)
        return float(t.item())

    def mean(self, value: float) -> float:
        """The mean of a number over ranks."""
        return self.total(value) / self.world_size

    def broadcast_parameters(self, parameters) -> None:
        """Copy rank 0's values of `parameters` (and tensors) to every rank."""
        if self.enabled:
            for p in parameters:
                dist.broadcast(p.data, src=0)

    def split(self, items: list) -> list:
        """This rank's share of `items` (every world_size-th, from its rank): the evaluation seeds it runs."""
        return list(items)[self.rank::self.world_size]

    def shard(self, ids: np.ndarray) -> np.ndarray:
        """This rank's rows of a global batch of window ids: contiguous B / world_size of them.

        Raises:
            UserError: the batch size is not divisible by the number of ranks.
        """
        if len(ids) % self.world_size:
            raise UserError(f"training.batch_size={len(ids)} must be divisible by the number of processes "
                            f"({self.world_size}): each rank trains on batch_size / {self.world_size} rows")
        per_rank = len(ids) // self.world_size
        return ids[self.rank * per_rank:(self.rank + 1) * per_rank]

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def init_distributed(device: torch.device) -> tuple[Distributed, torch.device]:
    """Join the process group torchrun describes in the environment (if any) and pick this rank's device.

    Args:
        device: the device the run asked for (`pick_device`); on CUDA each rank takes cuda:LOCAL_RANK.

    Returns:
        (Distributed, the device this rank trains on).

    Raises:
        UserError: an incomplete torchrun environment (RANK without WORLD_SIZE, ...), or more ranks on this
            machine than CUDA devices.
    """
    if "WORLD_SIZE" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return Distributed(), device
    try:
        rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    except (KeyError, ValueError) as exc:
        raise UserError(f"torchrun environment incomplete ({exc}): launch with torchrun, which sets RANK, "
                        "WORLD_SIZE and LOCAL_RANK") from None
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise UserError(f"LOCAL_RANK={local} but this machine has {torch.cuda.device_count()} CUDA devices; "
                            "use --nproc_per_node <= the number of GPUs")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world)
    return Distributed(rank, world, local), device


@contextmanager
def distributed_run(device: str, run_dir: str | os.PathLike) -> Iterator[tuple[Distributed, torch.device]]:
    """A training app's process: joins torchrun's group (`init_distributed`, with the device named by the app's
    `device` option), holds the run folder's writer lock on rank 0 (the only writer), and leaves the group at the
    end. Yields (Distributed, this rank's device).

    Raises:
        UserError, LockError: as `init_distributed` and `WriterLock`.
    """
    dist, torch_device = init_distributed(pick_device(device))
    try:
        with WriterLock(Path(run_dir), "run folder") if dist.is_main else nullcontext():
            yield dist, torch_device
    finally:
        dist.close()
