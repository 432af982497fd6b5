"""The processes of a torchrun job: which one this is (``Ranks``), what they do together (collectives,
the DistributedDataParallel wrap), and the process group they share (``process_group``). One process
started without torchrun is rank 0 of 1, and every collective is a no-op, so the training loop has
one code path (docs/scaling.md)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from ..machine import resolve_device
from .config import ConfigError

T = TypeVar("T")

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
# How long the other ranks wait for rank 0's work alone (each epoch's validation, the teacher's
# features over the whole frame cache). A rank that fails stops the others at once (torchrun ends
# them all), so this bounds only a true hang.
RANK0_WAIT = timedelta(hours=2)


@dataclass(frozen=True)
class Ranks:
    """This process's place among torchrun's (``rank`` of ``world_size``, ``local_rank`` on its machine)
    and what they do together. One process (no torchrun environment): rank 0 of 1, ``distributed``
    false, and every method a no-op that involves no other process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    distributed: bool = False  # started by torchrun: a process group is (to be) initialised

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> "Ranks":
        """torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), else one process."""
        environ = os.environ if environ is None else environ
        if "WORLD_SIZE" not in environ:
            return cls()
        missing = [name for name in TORCHRUN_VARIABLES if not environ.get(name)]
        if missing:
            raise ConfigError("environment", f"WORLD_SIZE is set but {', '.join(missing)} not: start several "
                                             "processes with torchrun "
                                             "(`torchrun --nproc-per-node N -m shortvid train ...`)")
        ranks = cls(int(environ["RANK"]), int(environ["WORLD_SIZE"]), int(environ["LOCAL_RANK"]), True)
        if not 0 <= ranks.rank < ranks.world_size:
            raise ConfigError("environment", f"RANK {ranks.rank} is not below WORLD_SIZE {ranks.world_size}")
        return ranks

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes the run directory and validates."""
        return self.rank == 0

    def device(self, name: str = "auto") -> torch.device:
        """This rank's device: ``cuda:LOCAL_RANK`` for ``auto`` (with CUDA) and ``cuda``, else as one process would."""
        if not self.distributed:
            return resolve_device(name)
        if name == "auto" and not torch.cuda.is_available():
            return torch.device("cpu")
        if name in ("auto", "cuda"):
            count = torch.cuda.device_count()
            if self.local_rank >= count:
                raise ConfigError("device", f"process {self.local_rank} on this machine has no GPU of its own "
                                            f"({count} GPUs): start at most {count} processes per machine, "
                                            "or device=cpu")
            return torch.device("cuda", self.local_rank)
        if name.startswith("cuda:"):
            raise ConfigError("device", f"{name} would put every process on one GPU: give device=cuda "
                                        "(each process takes cuda:LOCAL_RANK) or device=cpu")
        return torch.device(name)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def broadcast(self, value: T) -> T:
        """Rank 0's ``value`` (any picklable object), on every rank."""
        if not self.distributed:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: T) -> list[T]:
        """Every rank's ``value``, in rank order, on every rank."""
        if not self.distributed:
            return [value]
        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def wrap(self, module: torch.nn.Module, device: torch.device, *,
             find_unused_parameters: bool = False) -> torch.nn.Module:
        """``module`` as the ranks train it: under torchrun, DistributedDataParallel (gradients averaged
        over the ranks in the backward pass; ``find_unused_parameters`` when some parameters get no
        gradient), else ``module`` itself. Only its ``forward`` synchronises: call the wrapper."""
        if not self.distributed:
            return module
        return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None,
                                       find_unused_parameters=find_unused_parameters)

    def main_first(self, make: Callable[[bool], T]) -> T:
        """``make(True)`` on rank 0, then, once it is done, ``make(False)`` on the others: for what rank
        0 alone may write and the others then read (the teacher's features)."""
        if self.main:
            made = make(True)
            self.barrier()
            return made
        self.barrier()
        return make(False)


@contextmanager
def process_group(device: str = "auto") -> Iterator[Ranks]:
    """This process's ``Ranks``; under torchrun, with the process group initialised (NCCL for CUDA,
    gloo for the CPU) for the block and destroyed after it, also when it raises. Re-entrant: inside
    another ``process_group`` block it uses that block's group (``finetune`` trains twice in one)."""
    ranks = Ranks.from_environment()
    if not ranks.distributed or dist.is_initialized():
        yield ranks
        return
    where = ranks.device(device)
    if where.type == "cuda":
        torch.cuda.set_device(where)
        dist.init_process_group("nccl", timeout=RANK0_WAIT, device_id=where)
    else:
        dist.init_process_group("gloo", timeout=RANK0_WAIT)
    try:
        yield ranks
    finally:
        dist.destroy_process_group()
