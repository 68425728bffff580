"""Which layers are the classifier: asked of the model, never guessed by the training code.

Every model reslab builds (CIFAR ResNets, `tv:`/`timm:` backbones) answers `get_classifier()`,
timm's convention. A user model (`model.arch: file.py:Class`) should too; without that method,
the documented fallback is a child module named `head`, `fc` or `classifier` (timm's and
torchvision's names), in that order. When neither exists and training needs the split
(`train.freeze_backbone_epochs`, `train.backbone_lr_scale`), the error names the class and what
to add. Weight-decay rules (none on norms and biases) are optimizer policy and stay in
`train/optim.py`; this module only says which parameters are head and which are backbone.
"""
from __future__ import annotations

from torch import nn

from ..errors import ReslabError

FALLBACK_NAMES = ("head", "fc", "classifier")


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model under DDP (`.module`) and torch.compile (`._orig_mod`) wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def classifier_of(model: nn.Module) -> nn.Module | None:
    """The model's classifier: `get_classifier()` when it has one, else a child named `head`,
    `fc` or `classifier`, else None."""
    model = unwrap(model)
    get = getattr(model, "get_classifier", None)
    if callable(get):
        head = get()
        return head if isinstance(head, nn.Module) else None
    for name in FALLBACK_NAMES:
        child = getattr(model, name, None)
        if isinstance(child, nn.Module):
            return child
    return None


def require_classifier(model: nn.Module, needed_by: str) -> nn.Module:
    """`classifier_of(model)`, or a one-line ReslabError naming the config key `needed_by`."""
    head = classifier_of(model)
    if head is None or not any(True for _ in head.parameters()):
        name = type(unwrap(model)).__name__
        raise ReslabError(f"{needed_by}: needs the model's classifier, but {name} has no "
                          "get_classifier() method (nor a child module named head, fc or "
                          "classifier with parameters); add get_classifier() returning its "
                          "final layer")
    return head


def classifier_name(model: nn.Module) -> str | None:
    """The classifier's qualified name in `model` (its state-dict prefix), or None."""
    head = classifier_of(model)
    if head is None:
        return None
    return next((n for n, m in unwrap(model).named_modules() if m is head and n), None)


def split_parameters(model: nn.Module, needed_by: str | None = None
                     ) -> tuple[list[tuple[str, nn.Parameter]], list[tuple[str, nn.Parameter]]]:
    """(head, backbone) named parameters in model order. Without a classifier everything is
    backbone, unless `needed_by` (the config key that needs the split) makes that an error."""
    head = require_classifier(model, needed_by) if needed_by else classifier_of(model)
    head_ids = {id(p) for p in head.parameters()} if head is not None else set()
    named = list(model.named_parameters())
    return ([(n, p) for n, p in named if id(p) in head_ids],
            [(n, p) for n, p in named if id(p) not in head_ids])


def freeze_backbone(model: nn.Module, frozen: bool,
                    needed_by: str = "train.freeze_backbone_epochs") -> None:
    """Freeze (or unfreeze) every parameter outside the classifier.

    Frozen BatchNorm layers are put in eval mode so that their running statistics stay fixed
    too; call this after `model.train()`, which puts them back in training mode.
    """
    if not frozen:  # needs no classifier: everything trains
        for p in model.parameters():
            p.requires_grad_(True)
        return
    head = require_classifier(model, needed_by)
    head_params = {id(p) for p in head.parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in head_params)
    head_modules = {id(m) for m in head.modules()}
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m) not in head_modules:
            m.eval()
