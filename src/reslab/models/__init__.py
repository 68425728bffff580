"""Model construction (config -> nn.Module) and what the training code asks of a model.

Build: `build_model` (budget checked on the meta device first, then weights loaded),
`build_on_meta`, `check_param_budget`, `count_params`.
Heads: `classifier_of`, `require_classifier`, `split_parameters`, `freeze_backbone`.
Weights: `load_weights_file` (any architecture; see weights.py).
"""
from __future__ import annotations

from .build import (
                    build_cifar_resnet,
                    build_model,
                    build_on_meta,
                    check_param_budget,
                    count_params,
                    refuse_over_budget,
)
from .classifier import classifier_of, freeze_backbone, require_classifier, split_parameters
from .weights import load_weights_file

__all__ = ["build_cifar_resnet", "build_model", "build_on_meta", "check_param_budget",
           "classifier_of", "count_params", "freeze_backbone", "load_weights_file",
           "refuse_over_budget", "require_classifier", "split_parameters"]
