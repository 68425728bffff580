"""config -> nn.Module: the parameter budget is checked on the meta device before any weight is
allocated, then the model is built, its configured weights loaded and the oneDNN workaround
applied.

Meta device: every parameter has a shape but no storage, so counting the parameters of a
`model.width: 4096` ResNet costs microseconds and no memory. A model whose constructor cannot
run on meta (a user module or timm model that reads tensor values while it is built, e.g.
`torch.linspace(...).tolist()` for drop-path rates) falls back to a real build for the count:
that one allocates, under a forked RNG so the weights of the model then built are unchanged.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..config import ModelConfig
from ..errors import ReslabError
from .resnet import PRESETS, CifarResNet
from .safe_conv import avoid_strided_pointwise_bug
from .user import build_user_model, is_user_arch
from .weights import load_weights_file, torchvision_cached_weights


def build_model(cfg: ModelConfig, num_classes: int, in_chans: int = 3) -> nn.Module:
    """The model named by `cfg.arch`, refused before allocation if over `cfg.max_params`,
    with the weights of `cfg.pretrained` loaded."""
    check_param_budget(cfg, num_classes, in_chans)
    model = construct(cfg, num_classes, in_chans)
    load_configured_weights(model, cfg)
    return avoid_strided_pointwise_bug(model)


def construct(cfg: ModelConfig, num_classes: int, in_chans: int,
              library_weights: bool = True) -> nn.Module:
    """The bare network (timm reads its cached weights here when `library_weights`)."""
    if cfg.arch.startswith(("tv:", "timm:")):
        from .backbones import build_backbone

        return build_backbone(cfg, num_classes, in_chans, library_weights)
    if is_user_arch(cfg.arch):
        if cfg.head != "linear":  # the module builds its own classifier: say so, not ignore it
            raise ReslabError("model.head: MLP heads are supported for tv:/timm: backbones; a "
                              "user module builds its own classifier (pass its options in "
                              "model.kwargs)")
        return build_user_model(cfg.arch, cfg.kwargs, num_classes, in_chans)
    return build_cifar_resnet(cfg, num_classes, in_chans)


def build_cifar_resnet(cfg: ModelConfig, num_classes: int, in_chans: int) -> CifarResNet:
    preset = PRESETS.get(cfg.arch)
    if preset is None:
        names = ", ".join(PRESETS)
        raise ReslabError(f"model.arch = {cfg.arch!r}: expected one of {names}, "
                          "tv:<torchvision name>, timm:<timm name> or path/file.py:Class")
    if cfg.head != "linear":
        raise ReslabError("model.head: MLP heads are supported for tv:/timm: backbones; "
                          "CIFAR ResNets use model.dropout with a linear head")
    width = cfg.width or preset.width
    if cfg.shortcut == "zeropad" and (cfg.stem_width or width) > width:
        raise ReslabError(f"model.stem_width = {cfg.stem_width}: a zeropad shortcut cannot "
                          f"narrow it to model.width {width}; use shortcut: projection")
    return CifarResNet(block=cfg.block or preset.block, layers=tuple(cfg.layers or preset.layers),
                       width=width, num_classes=num_classes, in_chans=in_chans,
                       stem_kernel=cfg.stem_kernel, kernel_size=cfg.kernel_size,
                       pool_size=cfg.pool_size, dropout=cfg.dropout, shortcut=cfg.shortcut,
                       stem_width=cfg.stem_width, block_dropout=cfg.block_dropout)


def load_configured_weights(model: nn.Module, cfg: ModelConfig) -> None:
    """`model.pretrained`: a file for every arch; `true` for tv: here (timm loads its own
    cached weights while it builds; ModelConfig refuses `true` for other archs)."""
    if cfg.pretrained is True and cfg.arch.startswith("tv:"):
        path = torchvision_cached_weights(cfg.arch.removeprefix("tv:"))
        load_weights_file(model, path, cfg.pretrained_strict)
    elif isinstance(cfg.pretrained, str):
        load_weights_file(model, Path(cfg.pretrained).expanduser(), cfg.pretrained_strict)


def build_on_meta(cfg: ModelConfig, num_classes: int, in_chans: int) -> nn.Module | None:
    """The model with every tensor on the meta device (shapes only: nothing is allocated, no
    weights are read), or None when its constructor cannot run there."""
    try:
        with torch.device("meta"):
            model = construct(cfg, num_classes, in_chans, library_weights=False)
    except ReslabError:
        raise
    except Exception:  # noqa: BLE001 - constructor code needing real tensors: caller falls back
        return None
    return avoid_strided_pointwise_bug(model)


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def check_param_budget(cfg: ModelConfig, num_classes: int, in_chans: int) -> int | None:
    """Refuse a model over `cfg.max_params` before allocating it: counted on the meta device
    (a real build only for models that cannot be built there). Returns the count, or None
    when there is no budget (nothing is built then)."""
    if cfg.max_params is None:
        return None
    model = build_on_meta(cfg, num_classes, in_chans)
    if model is None:
        with torch.random.fork_rng(devices=[]):  # the real build after this draws the same
            model = construct(cfg, num_classes, in_chans, library_weights=False)
    n = count_params(model)
    refuse_over_budget(cfg, n)
    return n


def refuse_over_budget(cfg: ModelConfig, n: int) -> None:
    if cfg.max_params is not None and n > cfg.max_params:
        cifar = ModelConfig.arch_kind(cfg.arch) == "cifar"
        width = f" (width {cfg.width or 'default'})" if cifar else ""
        raise ReslabError(f"model.max_params: {cfg.arch}{width} has {n:,} parameters, over the "
                          f"budget of {cfg.max_params:,}")
