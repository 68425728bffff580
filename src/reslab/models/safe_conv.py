"""Route every model around a oneDNN bug: strided 1x1 convolutions with few input channels.

With torch 2.14.1 on AVX2 CPUs (and on AVX512 machines under ONEDNN_MAX_CPU_ISA=AVX2), the
backward pass of a 1x1, stride-2 convolution over channels-last input with 2-7 input channels
corrupts the heap: a segfault, a glibc abort or, with 2 threads, a hang. CIFAR ResNets meet it
in the projection shortcut whenever `model.width` < 8 (and with `kernel_size: 1`), so this
module rewrites such a convolution as a spatial subsample followed by a stride-1 1x1
convolution: the same function with the same parameters and state-dict keys. With 8 or more
input channels the bug does not occur and the direct form is kept: the rewrite costs ~2 % of
a training step there (benchmarks/README.md).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Input channel counts below this take the rewrite (the bug was seen for 2..7; 1 is included
# because the rewrite is free for such tiny layers).
MIN_SAFE_CHANNELS = 8


class SubsampledPointwiseConv(nn.Conv2d):
    """A 1x1 strided Conv2d computed as x[:, :, ::s, ::s] then a stride-1 1x1 convolution."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sh, sw = self.stride
        return F.conv2d(x[:, :, ::sh, ::sw], self.weight, self.bias, 1, 0, self.dilation,
                        self.groups)


def needs_rewrite(m: nn.Module) -> bool:
    return (type(m) is nn.Conv2d and m.kernel_size == (1, 1) and m.stride != (1, 1)
            and m.padding == (0, 0) and m.in_channels < MIN_SAFE_CHANNELS)


def avoid_strided_pointwise_bug(model: nn.Module) -> nn.Module:
    """Swap the class of every affected Conv2d in place; parameters are untouched."""
    for m in model.modules():
        if needs_rewrite(m):
            m.__class__ = SubsampledPointwiseConv
    return model
