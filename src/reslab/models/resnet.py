"""CIFAR-style ResNets (He et al. 2016), one configurable family in the spirit of timm's resnet.py.

3x3 stem without max-pool, stages of BasicBlock or Bottleneck, global (or k x k) average pool,
dropout, linear classifier. `resnet20/32/56` are the 3-stage CIFAR nets (widths 16-32-64);
`resnet18/34` are the 4-stage nets usually trained on CIFAR (widths 64-128-256-512).
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


def conv_bn(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
                         nn.BatchNorm2d(cout))


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

    def __init__(self, cin: int, planes: int, stride: int, kernel: int, shortcut: str):
        super().__init__()
        self.conv1 = conv_bn(cin, planes, kernel, stride)
        self.conv2 = conv_bn(planes, planes, kernel)
        self.shortcut = make_shortcut(cin, planes, stride, shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(F.relu(self.conv1(x), inplace=True))
        return F.relu(out + self.shortcut(x), inplace=True)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int, kernel: int, shortcut: str):
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = conv_bn(cin, planes, 1)
        self.conv2 = conv_bn(planes, planes, kernel, stride)
        self.conv3 = conv_bn(planes, cout, 1)
        self.shortcut = make_shortcut(cin, cout, stride, shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.conv1(x), inplace=True)
        out = self.conv3(F.relu(self.conv2(out), inplace=True))
        return F.relu(out + self.shortcut(x), inplace=True)


class CifarResNet(nn.Module):
    def __init__(self, block: str = "basic", layers: tuple[int, ...] = (3, 3, 3), width: int = 16,
                 num_classes: int = 10, in_chans: int = 3, stem_kernel: int = 3,
                 kernel_size: int = 3, pool_size: int = 1, dropout: float = 0.0,
                 shortcut: str = "projection"):
        super().__init__()
        block_cls = BasicBlock if block == "basic" else Bottleneck
        self.stem = nn.Sequential(conv_bn(in_chans, width, stem_kernel), nn.ReLU(inplace=True))
        stages, cin = [], width
        for i, depth in enumerate(layers):
            planes, stride = width * 2**i, 1 if i == 0 else 2
            blocks = []
            for j in range(depth):
                blocks.append(block_cls(cin, planes, stride if j == 0 else 1, kernel_size, shortcut))
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

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(self.stages(self.stem(x))), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.forward_features(x)))
