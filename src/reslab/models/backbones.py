"""ImageNet backbones from torchvision (`tv:<name>`) and timm (`timm:<name>`) with a new head.

Every model is a `Backbone`: `.backbone` maps images to a pooled feature vector and `.head`
maps that to the dataset's classes, so `head_of` and backbone freezing see one clean split.
The rule for what counts as head: the layers reslab creates fresh; everything the library
builds (and pretrained weights can fill) is backbone. For ResNets that is `fc`; for VGG it is
the last Linear only, so fc6/fc7 (the 4096-wide MLP) stay backbone, keep their pretrained
weights, freeze with the convolutions, and an MLP head attaches to fc7's 4096 features. With
a linear head the parameter count is the library's with its classifier resized.

Inputs with `in_chans != 3` get a new first conv. Pretrained RGB filters are adapted as timm
does: summed over RGB for 1 channel (a grey image then gives the response the RGB filter
gives to that grey), else tiled over the channels and scaled by 3/in_chans.

`model.pretrained`: false; true -> the library's default weights, read only from its local
cache (torchvision: `$TORCH_HOME/hub/checkpoints/<file>`; timm: the Hugging Face cache), never
downloaded; or the path of a .pt/.pth/.safetensors state dict (read with weights_only).
"""
from __future__ import annotations

import math
import os
import re
import sys
from pathlib import Path

import torch
from torch import nn

from ..config import ModelConfig
from ..errors import ReslabError
from .heads import build_head

TV_FAMILIES = re.compile(r"(resnet|resnext|wide_resnet|vgg)\d")
CHECKPOINT_KEYS = ("model", "state_dict")


class Backbone(nn.Module):
    """features (B,C,H,W) -> (B,num_features) by `backbone`, -> (B,classes) by `head`."""

    def __init__(self, backbone: nn.Module, head: nn.Module, num_features: int,
                 classifier: tuple[str, ...], first_conv: str | None):
        super().__init__()
        self.backbone, self.head, self.num_features = backbone, head, num_features
        # Names in the library's own state dicts, needed to load its checkpoints.
        self.source_classifier, self.source_first_conv = classifier, first_conv

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def build_backbone(cfg: ModelConfig, num_classes: int, in_chans: int) -> Backbone:
    """A `tv:`/`timm:` model with a head for `num_classes`, weights per `cfg.pretrained`."""
    lib, _, name = cfg.arch.partition(":")
    if lib == "tv":
        net, feats, classifier, first_conv = torchvision_features(name, in_chans)
    else:
        cached = timm_cached_weights(name) if cfg.pretrained is True else None
        net, feats, classifier, first_conv = timm_features(name, in_chans, cached)
    model = Backbone(net, build_head(cfg.head, feats, num_classes, cfg.dropout), feats,
                     classifier, first_conv)
    if cfg.pretrained is True and lib == "tv":
        load_pretrained(model, torchvision_cached_weights(name))
    elif isinstance(cfg.pretrained, str):
        load_pretrained(model, Path(cfg.pretrained).expanduser())
    return model


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


def torchvision_cached_weights(name: str) -> Path:
    import torchvision

    url = torchvision.models.get_model_weights(name).DEFAULT.url
    # torch.hub.get_dir() reads TORCH_HOME on every call, as load_state_dict_from_url does.
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    if not path.is_file():
        raise ReslabError(f"model.pretrained: torchvision weights for {name} not found at "
                          f"{path} (reslab never downloads); place that file there (from {url}) "
                          "or set model.pretrained to a local .pth/.safetensors file")
    return path


# --- timm --------------------------------------------------------------------------------

def timm_features(name: str, in_chans: int, weights: Path | None) -> tuple[nn.Module, int,
                                                                           tuple, str | None]:
    import timm

    # "hf-hub:..." names fetch their config from the network even without weights.
    if ":" in name or not timm.is_model(name):
        raise ReslabError(f"model.arch = 'timm:{name}': not a timm model name (see "
                          "timm.list_models(), e.g. timm:resnet50.a1_in1k)")
    kwargs = {"num_classes": 0, "in_chans": in_chans}
    if weights is not None:
        # A file overlay makes timm read that file (its own filters, first-conv adaptation and
        # classifier removal) instead of resolving the hub, so nothing touches the network.
        kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": str(weights)})
        print(f"model.pretrained: loading timm weights from {weights}", file=sys.stderr)
    try:
        net = timm.create_model(name, **kwargs)
    except Exception as err:  # a corrupt or mismatched cached file (any loader's error type)
        if weights is None:
            raise
        raise ReslabError(f"model.pretrained: timm could not load {weights}: "
                          f"{first_line(err)}") from None
    cfg = net.pretrained_cfg or {}
    classifier = cfg.get("classifier") or ()
    first_conv = cfg.get("first_conv")
    feats = getattr(net, "head_hidden_size", None) or net.num_features
    return (net, feats, (classifier,) if isinstance(classifier, str) else tuple(classifier),
            first_conv if isinstance(first_conv, str) else None)


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, resolved now (huggingface_hub fixes it at import time)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "huggingface" / "hub"


