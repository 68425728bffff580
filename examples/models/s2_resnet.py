"""S2's custom ResNet for CIFAR-10 (4,934,746 parameters), rebuilt from its published table.

Source: the layer table in ../shared/notes/seed-s2-model.md (torchsummary style; rows 33-56 and
66-77 were left out of the publication and follow from the rows shown and from the total).

    stem      Conv2d 3->16 3x3 + BN(16), ReLU
    layer1    3 blocks at 64 channels, 32x32
    layer2    5 blocks at 128 channels, 16x16 (stride 2 in the first block's first conv)
    layer3    3 blocks at 256 channels, 8x8 (idem)
    head      global average pool, Linear 256 -> num_classes

A block is conv3x3-BN-(ReLU)-Dropout, conv3x3-BN, add, ReLU. The first block of a stage also
has a Dropout after its second conv-BN and a 1x1 conv-BN whose weight is C_out x C_out
(4,096 = 64x64, 16,384 = 128x128, 65,536 = 256x256), not the C_in x C_out of a projection
shortcut.

How a C_out x C_out 1x1 conv can sit in the first block: it is not applied to the block's
input, which has C_in channels (16, 64, 128) and, from stage 2 on, twice the resolution; no
C_out x C_out weight can take that tensor. Its rows come after the main branch's (torchsummary
lists modules in the order their forward calls return), and its output shape is the branch's.
So it is applied to the main branch's output: a first block computes
    y = Dropout(BN(conv2(Dropout(ReLU(BN(conv1(x)))))));  out = ReLU(y + BN(conv1x1(y)))
i.e. the "shortcut" starts after the convolutions, and the first block of each stage has no
path from its input that skips them: it is a plain two-conv layer followed by a residual 1x1
layer. That is the published network's forward (most likely `shortcut(out)` written where
`shortcut(x)` was meant); it is reproduced as published, not corrected, so that results
compare. The other blocks are ordinary identity-shortcut blocks.

ReLUs are functional (F.relu), as in the original: they have no rows in its table, so their
places (after the stem's BN, after a block's first BN, after the add) are the standard
ResNet ones, not read from the table. The dropout probability is not published either;
`dropout` (default 0.1) sets it.

Heads API (timm's convention, which reslab's training code asks for): `get_classifier`,
`reset_classifier`, `forward_features`, `forward_head`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


class Block(nn.Module):
    """Named `Block` so that layer tables show the published row names."""

    def __init__(self, cin: int, cout: int, stride: int, first: bool, dropout: float):
        super().__init__()
        # Attributes in forward order, flat (no nested Sequential): the table rows line up.
        self.conv1, self.bn1 = conv3x3(cin, cout, stride), nn.BatchNorm2d(cout)
        self.drop1 = nn.Dropout(dropout)
        self.conv2, self.bn2 = conv3x3(cout, cout), nn.BatchNorm2d(cout)
        self.first = first
        if first:
            self.drop2 = nn.Dropout(dropout)
            self.conv3, self.bn3 = nn.Conv2d(cout, cout, 1, bias=False), nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.drop1(F.relu(self.bn1(self.conv1(x))))
        out = self.bn2(self.conv2(out))
        if self.first:
            out = self.drop2(out)
            return F.relu(out + self.bn3(self.conv3(out)))  # see the module docstring
        return F.relu(out + x)


class S2ResNet(nn.Module):
    def __init__(self, num_classes: int = 10, in_chans: int = 3, dropout: float = 0.1,
                 stem_width: int = 16, widths: tuple[int, ...] = (64, 128, 256),
                 layers: tuple[int, ...] = (3, 5, 3)):
        super().__init__()
        self.conv1, self.bn1 = conv3x3(in_chans, stem_width), nn.BatchNorm2d(stem_width)
        cin = stem_width
        for i, (width, depth) in enumerate(zip(widths, layers, strict=True)):
            blocks = [Block(cin if j == 0 else width, width, 2 if i > 0 and j == 0 else 1,
                            j == 0, dropout) for j in range(depth)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            cin = width
        self.num_stages, self.num_features = len(layers), cin
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        self.fc = (nn.Linear(self.num_features, num_classes, device=self.conv1.weight.device)
                   if num_classes > 0 else nn.Identity())

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.pool(x), 1)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
