"""Worker slots: which processes the local executor starts, each with its own environment.

`--gpus 0,1` -> one worker per listed GPU (CUDA_VISIBLE_DEVICES=0, =1), `--runs-per-gpu K`
-> K workers per GPU; on a CUDA machine without --gpus, every visible GPU (one worker each,
or --workers spread over them); else `--workers N` CPU workers sharing the cores
(OMP_NUM_THREADS split evenly unless set). One CPU worker trains in the calling process.
"""
from __future__ import annotations

import os

from ..errors import ReslabError
from ..utils import available_cores
from .spec import ExecOptions

# Tests and dry runs on CPU machines: pretend this many GPUs are visible (nothing runs on
# them: the runs' own device setting still finds no CUDA and trains on the CPU).
FAKE_GPU_COUNT = "RESLAB_FAKE_GPU_COUNT"


def visible_gpu_count() -> int:
    if os.environ.get(FAKE_GPU_COUNT):
        return int(os.environ[FAKE_GPU_COUNT])
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def parse_gpus(text: str | None) -> tuple[str, ...] | None:
    """'0,1,3' -> ('0', '1', '3'); refused: empty items, non-integers, repeats."""
    if text is None:
        return None
    items = [t.strip() for t in text.split(",")]
    if not all(t.isdigit() for t in items) or len(set(items)) != len(items):
        raise ReslabError(f"--gpus {text}: expected distinct GPU indices separated by commas, "
                          "e.g. --gpus 0,1")
    return tuple(items)


def worker_slots(options: ExecOptions) -> list[dict[str, str]]:
    """One environment per worker process (an empty dict: the parent's as it is)."""
    if options.workers < 1 or options.runs_per_gpu < 1:
        raise ReslabError(f"--workers {options.workers} / --runs-per-gpu "
                          f"{options.runs_per_gpu}: expected 1 or more")
    gpus, count = options.gpus, visible_gpu_count()
    if gpus is not None:
        missing = [g for g in gpus if int(g) >= count]
        if missing:
            raise ReslabError(f"--gpus {','.join(gpus)}: GPU {missing[0]} does not exist "
                              f"(this machine shows {count} GPU(s))")
        return [{"CUDA_VISIBLE_DEVICES": g} for g in gpus for _ in range(options.runs_per_gpu)]
    if count > 1 or (count == 1 and options.workers > 1):
        # A CUDA machine without --gpus: every visible GPU, --workers spread over them.
        per_gpu = max(options.runs_per_gpu, -(-options.workers // count))
        return [{"CUDA_VISIBLE_DEVICES": str(i)} for i in range(count) for _ in range(per_gpu)]
    if options.workers == 1:
        return [{}]  # one worker: the runs train in this process
    threads = str(max(1, available_cores() // options.workers))
    return [{"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS") or threads}
            for _ in range(options.workers)]
