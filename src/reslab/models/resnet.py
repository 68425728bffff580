"""CIFAR-style ResNets (He et al. 2016), one configurable family in the spirit of timm's resnet.py.

3x3 stem without max-pool, stages of BasicBlock or Bottleneck, global (or k x k) average pool,
dropout, linear classifier. `resnet20/32/56` are the 3-stage CIFAR nets (widths 16-32-64);
`resnet18/34` are the 4-stage nets usually trained on CIFAR (widths 64-128-256-512).

The model owns its head (timm's convention): `forward_features` returns the last stage's
feature map, `forward_head` pools, applies dropout and the classifier `fc`;
`get_classifier()` / `reset_classifier(n)` give and replace `fc`.

`stem_width` (default: `width`) sets the stem's output channels independently of the stages;
`block_dropout` puts a Dropout after every conv-BN inside the residual blocks (not after the
stem or the shortcut projections).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Preset:
    block: str
    layers: tuple[int, ...]
    width: int


PRESETS: dict[str, Preset] = {
    "resnet20": Preset("basic", (3, 3, 3), 16),
    "resnet32": Preset("basic", (5, 5, 5), 16),
    "resnet44": Preset("basic", (7, 7, 7), 16),
    "resnet56": Preset("basic", (9, 9, 9), 16),
    "resnet110": Preset("basic", (18, 18, 18), 16),
    "resnet10": Preset("basic", (1, 1, 1, 1), 64),
    "resnet18": Preset("basic", (2, 2, 2, 2), 64),
    "resnet34": Preset("basic", (3, 4, 6, 3), 64),
    "resnet50": Preset("bottleneck", (3, 4, 6, 3), 64),
    "resnet101": Preset("bottleneck", (3, 4, 23, 3), 64),
}


def conv_bn(cin: int, cout: int, kernel: int, stride: int = 1,
            dropout: float = 0.0) -> nn.Sequential:
    """Conv (no bias) -> BN [-> Dropout]; the Dropout sits at index 2, so the state-dict keys
    (`.0.weight`, `.1.weight`) are the same with and without it."""
    layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout)]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class ZeroPadShortcut(nn.Module):
    """Option A of the paper: subsample and zero-pad channels; no parameters."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.stride, self.extra = stride, cout - cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))


def make_shortcut(cin: int, cout: int, stride: int, kind: str) -> nn.Module:
    if stride == 1 and cin == cout:
        return nn.Identity()
    if kind == "zeropad":
        return ZeroPadShortcut(cin, cout, stride)
    return conv_bn(cin, cout, 1, stride)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int, kernel: int, shortcut: str,
                 dropout: float = 0.0):
        super().__init__()
        self.conv1 = conv_bn(cin, planes, kernel, stride, dropout)
        self.conv2 = conv_bn(planes, planes, kernel, dropout=dropout)
        self.shortcut = make_shortcut(cin, planes, stride, shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(F.relu(self.conv1(x), inplace=True))
        return F.relu(out + self.shortcut(x), inplace=True)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int, kernel: int, shortcut: str,
                 dropout: float = 0.0):
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = conv_bn(cin, planes, 1, dropout=dropout)
        self.conv2 = conv_bn(planes, planes, kernel, stride, dropout)
        self.conv3 = conv_bn(planes, cout, 1, dropout=dropout)
        self.shortcut = make_shortcut(cin, cout, stride, shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.conv1(x), inplace=True)
        out = self.conv3(F.relu(self.conv2(out), inplace=True))
        return F.relu(out + self.shortcut(x), inplace=True)


class CifarResNet(nn.Module):
    def __init__(self, block: str = "basic", layers: tuple[int, ...] = (3, 3, 3), width: int = 16,
                 num_classes: int = 10, in_chans: int = 3, stem_kernel: int = 3,
                 kernel_size: int = 3, pool_size: int = 1, dropout: float = 0.0,
                 shortcut: str = "projection", stem_width: int | None = None,
                 block_dropout: float = 0.0):
        super().__init__()
        block_cls = BasicBlock if block == "basic" else Bottleneck
        cin = stem_width or width
        self.stem = nn.Sequential(conv_bn(in_chans, cin, stem_kernel), nn.ReLU(inplace=True))
        stages = []
        for i, depth in enumerate(layers):
            planes, stride = width * 2**i, 1 if i == 0 else 2
            blocks = []
            for j in range(depth):
                blocks.append(block_cls(cin, planes, stride if j == 0 else 1, kernel_size,
                                        shortcut, block_dropout))
                cin = planes * block_cls.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
        self.num_features = cin * pool_size * pool_size
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(self.num_features, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # Zero-init the last BN of each residual branch: every block starts as the identity,
        # which trains faster and more stably (Goyal et al. 2017).
        for m in self.modules():
            if isinstance(m, (BasicBlock, Bottleneck)):
                last = m.conv3 if isinstance(m, Bottleneck) else m.conv2
                nn.init.zeros_(last[1].weight)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh classifier for `num_classes` (0: none, the model then returns features),
        on the device and dtype of the one it replaces."""
        old = self.fc.weight if isinstance(self.fc, nn.Linear) else None
        where = {"device": old.device, "dtype": old.dtype} if old is not None else {}
        self.fc = (nn.Linear(self.num_features, num_classes, **where) if num_classes > 0
                   else nn.Identity())

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's feature map (B, C, H, W), before pooling."""
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool, flatten and dropout (`pre_logits`: stop here), then the classifier."""
        x = self.dropout(torch.flatten(self.pool(x), 1))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
