"""Where and in what precision a run computes: device, threads, autocast, loss scaling,
deterministic kernels. Shared by training and evaluation, so both run a model the same way."""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import torch

from ..utils import available_cores


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(name)


def configure_threads(threads: int | None, local_ranks: int = 1) -> int:
    """`train.threads`, else $OMP_NUM_THREADS, else the cores this process may run on,
    shared evenly between local ranks."""
    n = threads or int(os.environ.get("OMP_NUM_THREADS") or 0) \
        or max(1, available_cores() // max(1, local_ranks))
    torch.set_num_threads(n)
    return n


def amp_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype: bf16 only where the hardware runs it natively (Ampere+ GPUs,
    AVX512-BF16/AMX CPUs), fp16 (with a GradScaler) on other CUDA GPUs, else fp32 (None)."""
    if setting == "off":
        return None
    if setting in ("bf16", "fp16"):
        return torch.bfloat16 if setting == "bf16" else torch.float16
    if device.type == "cuda":
        # The default counts emulated bf16 (pre-Ampere GPUs such as a T4), which is slow.
        native = torch.cuda.is_bf16_supported(including_emulation=False)
        return torch.bfloat16 if native else torch.float16
    if device.type == "cpu":
        try:  # False under ONEDNN_MAX_CPU_ISA=AVX2 even on an AVX512-BF16 machine
            return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else None
        except (AttributeError, RuntimeError):
            return None
    return None


def autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def grad_scaler(amp: torch.dtype | None, device: torch.device) -> torch.amp.GradScaler:
    """fp16 gradients underflow without loss scaling; for every other precision a no-op."""
    return torch.amp.GradScaler(device.type, enabled=amp == torch.float16)


@contextmanager
def deterministic_algorithms(enabled: bool) -> Iterator[None]:
    """`train.deterministic`: deterministic kernels only (CUDA's atomics-based ones refuse),
    for the duration of a run; the caller's settings come back afterwards. CPU training is
    run-to-run identical without it for a fixed thread count."""
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
              torch.backends.cudnn.benchmark)
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[1:]
