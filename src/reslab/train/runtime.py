"""Device-level settings: threads, mixed precision, which parameters form the head."""
from __future__ import annotations

import torch
from torch import nn

from ..utils import available_cores


def configure_threads(threads: int | None, dist) -> int:
    """Use the cores this process may run on, shared evenly between local ranks."""
    n = threads or max(1, available_cores() // max(1, dist.local_world_size))
    torch.set_num_threads(n)
    return n


def amp_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast where the hardware runs it natively; fp32 elsewhere (e.g. AVX2 CPUs)."""
    if setting == "off":
        return None
    if setting == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if device.type == "cpu":
        try:
            return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else None
        except (AttributeError, RuntimeError):
            return None
    return None


def head_of(model: nn.Module) -> nn.Module | None:
    """The classifier: what stays trainable while the backbone is frozen."""
    for name in ("head", "fc", "classifier"):
        module = getattr(model, name, None)
        if isinstance(module, nn.Module):
            return module
    get = getattr(model, "get_classifier", None)
    return get() if callable(get) else None


def set_backbone_frozen(model: nn.Module, frozen: bool) -> None:
    head = head_of(model)
    if head is None:
        return
    head_params = {id(p) for p in head.parameters()}
    for p in model.parameters():
        if id(p) not in head_params:
            p.requires_grad_(not frozen)
    if frozen:
        # Frozen BatchNorm layers must not keep updating their running statistics.
        head_modules = {id(m) for m in head.modules()}
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m) not in head_modules:
                m.eval()
