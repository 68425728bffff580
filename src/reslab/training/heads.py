"""Which parameters form the head: what stays trainable while the backbone is frozen."""
from __future__ import annotations

from torch import nn


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