def timm_cached_weights(name: str) -> Path:
    """The cached weight file timm would load for `name`; a one-line error when absent."""
    from huggingface_hub import try_to_load_from_cache
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name) if ":" not in name else None
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise ReslabError(f"model.pretrained: timm has no pretrained weights for {name!r}")
    if not cfg.hf_hub_id:
        path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(cfg.url)
        if path.is_file():
            return path
        raise ReslabError(f"model.pretrained: timm weights for {name} not found at {path} "
                          f"(reslab never downloads); place that file there (from {cfg.url}) "
                          "or set model.pretrained to a local .pth/.safetensors file")
    repo, _, revision = cfg.hf_hub_id.partition("@")
    files = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors",
                                                                "pytorch_model.bin"]
    cache = hf_cache_dir()
    for file in files:
        found = try_to_load_from_cache(repo, file, cache_dir=cache, revision=revision or None)
        if isinstance(found, str):
            return Path(found)
    folder = cache / ("models--" + repo.replace("/", "--"))
    raise ReslabError(f"model.pretrained: timm weights for {name} not in the Hugging Face cache: "
                      f"looked for {folder}/snapshots/<revision>/{' or '.join(files)} "
                      "(reslab never downloads); fill it where there is network (`hf download "
                      f"{repo}`, then copy {folder} or point HF_HOME at that cache) or set "
                      "model.pretrained to a local .safetensors/.pth file")


# --- state-dict files --------------------------------------------------------------------

def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors/.pt/.pth file, unwrapped from {"model": ...} checkpoints."""
    if not path.is_file():
        raise ReslabError(f"model.pretrained = '{path}': file not found (expected a "
                          ".pt/.pth/.safetensors state dict, or true for default weights)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt file, or pickled code that weights_only refuses
        raise ReslabError(f"model.pretrained = '{path}': could not be read safely: "
                          f"{first_line(err)}") from None
    while isinstance(state, dict) and any(isinstance(state.get(k), dict) for k in CHECKPOINT_KEYS):
        state = next(state[k] for k in CHECKPOINT_KEYS if isinstance(state.get(k), dict))
    if not isinstance(state, dict):
        raise ReslabError(f"model.pretrained = '{path}': not a state dict")
    return {strip_wrappers(k): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def first_line(err: Exception) -> str:
    return str(err).splitlines()[0] if str(err).strip() else type(err).__name__


def strip_wrappers(key: str) -> str:
    for prefix in ("module.", "_orig_mod."):  # DDP / torch.compile
        key = key.removeprefix(prefix)
    return key


def to_model_keys(state: dict, model: Backbone) -> tuple[dict, list[str]]:
    """reslab keys as they are; a library state dict -> `backbone.*` minus its classifier."""
    # Only `backbone.` marks reslab's layout: timm's own keys may start with `head.`.
    if any(k.startswith("backbone.") for k in state):
        return state, []
    prefixes = tuple(c + "." for c in model.source_classifier)
    dropped = [k for k in state if k.startswith(prefixes)]
    return {"backbone." + k: v for k, v in state.items() if k not in dropped}, dropped


def adapt_first_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """RGB filters -> `in_chans` filters (see the module docstring)."""
    if in_chans == 1:
        return weight.sum(1, keepdim=True)
    reps = math.ceil(in_chans / weight.shape[1])
    return weight.repeat(1, reps, 1, 1)[:, :in_chans] * (weight.shape[1] / in_chans)


def load_pretrained(model: Backbone, path: Path) -> None:
    """Load a state-dict file into `model` and report what did not fit (stderr)."""
    state, dropped = to_model_keys(read_state_dict(path), model)
    own = model.state_dict()
    conv = f"backbone.{model.source_first_conv}.weight"
    if conv in state and conv in own and state[conv].shape[1] != own[conv].shape[1]:
        state[conv] = adapt_first_conv(state[conv], own[conv].shape[1])
    head_file = {k for k in state if k.startswith("head.")}
    head_own = {k for k in own if k.startswith("head.")}
    if head_file and (head_file != head_own
                      or any(state[k].shape != own[k].shape for k in head_file)):
        dropped += sorted(head_file)  # another class count or head shape: keep the new head
    fits = {k: v for k, v in state.items()
            if k in own and k not in dropped and v.shape == own[k].shape}
    if not any(k.startswith("backbone.") for k in fits):
        raise ReslabError(f"model.pretrained = '{path}': none of its {len(state)} tensors fits "
                          "this model; was it saved for another architecture?")
    model.load_state_dict(fits, strict=False)
    report_load(path, own, state, fits, dropped)


def report_load(path: Path, own: dict, state: dict, fits: dict, dropped: list[str]) -> None:
    def show(keys: list[str]) -> str:
        return ", ".join(keys[:4]) + (f", ... ({len(keys)} in all)" if len(keys) > 4 else "")

    say = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    say(f"model.pretrained: loaded {len(fits)} of {len(own)} tensors from {path}")
    if dropped:
        say(f"model.pretrained: dropped classifier keys (new head for this data): {show(dropped)}")
    counters = lambda k: k.endswith("num_batches_tracked")  # noqa: E731
    missing = [k for k in own if k not in fits and not k.startswith("head.") and not counters(k)]
    if missing:
        say(f"warning: model.pretrained: {len(missing)} backbone tensors missing from {path} "
            f"(left at random init): {show(missing)}")
    unused = [k for k in state if k not in fits and k not in dropped]
    if unused:
        say(f"warning: model.pretrained: {len(unused)} tensors of {path} unused (unknown key "
            f"or other shape): {show(unused)}")
