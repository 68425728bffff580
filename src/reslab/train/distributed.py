"""torchrun support: DistributedDataParallel with NCCL on GPUs and gloo on CPUs."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as tdist
from torch import nn

from ..utils import resolve_device


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    _wrapped: dict = field(default_factory=dict)

    @staticmethod
    def from_env() -> "Dist":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return Dist()
        if not tdist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            tdist.init_process_group(backend)
        return Dist(tdist.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0")),
                    int(os.environ.get("LOCAL_WORLD_SIZE", str(world))))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, name: str) -> torch.device:
        device = resolve_device(name)
        if device.type == "cuda" and self.world_size > 1:
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return device

    def wrap(self, model: nn.Module, sync_bn: bool = False) -> nn.Module:
        if self.world_size == 1:
            return model
        if id(model) not in self._wrapped:
            ids = [self.local_rank] if next(model.parameters()).is_cuda else None
            self._wrapped[id(model)] = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        return self._wrapped[id(model)]

    def all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        if self.world_size > 1:
            tdist.all_reduce(t)
        return t

    def broadcast_run(self, run):
        if self.world_size == 1:
            return run
        box = [str(run.path)]
        tdist.broadcast_object_list(box, src=0)
        return type(run)(box[0])

    def close(self) -> None:
        if self.world_size > 1 and tdist.is_initialized():
            tdist.barrier()
            tdist.destroy_process_group()
