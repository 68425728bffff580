"""Tracking: a run's HParams entry (read back with TensorBoard's event reader), metrics.csv
beside metrics.jsonl, and MLflow (read back with the MLflow client from a local file store)."""
from __future__ import annotations

import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from reslab import train
from reslab.utils import read_csv


def read_hparams(folder) -> tuple[dict, dict[str, float]]:
    """(hyperparameters, {metric tag: value}) of the HParams entry in a TensorBoard folder."""
    events = EventAccumulator(str(folder))
    events.Reload()
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/session_start_info"]).session_start_info
    hparams = {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
               for k, v in start.hparams.items()}
    metrics = {tag: events.Scalars(tag)[-1].value for tag in events.Tags()["scalars"]
               if tag.startswith("hparams/")}
    return hparams, metrics


def test_a_run_logs_its_hparams_with_its_final_metrics(tmp_path, fast_config):
    cfg = fast_config(train={"tensorboard": True, "lr": 0.04})
    result = train(cfg, out=tmp_path / "run", quiet=True)
    hparams, metrics = read_hparams(tmp_path / "run" / "tb")
    assert hparams["train.lr"] == pytest.approx(0.04)
    assert hparams["model.arch"] == "resnet20" and hparams["train.nesterov"] == 0  # bool: 0/1
    assert hparams["data.crop_scale"] == "None"
    assert metrics["hparams/best_val_acc"] == pytest.approx(result["best_val_acc"])
    assert metrics["hparams/test_acc"] == pytest.approx(result["test_acc"])


def test_metrics_csv_beside_metrics_jsonl(tmp_path, fast_config):
    train(fast_config(), out=tmp_path / "run", quiet=True)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    table = read_csv(tmp_path / "run" / "metrics.csv")
    assert list(table[0]) == list(rows[0])
    assert [{k: float(v) for k, v in r.items()} for r in table] == \
        [{k: float(v) for k, v in r.items()} for r in rows]


def test_tracking_list_with_mlflow_reads_back_from_the_local_store(tmp_path, fast_config,
                                                                   monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    store = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "tracking-test")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)  # reslab opts in for file:
    cfg = fast_config(train={"tracking": ["tensorboard", "mlflow"], "report": True})
    result = train(cfg, out=tmp_path / "run", quiet=True)
    client = mlflow.tracking.MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("tracking-test")
    [found] = client.search_runs([experiment.experiment_id])
    assert found.info.status == "FINISHED" and found.info.run_name == "run"
    assert found.data.params["train.lr"] == "0.05"
    assert found.data.params["train.tracking"] == "['tensorboard', 'mlflow']"
    assert found.data.metrics["result.best_val_acc"] == pytest.approx(result["best_val_acc"])
    curve = client.get_metric_history(found.info.run_id, "val_acc")
    assert [m.step for m in curve] == [1, 2]
    names = {a.path for a in client.list_artifacts(found.info.run_id)}
    assert {"config.yaml", "metrics.jsonl", "metrics.csv", "result.json", "best.pt",
            "last.pt", "report.html"} <= names


def test_mlflow_missing_is_one_line(tmp_path, fast_config, monkeypatch, cli):
    import builtins

    real_import = builtins.__import__

    def no_mlflow(name, *args, **kwargs):
        if name.split(".")[0] == "mlflow":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mlflow)
    cfg = fast_config(train={"tracking": "mlflow"})
    (tmp_path / "c.yaml").write_text(json.dumps(cfg))
    code, _, err = cli("train", tmp_path / "c.yaml", "--out", tmp_path / "run", "--quiet")
    assert code == 2
    assert err == ("reslab train: error: train.tracking = 'mlflow': the mlflow package is not "
                   "installed (pip install 'reslab[mlflow]')\n")
