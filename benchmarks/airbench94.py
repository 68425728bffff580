"""airbench94 re-implemented compactly, for benchmarks/gpu_time_to_accuracy.py.

airbench (Keller Jordan, "94% on CIFAR-10 in 3.29 seconds on a single GPU", arXiv 2404.00498;
the `airbench` package on PyPI, 0.1.8, MIT): 94.01 % mean CIFAR-10 test accuracy in 3.83 s on
one NVIDIA A100 (airbench94.py, 0.36 PFLOPs; its README). This module follows
airbench/lib_airbench94.py's published recipe: the network (a 2x2 whitening conv of 24 filters
initialised from the patch covariance of 5,000 training images, then three conv groups of
widths 64/256/256 with max-pooling, BatchNorm without scale and GELU, dirac-initialised convs,
a linear head scaled by 1/9), batch 1024, Nesterov SGD (lr 11.5 and weight decay 0.0153 per
1024 examples, momentum 0.85, BatchNorm biases at 64x the LR), label smoothing 0.2, a
triangular LR schedule over 9.9 epochs, Lookahead every 5 steps, flip + 2-px reflect-translate
augmentation with alternating flips, and flip + translate test-time augmentation.

It is used when the package is not installed, and on CPUs (the package needs CUDA). On a
CUDA device the network runs in fp16 with fp32 BatchNorm, as airbench does; elsewhere in fp32.
The timed part is airbench's: whitening init + training + the TTA evaluation.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

HYP = {"epochs": 9.9, "batch_size": 1024, "lr": 11.5, "momentum": 0.85,
       "weight_decay": 0.0153, "bias_scaler": 64.0, "label_smoothing": 0.2,
       "whiten_bias_epochs": 3, "translate": 2, "widths": (64, 256, 256),
       "batchnorm_momentum": 0.6, "scaling_factor": 1 / 9, "tta_level": 2}
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


class BatchNorm(nn.BatchNorm2d):
    """Shift only: the scale stays 1 (airbench trains no BatchNorm weights)."""

    def __init__(self, channels: int, momentum: float):
        super().__init__(channels, eps=1e-12, momentum=1 - momentum)
        self.weight.requires_grad = False


class Conv(nn.Conv2d):
    """'same' padding, no bias; the first in_channels filters start as identities (dirac)."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, padding="same",
                 bias: bool = False):
        super().__init__(c_in, c_out, kernel, padding=padding, bias=bias)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if self.bias is not None:
            self.bias.data.zero_()
        nn.init.dirac_(self.weight.data[: self.weight.size(1)])


class ConvGroup(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, momentum: float):
        super().__init__(Conv(c_in, c_out), nn.MaxPool2d(2), BatchNorm(c_out, momentum),
                         nn.GELU(), Conv(c_out, c_out), BatchNorm(c_out, momentum), nn.GELU())


class Mul(nn.Module):
    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


def make_net(device: torch.device, dtype: torch.dtype) -> nn.Sequential:
    w1, w2, w3 = HYP["widths"]
    m = HYP["batchnorm_momentum"]
    net = nn.Sequential(Conv(3, 24, 2, padding=0, bias=True), nn.GELU(),
                        ConvGroup(24, w1, m), ConvGroup(w1, w2, m), ConvGroup(w2, w3, m),
                        nn.MaxPool2d(3), nn.Flatten(), nn.Linear(w3, 10, bias=False),
                        Mul(HYP["scaling_factor"]))
    net[0].weight.requires_grad = False
    net = net.to(device, dtype).to(memory_format=torch.channels_last)
    for mod in net.modules():
        if isinstance(mod, BatchNorm):
            mod.float()
    return net


def init_whitening(conv: nn.Conv2d, images: torch.Tensor, eps: float = 5e-4) -> None:
    """Filters = the eigenvectors of the 2x2 patch covariance over sqrt(eigenvalue), +/-."""
    c, (h, w) = images.shape[1], conv.weight.shape[2:]
    patches = images.unfold(2, h, 1).unfold(3, w, 1).transpose(1, 3).reshape(-1, c, h, w)
    flat = patches.float().reshape(len(patches), -1)
    values, vectors = torch.linalg.eigh(flat.T @ flat / len(flat), UPLO="U")
    values, vectors = values.flip(0).view(-1, 1, 1, 1), vectors.T.reshape(-1, c, h, w).flip(0)
    scaled = vectors / torch.sqrt(values + eps)
    conv.weight.data[:] = torch.cat((scaled, -scaled)).to(conv.weight.dtype)


def normalise(images_u8: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """uint8 NCHW -> normalised `dtype`, channels-last (airbench's loader)."""
    mean = torch.tensor(CIFAR_MEAN, device=images_u8.device).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD, device=images_u8.device).view(1, 3, 1, 1)
    x = ((images_u8.float() / 255 - mean) / std).to(dtype)
    return x.contiguous(memory_format=torch.channels_last)


def batch_crop(padded: torch.Tensor, size: int) -> torch.Tensor:
    """A random size x size crop per image, by shift class (airbench's r <= 2 branch)."""
    r = (padded.size(-1) - size) // 2
    shifts = torch.randint(-r, r + 1, (len(padded), 2), device=padded.device)
    out = torch.empty((len(padded), padded.size(1), size, size), device=padded.device,
                      dtype=padded.dtype)
    for sy in range(-r, r + 1):
        for sx in range(-r, r + 1):
            mask = (shifts[:, 0] == sy) & (shifts[:, 1] == sx)
            out[mask] = padded[mask, :, r + sy:r + sy + size, r + sx:r + sx + size]
    return out


