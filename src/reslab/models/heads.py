"""Classifier heads that sit on a backbone's pooled feature vector."""
from __future__ import annotations

from torch import nn

from ..config import HeadConfig


def build_head(spec: str | HeadConfig, in_features: int, num_classes: int,
               dropout: float = 0.0) -> nn.Module:
    """`linear` -> (Dropout ->) Linear; a HeadConfig -> the MLP of `mlp_head`.

    `dropout` is `model.dropout`, used only by the linear head (an MLP has its own).
    """
    if spec == "linear":
        linear = nn.Linear(in_features, num_classes)
        return nn.Sequential(nn.Dropout(dropout), linear) if dropout > 0 else linear
    return mlp_head(in_features, num_classes, spec.hidden, spec.dropout, spec.batchnorm)


def mlp_head(in_features: int, num_classes: int, hidden: list[int], dropout: float,
             batchnorm: bool) -> nn.Sequential:
    """Per hidden width: Dropout -> Linear -> ReLU -> BatchNorm1d; then Dropout -> Linear.

    With hidden=[1024], dropout=0.3, batchnorm=True this is the seed's head:
    Dropout(0.3), Linear(feat,1024), ReLU, BatchNorm1d(1024), Dropout(0.3), Linear(1024,C).
    BatchNorm after the ReLU (not before) is the seed's order, kept so results compare.
    """
    layers: list[nn.Module] = []
    width = in_features
    for size in hidden:
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers += [nn.Linear(width, size), nn.ReLU(inplace=True)]
        if batchnorm:
            layers.append(nn.BatchNorm1d(size))
        width = size
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)
