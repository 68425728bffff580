"""Experiment tracking: TensorBoard scalars and an HParams entry by default; Weights & Biases
and MLflow on request (`train.tracking: [tensorboard, mlflow]`).

W&B is an optional extra (`pip install reslab[wandb]`); with `WANDB_MODE=offline` it logs to the
run directory without any network, for `wandb sync` later. MLflow (`reslab[mlflow]`) logs to
`$MLFLOW_TRACKING_URI`, by default the local store `file:./mlruns` (`mlflow ui` in that folder
shows it), experiment `$MLFLOW_EXPERIMENT_NAME` or `reslab`; a run started inside a sweep is
nested under the sweep's MLflow run (`RESLAB_MLFLOW_PARENT`, set by the sweep).
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

from ..config import Config
from ..errors import ReslabError
from ..runs.rundir import RunDir

MLFLOW_PARENT = "RESLAB_MLFLOW_PARENT"   # the sweep's MLflow run id, for its trials
RUN_DIR_TAG = "reslab.run_dir"           # an MLflow run's tag: the run directory it logged


def trackers(cfg: Config) -> set[str]:
    """The trackers a config names (train.tracking: one name or a list)."""
    names = cfg.train.tracking
    return {names} if isinstance(names, str) else set(names)


class Tracker:
    def __init__(self, cfg: Config, run_dir: Path):
        self.cfg, self.run_dir = cfg, run_dir
        self.names = trackers(cfg)
        self._tb = self._wandb = self._mlflow = None
        if "wandb" in self.names:
            require_wandb()  # before the first epoch, not after it
        if "mlflow" in self.names:
            self._mlflow = MlflowRun(cfg, run_dir)

    def log(self, row: dict) -> None:
        scalars = {k: v for k, v in row.items() if k != "epoch" and v is not None}
        if self.cfg.train.tensorboard:
            self._tensorboard().add_scalars_flat(scalars, row["epoch"])
        if "wandb" in self.names:
            self._wandb_run().log(scalars, step=row["epoch"])
        if self._mlflow is not None:
            self._mlflow.log_metrics(scalars, row["epoch"])

    def summary(self, result: dict) -> None:
        if self._wandb is not None:
            self._wandb.summary.update({k: v for k, v in result.items() if v is not None})
        if self.cfg.train.tensorboard:
            self._tensorboard().add_hparams(hyperparameters(self.cfg), final_metrics(result))
        if self._mlflow is not None:
            self._mlflow.finish(result)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()

    def _tensorboard(self) -> TensorBoardLog:
        if self._tb is None:
            self._tb = TensorBoardLog(RunDir(self.run_dir).tb)
        return self._tb

    def _wandb_run(self):
        if self._wandb is None:
            wandb = require_wandb()
            self._wandb = wandb.init(project=os.environ.get("WANDB_PROJECT", "reslab"),
                                     name=self.run_dir.name, group=self.cfg.name,
                                     dir=str(self.run_dir), config=self.cfg.to_dict())
        return self._wandb


def require_wandb():
    try:
        import wandb
    except ImportError:
        raise ReslabError("train.tracking = 'wandb': the wandb package is not installed "
                          "(pip install 'reslab[wandb]')") from None
    return wandb


def require_mlflow():
    try:
        import mlflow
    except ImportError:
        raise ReslabError("train.tracking = 'mlflow': the mlflow package is not installed "
                          "(pip install 'reslab[mlflow]')") from None
    return mlflow


# --------------------------------------------------------------------------- HParams
def flat_config(mapping: dict, prefix: str = "") -> dict[str, Any]:
    """{'train.lr': 0.1, ...}: every leaf of a config mapping under its dotted key."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, dict) and value:
            out.update(flat_config(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def hyperparameters(cfg: Config) -> dict[str, bool | int | float | str]:
    """The config as HParams values: numbers, booleans and strings as they are; null, lists
    and mappings as their text (HParams takes no other types)."""
    flat = flat_config(cfg.to_dict())
    return {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in flat.items()}


def final_metrics(result: dict) -> dict[str, float]:
    """result.json's numbers (accuracies, losses, calibration, params, seconds)."""
    return {k: float(v) for k, v in result.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


class TensorBoardLog:
    def __init__(self, path: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(path))

    def add_scalars_flat(self, scalars: dict, step: int) -> None:
        for key, value in scalars.items():
            # train_loss -> train/loss: TensorBoard groups the curves by split.
            self.writer.add_scalar(key.replace("_", "/", 1), value, step)
        self.writer.flush()

    def add_hparams(self, hparams: dict, metrics: dict[str, float]) -> None:
        """One HParams entry in this log's own folder (SummaryWriter.add_hparams would make a
        timestamped subfolder): the table row, plus each metric as a scalar it points at."""
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        tags = {f"hparams/{k}": v for k, v in metrics.items()}
        for summary in hparams_summary(hparams, tags):
            self.writer.file_writer.add_summary(summary)
        for tag, value in tags.items():
            self.writer.add_scalar(tag, value)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


# --------------------------------------------------------------------------- MLflow
def mlflow_client():
    """(client, experiment id) of `$MLFLOW_TRACKING_URI` (default: the local store
    file:./mlruns) and `$MLFLOW_EXPERIMENT_NAME` (default: reslab)."""
    require_mlflow()
    from mlflow.tracking import MlflowClient

    uri = os.environ.get("MLFLOW_TRACKING_URI") or Path("mlruns").resolve().as_uri()
    if uri.startswith("file:"):
        # Recent MLflow refuses its file store unless asked: reslab's local default asks.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=uri)
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "reslab")
    found = client.get_experiment_by_name(name)
    return client, found.experiment_id if found else client.create_experiment(name)


class MlflowRun:
    """One MLflow run per reslab run: the config as parameters, each epoch's metrics, and at
    the end the result (metrics) and the run's files (artifacts)."""

    def __init__(self, cfg: Config, run_dir: Path, parent: str | None = None):
        self.client, experiment = mlflow_client()
        parent = parent or os.environ.get(MLFLOW_PARENT)
        tags = {RUN_DIR_TAG: str(run_dir.resolve()),
                **({"mlflow.parentRunId": parent} if parent else {})}
        self.run_dir = run_dir
        self.id = self.client.create_run(experiment, run_name=run_dir.name,
                                         tags=tags).info.run_id
        self.log_params(hyperparameters(cfg))

    def log_params(self, params: dict) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 per batch
            self.client.log_batch(self.id, params=items[start:start + 100])

    def log_metrics(self, scalars: dict, step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, step or 0) for k, v in scalars.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if metrics:
            self.client.log_batch(self.id, metrics=metrics)

    def finish(self, result: dict) -> None:
        # result.* apart from the per-epoch curves (test_acc is both a curve and a result).
        self.log_metrics({f"result.{k}": v for k, v in final_metrics(result).items()})
        # The run's records (RunDir.tracked_files); its report follows: log_report_artifacts.
        for path in RunDir(self.run_dir).tracked_files():
            if path.is_file():
                self.client.log_artifact(self.id, str(path))
        self.client.set_terminated(self.id)


def log_report_artifacts(run_dir: Path) -> None:
    """The run's report (written after training) onto its MLflow run."""
    client, experiment = mlflow_client()
    runs = client.search_runs([experiment], f"tags.`{RUN_DIR_TAG}` = '{run_dir.resolve()}'",
                              max_results=1, order_by=["attributes.start_time DESC"])
    run = RunDir(run_dir)
    if runs:
        for path in (run.report_html, run.report_md):
            if path.is_file():
                client.log_artifact(runs[0].info.run_id, str(path))
        if run.plots.is_dir():
            client.log_artifacts(runs[0].info.run_id, str(run.plots), run.plots.name)


def start_parent_run(name: str, folder: Path) -> str:
    """An MLflow run for a sweep; its id goes to the trials through RESLAB_MLFLOW_PARENT."""
    client, experiment = mlflow_client()
    run_id = client.create_run(experiment, run_name=name,
                               tags={RUN_DIR_TAG: str(folder.resolve())}).info.run_id
    os.environ[MLFLOW_PARENT] = run_id
    return run_id


def finish_parent_run(run_id: str, files: list[Path]) -> None:
    client, _ = mlflow_client()
    for path in files:
        if path.is_file():
            client.log_artifact(run_id, str(path))
    client.set_terminated(run_id)
    os.environ.pop(MLFLOW_PARENT, None)
