"""How close a training step gets to the machine's matmul peak.

Measures fp32 (and bf16, where the CPU has it) matmul GFLOP/s in this process, then the achieved
GFLOP/s of a full training step (forward + backward + SGD; FLOPs from torch's flop counter) for
ResNet-18 width 42 and ResNet-20 in eager NCHW, channels_last and compiled modes, each as a
fraction of the matmul figure of the same precision. Last line: `best fraction resnet18-w42: F`.

    python benchmarks/step_efficiency.py [--batch 128] [--steps 5] [--no-compile]
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from reslab.config import load_config
from reslab.engine.device import amp_dtype
from reslab.models import build_model

MODELS = {"resnet18-w42": ["model.arch=resnet18", "model.width=42"],
          "resnet20": ["model.arch=resnet20"]}


def matmul_gflops(dtype: torch.dtype, n: int = 2048, reps: int = 10) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(2):
        a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def step_fn(model, opt, x, y, amp):
    def step():
        with torch.autocast("cpu", dtype=amp, enabled=amp is not None):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def step_flops(model, x, y) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        F.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def measure(overrides, mode: str, batch: int, steps: int, amp) -> tuple[float, int]:
    torch.manual_seed(0)
    model = build_model(load_config(None, overrides).model, 10, 3)
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    if mode != "eager-nchw":
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(
            memory_format=torch.channels_last)
    flops = step_flops(model, x, y)
    run = model if mode != "compiled" else torch.compile(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, foreach=True)
    step = step_fn(run, opt, x, y, amp)
    for _ in range(2):  # warm-up (and compilation)
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps, flops


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--no-compile", action="store_true")
    args = ap.parse_args()
    bf16 = amp_dtype("auto", torch.device("cpu"))
    peaks = {None: matmul_gflops(torch.float32)}
    print(f"threads {torch.get_num_threads()}, fp32 matmul {peaks[None]:.0f} GFLOP/s", end="")
    if bf16 is not None:
        peaks[bf16] = matmul_gflops(bf16)
        print(f", bf16 matmul {peaks[bf16]:.0f} GFLOP/s", end="")
    print()
    modes = ["eager-nchw", "channels_last"] + ([] if args.no_compile else ["compiled"])
    best = {}
    for name, overrides in MODELS.items():
        for amp in peaks:
            for mode in modes:
                seconds, flops = measure(overrides, mode, args.batch, args.steps, amp)
                achieved = flops / seconds / 1e9
                frac = achieved / peaks[amp]
                label = f"{mode}{'+bf16' if amp else ''}"
                print(f"{name:13} {label:20} {args.batch / seconds:7.0f} img/s "
                      f"{achieved:6.0f} GFLOP/s  {frac:.2f} of {'bf16' if amp else 'fp32'} "
                      f"matmul", flush=True)
                best[name] = max(best.get(name, (0, ""))[0], frac), label
    for name in sorted(best, key=lambda n: n == "resnet18-w42"):  # the headline line last
        frac, label = best[name]
        print(f"best fraction {name}: {frac:.2f} ({label})")


if __name__ == "__main__":
    main()
