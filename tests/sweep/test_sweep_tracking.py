"""A sweep's TensorBoard HParams entries (SWEEP/tb/trial-N/, one per finished trial, read back
with TensorBoard's event reader) and its trials' MLflow runs nested under the sweep's run."""
from __future__ import annotations

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from reslab.cli import main


def hparams_of(folder) -> tuple[dict, dict]:
    events = EventAccumulator(str(folder))
    events.Reload()
    start = plugin_data_pb2.HParamsPluginData.FromString(
        events.PluginTagToContent("hparams")["_hparams_/session_start_info"]).session_start_info
    metrics = {t: events.Scalars(t)[-1].value for t in events.Tags()["scalars"]}
    return {k: v.number_value for k, v in start.hparams.items()}, metrics


def test_sweep_writes_hparams_per_trial_and_nests_mlflow_runs(write_sweep, tmp_path,
                                                               monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    store = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "sweep-test")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    path = write_sweep(name="tracked", sampler="grid",
                       base_train={"tracking": ["tensorboard", "mlflow"]},
                       space={"train.lr": {"values": [0.05, 0.1]}})
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "--workers", "1"]) == 0
    lrs = {}
    for n in (0, 1):
        hparams, metrics = hparams_of(out / "tb" / f"trial-{n}")
        assert list(hparams) == ["train.lr"]
        assert 0.0 <= metrics["hparams/best_val_acc"] <= 1.0
        lrs[n] = hparams["train.lr"]
    assert sorted(lrs.values()) == pytest.approx([0.05, 0.1])

    client = mlflow.tracking.MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("sweep-test").experiment_id
    runs = client.search_runs([experiment])
    [parent] = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.run_name == "tracked" and len(children) == 2
    assert {c.data.params["train.lr"] for c in children} == {"0.05", "0.1"}
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"trials.csv"}
