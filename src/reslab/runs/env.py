"""The environment a run was recorded in (`env.json`), and what differs between runs.

Times and even results depend on the device, the kernels the CPU runs (AVX2 vs AVX512 vs
AMX, native bf16 or not), library versions and threads; `compare` warns when entries differ
in any of these, because their seconds per epoch are then not comparable.
"""
from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import shlex
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import torch

GIT_TIMEOUT_S = 5
# CPU features that decide which training kernels run: x86 vector/matrix units, ARM ones.
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16",
             "amx_fp16", "asimd", "sve", "sve2", "bf16", "i8mm")
# Environment variables that override which kernels run (recorded when set).
ISA_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")
MAC_FLAGS = {"hw.optional.avx2_0": "avx2", "hw.optional.avx512f": "avx512f",
             "hw.optional.neon": "asimd", "hw.optional.arm.FEAT_BF16": "bf16",
             "hw.optional.arm.FEAT_I8MM": "i8mm"}
# Fields `env_differences` compares, as dotted paths into env.json.
COMPARED = ("device", "cpu", "cpu_isa.capability", "cpu_isa.mkldnn_bf16", "cpu_isa.env",
            "threads", "torch", "cuda", "cudnn", "torchvision", "timm", "python", "reslab",
            "git.commit", "git.dirty")


def collect_env(argv: list[str] | None = None, threads: int | None = None,
                device: str | torch.device | None = None) -> dict:
    """Everything `env.json` records. `argv` defaults to sys.argv, `threads` to torch's
    intra-op threads, `device` to the one `auto` picks (CUDA, then the CPU).

    -> {reslab, python, torch, torchvision, timm, optuna, cuda, cudnn, device, cpu, cpu_isa,
        threads, os, git, command}; cuda/cudnn are None without a usable CUDA device; git is
        None outside a git checkout (see `git_state`).
    """
    cpu = cpu_model()
    cuda = torch.cuda.is_available()
    return {
        "reslab": _version("reslab"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "timm": _version("timm"),
        "optuna": _version("optuna"),
        "cuda": torch.version.cuda if cuda else None,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "device": device_name(device, cpu),
        "cpu": cpu,
        "cpu_isa": cpu_isa(),
        "threads": threads if threads is not None else torch.get_num_threads(),
        "os": platform.platform(),
        "git": git_state(Path(__file__).resolve().parents[1]),
        "command": shlex.join(sys.argv if argv is None else argv),
        # The GPUs this process was given (run executor: one worker per listed GPU; Ray).
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }


def _version(package: str) -> str | None:
    # Metadata, not an import: importing timm or optuna costs seconds for a version string.
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def device_name(device: str | torch.device | None, cpu: str) -> str:
    """The GPU's name for CUDA devices, 'Apple MPS (<cpu>)' for MPS, else the CPU model."""
    dev = torch.device(device) if device is not None else (
        torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    if dev.type == "mps":
        return f"Apple MPS ({cpu})"
    return cpu


def cpu_model() -> str:
    """The CPU's marketing name (Linux /proc/cpuinfo, macOS sysctl), else the architecture."""
    info = _read_cpuinfo()
    for key in ("model name", "Hardware", "Model"):  # x86, then ARM boards
        match = re.search(rf"^{key}\s*:\s*(.+)$", info, re.MULTILINE)
        if match:
            return match.group(1).strip()
    if sys.platform == "darwin":
        brand = _run(["sysctl", "-n", "machdep.cpu.brand_string"])
        if brand:
            return brand
    return platform.processor() or platform.machine() or "unknown"


def _read_cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""


def cpu_isa() -> dict:
    """What the CPU kernels use: ATen's dispatch level (honours ATEN_CPU_CAPABILITY), the
    training-relevant CPU flags, whether oneDNN runs bf16 natively (False under
    ONEDNN_MAX_CPU_ISA=AVX2 even on an AVX512-BF16 CPU) and the overriding variables set."""
    return {"capability": torch.backends.cpu.get_cpu_capability(),
            "flags": cpu_flags(),
            "mkldnn_bf16": _mkldnn_bf16(),
            "env": {k: os.environ[k] for k in ISA_ENV if k in os.environ}}


def cpu_flags(cpuinfo: str | None = None) -> list[str]:
    """ISA_FLAGS the CPU has, in ISA_FLAGS order: from the `flags` (x86) or `Features` (ARM)
    line of /proc/cpuinfo, or macOS sysctl hw.optional keys."""
    info = _read_cpuinfo() if cpuinfo is None else cpuinfo
    match = re.search(r"^(?:flags|Features)\s*:(.*)$", info, re.MULTILINE)
    if match:
        have = set(match.group(1).split())
    elif cpuinfo is None and sys.platform == "darwin":
        have = {flag for key, flag in MAC_FLAGS.items() if _run(["sysctl", "-n", key]) == "1"}
    else:
        have = set()
    return [flag for flag in ISA_FLAGS if flag in have]


def _mkldnn_bf16() -> bool | None:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # builds without oneDNN (some ARM / macOS wheels)
        return None


def git_state(source_dir: Path) -> dict | None:
    """{commit, dirty} when `source_dir` (the reslab package) is tracked in a git checkout,
    else None. `dirty`: the package's sources differ from the commit (modified, staged or
    untracked non-ignored files under `source_dir`; run outputs elsewhere don't count).
    None too when git is missing, slow (GIT_TIMEOUT_S) or refuses the repository."""
    # A site-packages install inside some other project's checkout is not reslab's history:
    # require the package itself to be tracked.
    if _run(["git", "-C", str(source_dir), "ls-files", "--error-unmatch", "--",
             "__init__.py"]) is None:
        return None
    commit = _run(["git", "-C", str(source_dir), "rev-parse", "HEAD"])
    status = _run(["git", "-C", str(source_dir), "status", "--porcelain", "--", "."])
    if not commit or status is None:
        return None
    return {"commit": commit, "dirty": bool(status)}


def _run(cmd: list[str]) -> str | None:
    """stdout of `cmd` stripped, or None if it is missing, fails or times out."""
    # No optional locks: `git status` must not take index.lock under a concurrent git command.
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"}
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=GIT_TIMEOUT_S,
                              env=env, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def env_differences(envs: Mapping[str, Mapping | None]) -> list[str]:
    """One line per COMPARED field whose value differs between entries ({name: env.json}),
    e.g. "threads differs: 8 (a, b); 16 (c)". Empty when all agree. Entries without an
    env.json (None) are left out; a null value shows as 'none', a field an (older) env.json
    lacks as 'unknown'."""
    envs = {name: env for name, env in envs.items() if env}
    lines = []
    for field in COMPARED:
        groups: dict[str, list[str]] = {}
        for name, env in envs.items():
            groups.setdefault(_format(_lookup(env, field)), []).append(name)
        if len(groups) > 1:
            lines.append(f"{field} differs: " + "; ".join(
                f"{value} ({', '.join(names)})" for value, names in groups.items()))
    return lines


_MISSING = object()


def _lookup(env: Mapping, dotted: str):
    value = env
    for part in dotted.split("."):
        if value is None:  # e.g. git: null outside a checkout -> its commit is none too
            return None
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _format(value) -> str:
    if value is _MISSING:
        return "unknown"
    if value is None:
        return "none"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={v}" for k, v in sorted(value.items())) or "none"
    return str(value)
