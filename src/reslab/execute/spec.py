"""What the run executor is given (RunSpec) and what it reports back (Outcome)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Keys that say how a run was executed, not what it computes: a finished run whose config
# differs from its spec only in these is reused (a worker count sets the threads, a GPU the
# device).
EXECUTION_KEYS = {("train", "threads"), ("train", "progress"), ("train", "report"),
                  ("train", "tensorboard"), ("train", "tracking"), ("train", "device"),
                  ("data", "cache_dir"), ("data", "workers")}


@dataclass(frozen=True)
class RunSpec:
    """One run to have finished: its resolved config (Config.to_dict()) and directory.

    `after`: names of specs that must finish first. `robustness`: (suite, raw) evaluated
    after training when the run lacks those rows. Plain data, so it crosses processes and
    Ray tasks as it is."""
    name: str
    config: dict[str, Any]
    run_dir: str
    after: tuple[str, ...] = ()
    robustness: tuple[str, bool] | None = None

    @property
    def path(self) -> Path:
        return Path(self.run_dir)


@dataclass
class Outcome:
    """What became of a spec: trained | resumed | reused | busy (claimed by a live process
    elsewhere: try again later) | failed."""
    name: str
    status: str
    detail: str = ""
    device: str | None = None           # the CUDA_VISIBLE_DEVICES the run was given
    holder: str | None = None           # busy: who holds the claim
    exit_code: int = 2                  # failed: the error's exit code
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status in ("trained", "resumed", "reused")


@dataclass(frozen=True)
class ExecOptions:
    """The flags every multi-run command takes (cli/_parsers.add_executor_flags)."""
    workers: int = 1
    gpus: tuple[str, ...] | None = None     # --gpus 0,1: one worker per listed GPU
    runs_per_gpu: int = 1
    executor: str = "local"                 # local | ray | ray://HOST:PORT | ray:HOST:PORT
    quiet: bool = False
    isolate: bool = False                   # one CPU worker too in its own process


def first_difference(old: dict, new: dict, prefix: str = "") -> tuple[str, Any, Any] | None:
    """The first key (dotted, in the new config's order) whose value differs, ignoring
    EXECUTION_KEYS; None when the two configs compute the same run."""
    for key in [*new, *(k for k in old if k not in new)]:
        dotted = f"{prefix}{key}"
        if tuple(dotted.split(".")) in EXECUTION_KEYS:
            continue
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found = first_difference(a, b, dotted + ".")
            if found:
                return found
        elif a != b:
            return dotted, a, b
    return None
