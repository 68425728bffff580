"""Your own network: `model.arch: "path/to/file.py:ClassName"` or `"package.module:ClassName"`.

The class is called with `model.kwargs`, plus `num_classes` and `in_chans` when its signature
takes them (timm's convention) and the kwargs do not set them. A relative file path is
resolved against the config file's folder when the config is loaded, so the run directory's
config.yaml names the file absolutely and `eval`/`predict` find it from anywhere.

Heads: training asks the model for its classifier (`models.classifier_of`): give the class a
`get_classifier()` method (timm's convention; `reset_classifier`, `forward_features` and
`forward_head` are welcome too), or name the final layer `head`, `fc` or `classifier`.
Without either, `train.freeze_backbone_epochs` and `train.backbone_lr_scale` are refused with
a one-line error; plain training needs no head. `model.pretrained: PATH` loads a state dict
into a user model like into any other (see weights.py).
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any

from torch import nn

from ..config import ModelConfig
from ..errors import ReslabError


def is_user_arch(arch: str) -> bool:
    return ModelConfig.arch_kind(arch) == "user"


def split_arch(arch: str) -> tuple[str, str]:
    target, _, name = arch.rpartition(":")
    if not target or not name.isidentifier():
        raise ReslabError(f"model.arch = {arch!r}: expected 'path/to/file.py:ClassName' or "
                          "'package.module:ClassName'")
    return target, name


def load_class(arch: str) -> type:
    target, name = split_arch(arch)
    if target.endswith(".py"):
        module = _module_from_file(Path(target).expanduser(), arch)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as err:
            raise ReslabError(f"model.arch = {arch!r}: cannot import {target} ({err})") from None
    cls = getattr(module, name, None)
    if not isinstance(cls, type) or not issubclass(cls, nn.Module):
        raise ReslabError(f"model.arch = {arch!r}: {target} has no nn.Module class {name}")
    return cls


def _module_from_file(path: Path, arch: str):
    if not path.is_file():
        raise ReslabError(f"model.arch = {arch!r}: file {path} not found")
    # One module per file content: a sweep's workers and a re-import load the same code.
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    key = f"reslab_user_model_{path.stem}_{digest}"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        del sys.modules[key]
        raise ReslabError(f"model.arch = {arch!r}: {path} failed to import: "
                          f"{type(err).__name__}: {err}") from None
    return module


def build_user_model(arch: str, kwargs: dict[str, Any], num_classes: int,
                     in_chans: int) -> nn.Module:
    cls = load_class(arch)
    params = inspect.signature(cls).parameters
    takes_any = any(p.kind == p.VAR_KEYWORD for p in params.values())
    call = dict(kwargs)
    for key, value in (("num_classes", num_classes), ("in_chans", in_chans)):
        if key not in call and (key in params or takes_any):
            call[key] = value
    try:
        return cls(**call)
    except TypeError as err:
        raise ReslabError(f"model.kwargs: {cls.__name__}({', '.join(call)}) failed: "
                          f"{err}") from None
