"""torchrun support: DistributedDataParallel with NCCL on GPUs and gloo on CPUs."""
from __future__ import annotations

import os
import warnings
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

import torch
import torch.distributed as tdist
from torch import nn

from ..engine.device import resolve_device


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    _wrapped: dict = field(default_factory=dict)

    @staticmethod
    def from_env() -> Dist:
        """Under torchrun (it sets LOCAL_RANK) a process group, even of one process: that is
        how a single GPU runs the same NCCL + DDP path as a node of them."""
        if "LOCAL_RANK" not in os.environ:
            return Dist()
        world = int(os.environ.get("WORLD_SIZE", "1"))
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
        if device.type == "cuda" and self.active:
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return device

    def convert_sync_bn(self, model: nn.Module) -> nn.Module:
        """BatchNorm statistics over the global batch: torch's SyncBatchNorm on GPUs, our
        all-reduce version on CPUs (torch's supports accelerators only)."""
        if self.world_size == 1:
            return model
        if next(model.parameters()).is_cuda:
            return nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return _convert_cpu_sync_bn(model)

    @property
    def active(self) -> bool:
        return tdist.is_available() and tdist.is_initialized()

    def wrap(self, model: nn.Module, unused_params: bool = False) -> nn.Module:
        """DDP around the model; `unused_params` when some parameters get no gradient in some
        steps (a frozen backbone)."""
        if not self.active:
            return model
        if id(model) not in self._wrapped:
            ids = [self.local_rank] if next(model.parameters()).is_cuda else None
            self._wrapped[id(model)] = nn.parallel.DistributedDataParallel(
                model, device_ids=ids, find_unused_parameters=unused_params)
        return self._wrapped[id(model)]

    def all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        if self.active:
            tdist.all_reduce(t)
        return t

    def broadcast_(self, tensors: list[torch.Tensor]) -> None:
        """Overwrite `tensors` with rank 0's values (in place)."""
        if self.active:
            for t in tensors:
                tdist.broadcast(t, src=0)

    def no_sync(self, module: nn.Module, skip: bool) -> AbstractContextManager:
        """DDP's `no_sync()` while `skip`: the backward passes of an accumulated step's
        micro-batches before the last keep their gradients local; the last one all-reduces the
        sum of them all (`train.accumulate`)."""
        ddp = getattr(module, "_orig_mod", module)  # under torch.compile
        if skip and isinstance(ddp, nn.parallel.DistributedDataParallel):
            return ddp.no_sync()
        return nullcontext()

    def broadcast_run(self, run):
        if self.world_size == 1:
            return run
        box = [str(run.path)]
        tdist.broadcast_object_list(box, src=0)
        return type(run)(box[0])

    def close(self) -> None:
        if self.active:
            tdist.barrier()
            tdist.destroy_process_group()


class CpuSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose batch statistics are all-reduced over the process group.

    Uses the differentiable all_reduce, so gradients flow through the shared statistics exactly
    as through torch's SyncBatchNorm; gloo runs it on CPUs.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and tdist.is_initialized() and tdist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        dtype, x = x.dtype, x.float()  # statistics in fp32, also under bf16 autocast
        count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype, device=x.device)
        local = torch.cat([x.sum((0, 2, 3)), (x * x).sum((0, 2, 3)), count])
        with warnings.catch_warnings():  # its suggested successor is not differentiable
            warnings.simplefilter("ignore", FutureWarning)
            total = all_reduce(local)
        c = x.shape[1]
        n = total[-1]
        mean = total[:c] / n
        var = total[c:2 * c] / n - mean * mean
        with torch.no_grad():
            m = self.momentum if self.momentum is not None else 0.1
            self.running_mean.lerp_(mean.detach(), m)
            self.running_var.lerp_(var.detach() * n / (n - 1), m)
            self.num_batches_tracked += 1
        shape = (1, c, 1, 1)
        out = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(dtype)


def _convert_cpu_sync_bn(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, CpuSyncBatchNorm):
        new = CpuSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                               module.track_running_stats)
        new.load_state_dict(module.state_dict())
        return new
    for name, child in module.named_children():
        setattr(module, name, _convert_cpu_sync_bn(child))
    return module
