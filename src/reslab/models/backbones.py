"""ImageNet backbones from torchvision (`tv:<name>`) and timm (`timm:<name>`) with a new head.

Every model is a `Backbone`: `.backbone` is the library's network without its classifier and
`.head` maps the pooled feature vector to the dataset's classes. The rule for what counts as
head: the layers reslab creates fresh; everything the library builds (and pretrained weights
can fill) is backbone. For ResNets that is `fc`; for VGG it is the last Linear only, so fc6/fc7
(the 4096-wide MLP) stay backbone, keep their pretrained weights, freeze with the convolutions,
and an MLP head attaches to fc7's 4096 features. With a linear head the parameter count is the
library's with its classifier resized.

Heads API (timm's convention): `forward_features` is the last feature map before pooling,
`forward_head(x, pre_logits)` pools (and runs VGG's fc6/fc7) then the head; `get_classifier()`
is `.head`, `reset_classifier(n)` builds a new head of the same kind.

Inputs with `in_chans != 3` get a new first conv. `model.kwargs` go to `timm.create_model` for
`timm:` archs (e.g. `drop_path_rate`); reslab sets `num_classes`, `in_chans` and `pretrained`
itself. Weights (library caches and files) are read by `weights.py`.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import HeadConfig, ModelConfig
from ..errors import ReslabError
from ..output import note
from .heads import build_head
from .weights import first_line, timm_cached_weights

TV_FAMILIES = re.compile(r"(resnet|resnext|wide_resnet|vgg)\d")
# Keys reslab passes to timm.create_model itself.
TIMM_RESERVED = ("num_classes", "in_chans", "pretrained", "pretrained_cfg",
                 "pretrained_cfg_overlay", "features_only", "checkpoint_path")


class Backbone(nn.Module):
    """images -> `forward_features` (B,C,H,W) -> `forward_head`: pooled (B,F) -> head."""

    def __init__(self, backbone: nn.Module, head: nn.Module, num_features: int,
                 classifier: tuple[str, ...], first_conv: str | None, library: str,
                 head_spec: tuple[str | HeadConfig, float] = ("linear", 0.0)):
        super().__init__()
        self.backbone, self.head, self.num_features = backbone, head, num_features
        self.library, self.head_spec = library, head_spec
        # Names in the library's own state dicts, needed to load its checkpoints.
        self.source_classifier, self.source_first_conv = classifier, first_conv

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh head of the configured kind for `num_classes` (0: none), on the device of
        the backbone."""
        spec, dropout = self.head_spec
        head = (build_head(spec, self.num_features, num_classes, dropout) if num_classes > 0
                else nn.Identity())
        ref = next(self.backbone.parameters(), None)
        self.head = head.to(ref.device) if ref is not None else head

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if self.library == "timm":
            return self.backbone.forward_features(x)
        return torchvision_trunk(self.backbone, x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.library == "timm":
            x = self.backbone.forward_head(x, pre_logits=True)
        else:
            x = torchvision_pre_logits(self.backbone, x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def torchvision_trunk(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layers before `avgpool`. The families reslab accepts (ResNet, ResNeXt, Wide ResNet,
    VGG) run their children in registration order with `avgpool` then a flatten in between,
    so this split reproduces their forward exactly."""
    for name, child in net.named_children():
        if name == "avgpool":
            break
        x = child(x)
    return x


def torchvision_pre_logits(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`avgpool`, flatten, then the children after it (VGG's fc6/fc7; ResNet's Identity fc)."""
    after = False
    for name, child in net.named_children():
        if after:
            x = child(x)
        elif name == "avgpool":
            x, after = torch.flatten(child(x), 1), True
    return x


def build_backbone(cfg: ModelConfig, num_classes: int, in_chans: int,
                   library_weights: bool = True) -> Backbone:
    """A `tv:`/`timm:` model with a head for `num_classes`. With `library_weights` a timm model
    reads its cached weights when `cfg.pretrained is True` (timm's loader adapts them itself);
    every other weight file is loaded afterwards by `build_model`."""
    lib, _, name = cfg.arch.partition(":")
    if lib == "tv":
        net, feats, classifier, first_conv = torchvision_features(name, in_chans)
    else:
        cached = timm_cached_weights(name) if library_weights and cfg.pretrained is True else None
        net, feats, classifier, first_conv = timm_features(name, in_chans, cached, cfg.kwargs)
    head = build_head(cfg.head, feats, num_classes, cfg.dropout)
    return Backbone(net, head, feats, classifier, first_conv, lib, (cfg.head, cfg.dropout))


# --- torchvision -------------------------------------------------------------------------

def torchvision_features(name: str, in_chans: int) -> tuple[nn.Module, int, tuple, str]:
    import torchvision

    known = torchvision.models.list_models(module=torchvision.models)
    if name not in known or not TV_FAMILIES.match(name):
        names = ", ".join(n for n in known if TV_FAMILIES.match(n))
        raise ReslabError(f"model.arch = 'tv:{name}': expected tv:<one of {names}>; other "
                          "ImageNet models via timm:<name>")
    net = torchvision.models.get_model(name, weights=None)
    # ResNet's `fc` / VGG's `classifier.6`: the 1000-class layer is the last Linear.
    cls_name, linear = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Linear)][-1]
    net.set_submodule(cls_name, nn.Identity())
    conv_name = next(n for n, m in net.named_modules() if isinstance(m, nn.Conv2d))
    if in_chans != 3:
        net.set_submodule(conv_name, conv_like(net.get_submodule(conv_name), in_chans))
    return net, linear.in_features, (cls_name,), conv_name


def conv_like(conv: nn.Conv2d, in_chans: int) -> nn.Conv2d:
    return nn.Conv2d(in_chans, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                     conv.dilation, conv.groups, conv.bias is not None)


# --- timm --------------------------------------------------------------------------------

def timm_features(name: str, in_chans: int, weights: Path | None,
                  extra: dict[str, Any] | None = None) -> tuple[nn.Module, int, tuple,
                                                                str | None]:
    import timm

    # "hf-hub:..." names fetch their config from the network even without weights.
    if ":" in name or not timm.is_model(name):
        raise ReslabError(f"model.arch = 'timm:{name}': not a timm model name (see "
                          "timm.list_models(), e.g. timm:resnet50.a1_in1k)")
    net = create_timm_model(name, timm_kwargs(name, in_chans, weights, extra or {}), weights,
                            bool(extra))
    cfg = net.pretrained_cfg or {}
    classifier = cfg.get("classifier") or ()
    first_conv = cfg.get("first_conv")
    feats = getattr(net, "head_hidden_size", None) or net.num_features
    return (net, feats, (classifier,) if isinstance(classifier, str) else tuple(classifier),
            first_conv if isinstance(first_conv, str) else None)


def timm_kwargs(name: str, in_chans: int, weights: Path | None,
                extra: dict[str, Any]) -> dict[str, Any]:
    reserved = [k for k in extra if k in TIMM_RESERVED]
    if reserved:
        raise ReslabError(f"model.kwargs: {', '.join(reserved)} for timm:{name} is set by "
                          "reslab (from the data, model.pretrained and the head); remove it")
    kwargs = {**extra, "num_classes": 0, "in_chans": in_chans}
    if weights is not None:
        # A file overlay makes timm read that file (its own filters, first-conv adaptation and
        # classifier removal) instead of resolving the hub, so nothing touches the network.
        kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": str(weights)})
    return kwargs


def create_timm_model(name: str, kwargs: dict[str, Any], weights: Path | None,
                      user_keys: bool) -> nn.Module:
    import timm

    if weights is not None:
        note(f"model.pretrained: loading timm weights from {weights}")
    try:
        return timm.create_model(name, **kwargs)
    except Exception as err:
        if user_keys and isinstance(err, TypeError) and "argument" in str(err):
            raise ReslabError(f"model.kwargs: timm:{name} does not take them: "
                              f"{first_line(err)}") from None
        if weights is None:
            raise
        # A corrupt or mismatched cached file (any loader's error type).
        raise ReslabError(f"model.pretrained: timm could not load {weights}: "
                          f"{first_line(err)}") from None
