"""What portability costs: the strided-1x1 rewrite and `train.deterministic`, side by side.

(1) Training-step time of a model with EVERY strided 1x1 convolution rewritten as subsample +
stride-1 conv (models/safe_conv.py; reslab only rewrites those with < 16 input channels)
against the direct convolution, on the widths where reslab keeps the direct form.
(2) Training-step time with `torch.use_deterministic_algorithms(True)` (`train.deterministic`)
against the default.
Rounds alternate the two arms so machine drift hits both; the ratio is the median of rounds.
Run it natively and under ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2.
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from reslab.config import load_config
from reslab.engine.device import deterministic_algorithms
from reslab.models import build_model
from reslab.models.safe_conv import SubsampledPointwiseConv

MODELS = {"resnet20-w16": ["model.arch=resnet20", "model.width=16"],
          "resnet18-w42": ["model.arch=resnet18", "model.width=42"]}


def rewrite_all(model: nn.Module) -> nn.Module:
    """The rewrite on every strided 1x1 conv, whatever its channel count."""
    for m in model.modules():
        if type(m) is nn.Conv2d and m.kernel_size == (1, 1) and m.stride != (1, 1):
            m.__class__ = SubsampledPointwiseConv
    return model


def step_seconds(model: nn.Module, batch: int, steps: int,
                 deterministic: bool = False) -> Callable[[], float]:
    """A closure timing `steps` channels-last fp32 SGD steps on random CIFAR-sized data."""
    model = model.to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    def timed() -> float:
        with deterministic_algorithms(deterministic):
            step()  # warm-up: oneDNN picks and caches its kernels
            start = time.perf_counter()
            for _ in range(steps):
                step()
            return (time.perf_counter() - start) / steps
    return timed


def ratio(a: Callable[[], float], b: Callable[[], float], rounds: int) -> tuple[float, float]:
    """Median over interleaved rounds of b/a, and a's median seconds per step."""
    pairs = [(a(), b()) for _ in range(rounds)]
    return (statistics.median(tb / ta for ta, tb in pairs),
            statistics.median(ta for ta, _ in pairs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    print(f"threads {torch.get_num_threads()}, batch {args.batch}, {args.steps} steps x "
          f"{args.rounds} interleaved rounds")
    for name, overrides in MODELS.items():
        torch.manual_seed(0)
        direct = build_model(load_config(None, overrides).model, 10, 3)
        rewritten = rewrite_all(build_model(load_config(None, overrides).model, 10, 3))
        r, s = ratio(step_seconds(direct, args.batch, args.steps),
                     step_seconds(rewritten, args.batch, args.steps), args.rounds)
        print(f"{name}: rewrite / direct = {r:.3f} ({s * 1000:.0f} ms per direct step)",
              flush=True)
        r, s = ratio(step_seconds(direct, args.batch, args.steps),
                     step_seconds(direct, args.batch, args.steps, deterministic=True),
                     args.rounds)
        print(f"{name}: deterministic / default = {r:.3f}", flush=True)


if __name__ == "__main__":
    main()
