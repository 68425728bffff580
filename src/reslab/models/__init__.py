"""Model construction: config -> nn.Module, with the parameter budget enforced up front."""
from __future__ import annotations

from torch import nn

from ..config import ModelConfig, is_user_arch
from ..errors import ReslabError
from .resnet import PRESETS, CifarResNet
from .safe_conv import avoid_strided_pointwise_bug
from .user import build_user_model


def build_model(cfg: ModelConfig, num_classes: int, in_chans: int = 3) -> nn.Module:
    """Build the model named by `cfg.arch` and refuse it if it is over `cfg.max_params`."""
    if cfg.arch.startswith(("tv:", "timm:")):
        from .backbones import build_backbone

        model = build_backbone(cfg, num_classes, in_chans)
    elif is_user_arch(cfg.arch):
        model = build_user_model(cfg.arch, cfg.kwargs, num_classes, in_chans)
    else:
        model = build_cifar_resnet(cfg, num_classes, in_chans)
    check_budget(model, cfg)
    return avoid_strided_pointwise_bug(model)


def build_cifar_resnet(cfg: ModelConfig, num_classes: int, in_chans: int) -> CifarResNet:
    preset = PRESETS.get(cfg.arch)
    if preset is None:
        names = ", ".join(PRESETS)
        raise ReslabError(f"model.arch = {cfg.arch!r}: expected one of {names}, "
                          "tv:<torchvision name> or timm:<timm name>")
    if cfg.head != "linear":
        raise ReslabError("model.head: MLP heads are supported for tv:/timm: backbones; "
                          "CIFAR ResNets use model.dropout with a linear head")
    return CifarResNet(block=cfg.block or preset.block, layers=tuple(cfg.layers or preset.layers),
                       width=cfg.width or preset.width, num_classes=num_classes,
                       in_chans=in_chans, stem_kernel=cfg.stem_kernel,
                       kernel_size=cfg.kernel_size, pool_size=cfg.pool_size,
                       dropout=cfg.dropout, shortcut=cfg.shortcut)


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def check_budget(model: nn.Module, cfg: ModelConfig) -> None:
    n = count_params(model)
    if cfg.max_params is not None and n > cfg.max_params:
        raise ReslabError(f"model.max_params: {cfg.arch} (width {cfg.width or 'default'}) has "
                          f"{n:,} parameters, over the budget of {cfg.max_params:,}")
