"""The run directory: the contract between `train` and every command after it."""
from __future__ import annotations

import json
import time
from pathlib import Path

from ..config import Config
from ..errors import ReslabError
from ..utils import atomic_write_text, read_json, read_jsonl, write_json


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    config = property(lambda self: self.path / "config.yaml")
    classes = property(lambda self: self.path / "classes.json")
    metrics = property(lambda self: self.path / "metrics.jsonl")
    result = property(lambda self: self.path / "result.json")
    last = property(lambda self: self.path / "last.pt")
    best = property(lambda self: self.path / "best.pt")
    tb = property(lambda self: self.path / "tb")

    @staticmethod
    def new(cfg: Config, out: str | Path | None) -> "RunDir":
        if out is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            name = cfg.name or f"{cfg.data.source}-{cfg.model.arch.replace(':', '-')}"
            out = Path("runs") / f"{name}-{stamp}"
        run = RunDir(out)
        if run.path.exists() and any(run.path.iterdir()):
            if run.last.exists() or run.metrics.exists():
                raise ReslabError(f"--out {run.path} already holds a run; use --resume "
                                  f"{run.path} to continue it or choose another directory")
        run.path.mkdir(parents=True, exist_ok=True)
        return run

    @staticmethod
    def existing(path: str | Path) -> "RunDir":
        run = RunDir(path)
        if not run.config.exists():
            raise ReslabError(f"{run.path} is not a run directory (no config.yaml)")
        return run

    def write_start(self, cfg: Config, classes: list[str]) -> None:
        atomic_write_text(self.config, cfg.to_yaml())
        write_json(self.classes, classes)

    def read_classes(self) -> list[str]:
        if not self.classes.exists():
            raise ReslabError(f"{self.path}: classes.json missing; not a complete run")
        return read_json(self.classes)

    def append_metrics(self, row: dict) -> None:
        with open(self.metrics, "a") as f:
            f.write(json.dumps(row) + "\n")

    def truncate_metrics(self, last_epoch: int) -> list[dict]:
        """Keep rows up to `last_epoch` (a resumed run rewrites the epochs after its checkpoint)."""
        rows = [r for r in read_jsonl(self.metrics) if r["epoch"] <= last_epoch]
        atomic_write_text(self.metrics, "".join(json.dumps(r) + "\n" for r in rows))
        return rows

    def write_result(self, result: dict) -> None:
        write_json(self.result, result)