def epoch_batches(padded: torch.Tensor, labels: torch.Tensor, epoch: int, batch: int):
    """One epoch: translate every image, flip all of them on odd epochs (the images were
    randomly pre-flipped once), shuffle, full batches only."""
    images = batch_crop(padded, padded.size(-1) - 2 * HYP["translate"])
    if epoch % 2 == 1:
        images = images.flip(-1)
    order = torch.randperm(len(images), device=images.device)
    for i in range(len(images) // batch):
        idx = order[i * batch:(i + 1) * batch]
        yield images[idx], labels[idx]


def triangle(steps: int, start: float = 0.2, end: float = 0.07, peak: float = 0.23
             ) -> torch.Tensor:
    """The LR multiplier per step: linear start -> 1 at `peak` of the steps -> end."""
    return torch.from_numpy(np.interp(np.arange(1 + steps), [0, int(peak * steps), steps],
                                      [start, 1.0, end]))


def optimizer(net: nn.Module, batch: int) -> torch.optim.SGD:
    """airbench's decoupled hyperparameters turned into torch SGD's."""
    kilostep = 1024 * (1 + 1 / (1 - HYP["momentum"]))
    lr = HYP["lr"] / kilostep
    wd = HYP["weight_decay"] * batch / kilostep
    lr_biases = lr * HYP["bias_scaler"]
    named = [(k, p) for k, p in net.named_parameters() if p.requires_grad]
    norm = [p for k, p in named if is_norm(net, k)]
    other = [p for k, p in named if not is_norm(net, k)]
    return torch.optim.SGD([{"params": norm, "lr": lr_biases, "weight_decay": wd / lr_biases},
                            {"params": other, "lr": lr, "weight_decay": wd / lr}],
                           momentum=HYP["momentum"], nesterov=True)


def is_norm(net: nn.Module, name: str) -> bool:
    return isinstance(net.get_submodule(name.rpartition(".")[0]), nn.BatchNorm2d)


class Lookahead:
    """Every 5 steps: slow = lerp(slow, fast, 1 - decay); fast = slow."""

    def __init__(self, net: nn.Module):
        self.slow = {k: v.clone() for k, v in net.state_dict().items()}

    def update(self, net: nn.Module, decay: float) -> None:
        for slow, fast in zip(self.slow.values(), net.state_dict().values()):
            if fast.dtype in (torch.half, torch.float):
                slow.lerp_(fast, 1 - decay)
                fast.copy_(slow)


def train(images: torch.Tensor, labels: torch.Tensor, epochs: float = HYP["epochs"],
          batch: int = HYP["batch_size"]) -> nn.Module:
    """Train on normalised images (N,3,32,32) -> the network, as airbench94's train()."""
    net = make_net(images.device, images.dtype)
    init_whitening(net[0], images[:5000])
    pad = HYP["translate"]
    flipped = torch.where(torch.rand(len(images), 1, 1, 1, device=images.device) < 0.5,
                          images.flip(-1), images)
    padded = F.pad(flipped, (pad,) * 4, "reflect")
    total = math.ceil(len(images) // batch * epochs)
    opt = optimizer(net, batch)
    lr_factor = triangle(total)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: float(lr_factor[i]))
    alpha = 0.95 ** 5 * (torch.arange(total + 1) / total) ** 3
    lookahead, step = Lookahead(net), 0
    loss_fn = nn.CrossEntropyLoss(label_smoothing=HYP["label_smoothing"], reduction="none")
    for epoch in range(math.ceil(epochs)):
        net[0].bias.requires_grad = epoch < HYP["whiten_bias_epochs"]
        net.train()
        for x, y in epoch_batches(padded, labels, epoch, batch):
            loss = loss_fn(net(x), y).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step % 5 == 0:
                lookahead.update(net, decay=float(alpha[step]))
            if step >= total:
                lookahead.update(net, decay=1.0)
                return net
    return net


@torch.no_grad()
def evaluate(net: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             tta_level: int = HYP["tta_level"]) -> float:
    """Accuracy with airbench's TTA: 0 none, 1 + mirror, 2 + mirror of 1-px translates."""
    def mirror(x):
        return 0.5 * net(x) + 0.5 * net(x.flip(-1)) if tta_level else net(x)

    def infer(x):
        logits = mirror(x)
        if tta_level < 2:
            return logits
        padded = F.pad(x, (1,) * 4, "reflect")
        shifted = [mirror(padded[:, :, 0:32, 0:32]), mirror(padded[:, :, 2:34, 2:34])]
        return 0.5 * logits + 0.5 * torch.stack(shifted).mean(0)

    net.eval()
    logits = torch.cat([infer(x) for x in images.split(2000)])
    return (logits.argmax(1) == labels).float().mean().item()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(train_u8: torch.Tensor, train_labels: torch.Tensor, eval_u8: torch.Tensor,
        eval_labels: torch.Tensor, device: torch.device, epochs: float = HYP["epochs"],
        warmup: bool = False) -> dict:
    """uint8 NCHW splits -> {acc, seconds, epochs, batch}: the data moved to the device first
    (untimed, as airbench's loader), then whitening + training + TTA evaluation, timed."""
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    train_u8, eval_u8 = train_u8.to(device), eval_u8.to(device)
    train_labels, eval_labels = train_labels.to(device), eval_labels.to(device)
    batch = min(HYP["batch_size"], len(train_u8))  # a smoke test's subset is smaller
    if warmup:  # kernels, cuDNN autotuning and the allocator, as airbench's warmup run
        train(normalise(train_u8, dtype), train_labels, epochs=min(epochs, 1.0), batch=batch)
    synchronize(device)
    start = time.perf_counter()
    net = train(normalise(train_u8, dtype), train_labels, epochs, batch)
    acc = evaluate(net, normalise(eval_u8, dtype), eval_labels)
    synchronize(device)
    return {"acc": acc, "seconds": time.perf_counter() - start, "epochs": epochs,
            "batch": batch}
