import json

import pytest
import torch

import reslab
from reslab.config import EarlyStopConfig
from reslab.training.state import EarlyStopping
from reslab.utils import read_jsonl

TIMING_KEYS = {"seconds"}


def strip_times(rows):
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


def test_seed_early_stopping_rule():
    # "stop when val accuracy improves by < 0.005 for 3 consecutive epochs after epoch 10"
    rule = EarlyStopping(EarlyStopConfig(enabled=True, monitor="val_acc", min_delta=0.005,
                                         patience=3, start_epoch=10))
    accs = [0.1 * i for i in range(1, 9)] + [0.80, 0.801, 0.802, 0.803, 0.804]
    stops = [rule.update(epoch, acc) for epoch, acc in enumerate(accs, start=1)]
    # Epochs 9 and 10 don't improve either, but count only after epoch 10: 11, 12, 13.
    assert stops.index(True) + 1 == 13


def test_early_stopping_resets_on_improvement_and_handles_loss():
    rule = EarlyStopping(EarlyStopConfig(enabled=True, monitor="val_loss", min_delta=0.01,
                                         patience=2))
    assert [rule.update(e, v) for e, v in enumerate([1.0, 0.995, 0.9, 0.899, 0.898], 1)] == [
        False, False, False, False, True]


def test_run_directory_contract(tmp_path, fast_config, capsys):
    result = reslab.train(fast_config(), out=tmp_path / "run")
    run = tmp_path / "run"
    for name in ("config.yaml", "metrics.jsonl", "classes.json", "best.pt", "last.pt",
                 "result.json", "confusion_matrix.csv", "misclassified.npz"):
        assert (run / name).exists(), name
    rows = read_jsonl(run / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2]
    assert set(rows[0]) >= {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr",
                            "seconds", "test_acc"}
    saved = json.loads((run / "result.json").read_text())
    assert saved == result
    for key in ("best_val_acc", "final_val_acc", "test_acc", "params", "epochs_run",
                "stop_reason", "seconds_per_epoch"):
        assert key in saved
    assert saved["epochs_run"] == 2 and saved["stop_reason"] == "completed"
    assert saved["best_val_acc"] == max(r["val_acc"] for r in rows)
    assert json.loads((run / "classes.json").read_text()) == [str(i) for i in range(10)]
    out = capsys.readouterr().out
    assert "Epoch 1, Train loss " in out and ", Val loss " in out and ", Train acc " in out
    ckpt = torch.load(run / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["classes"] == [str(i) for i in range(10)]


def test_same_seed_gives_identical_metrics(tmp_path, fast_config):
    cfg = fast_config(data={"augment": "crop-flip-gray"}, model={"dropout": 0.1})
    reslab.train(cfg, out=tmp_path / "a", quiet=True)
    reslab.train(cfg, out=tmp_path / "b", quiet=True)
    a, b = (strip_times(read_jsonl(tmp_path / n / "metrics.jsonl")) for n in "ab")
    assert a == b
    reslab.train(cfg, out=tmp_path / "c", overrides=["train.seed=1"], quiet=True)
    assert strip_times(read_jsonl(tmp_path / "c" / "metrics.jsonl")) != a


class Interrupt(Exception):
    pass


def test_interrupted_and_resumed_run_equals_uninterrupted(fast_config, cut_and_resume):
    cfg = fast_config(train={"epochs": 4, "scheduler": "onecycle"}, model={"dropout": 0.1},
                      data={"augment": "crop-flip"})
    full, resumed, a, b = cut_and_resume(cfg)
    assert a == b
    assert resumed["test_acc"] == full["test_acc"]


def test_resume_extends_a_finished_run_and_drops_rows_past_the_checkpoint(tmp_path, fast_config):
    cfg = fast_config(train={"epochs": 3})
    reslab.train(cfg, out=tmp_path / "r", quiet=True)
    metrics = tmp_path / "r" / "metrics.jsonl"
    rows = read_jsonl(metrics)
    assert torch.load(tmp_path / "r" / "last.pt", weights_only=True)["epoch"] == 3
    # Epoch 4's row was logged but the process died before its checkpoint landed.
    with open(metrics, "a") as f:
        f.write(json.dumps({**rows[-1], "epoch": 4, "val_acc": -1.0}) + "\n")
    reslab.train(resume=tmp_path / "r", overrides=["train.epochs=4"], quiet=True)
    assert [r["epoch"] for r in read_jsonl(metrics)] == [1, 2, 3, 4]
    assert strip_times(read_jsonl(metrics)[:3]) == strip_times(rows)
    assert read_jsonl(metrics)[3]["val_acc"] >= 0


def test_early_stopping_ends_training(tmp_path, fast_config):
    cfg = fast_config(train={"epochs": 30, "lr": 1e-5, "scheduler": "none",
                             "early_stopping": {"enabled": True, "monitor": "val_acc",
                                                "min_delta": 0.5, "patience": 2,
                                                "start_epoch": 1}})
    result = reslab.train(cfg, out=tmp_path / "es", quiet=True)
    assert result["stop_reason"] == "early_stopping" and result["epochs_run"] == 3


def test_divergence_stops_at_once(tmp_path, fast_config):
    cfg = fast_config(train={"epochs": 5, "lr": 90.0, "momentum": 0.0, "scheduler": "none",
                             "weight_decay": 0.0})
    result = reslab.train(cfg, out=tmp_path / "nan", quiet=True)
    assert result["stop_reason"] == "diverged" and result["epochs_run"] == 1


@pytest.mark.parametrize("opt, sched", [("adam", "step"), ("adamw", "plateau"),
                                        ("adadelta", "none"), ("sgd", "onecycle")])
def test_optimizers_and_schedulers_learn(tmp_path, fast_config, opt, sched):
    lr = {"adam": 3e-3, "adamw": 3e-3, "adadelta": 1.0, "sgd": 0.1}[opt]
    cfg = fast_config(train={"optimizer": opt, "scheduler": sched, "lr": lr, "epochs": 3,
                             "step_size": 1, "gamma": 0.5, "nesterov": True})
    result = reslab.train(cfg, out=tmp_path / "o", quiet=True)
    assert result["best_val_acc"] > 0.3  # chance is 0.1
    rows = read_jsonl(tmp_path / "o" / "metrics.jsonl")
    if sched == "step":
        assert rows[1]["lr"] == pytest.approx(rows[0]["lr"] * 0.5)


def test_tensorboard_scalars_are_written(tmp_path, fast_config):
    reslab.train(fast_config(train={"tensorboard": True, "epochs": 1}), out=tmp_path / "tb",
                 quiet=True)
    assert list((tmp_path / "tb" / "tb").glob("events.out.tfevents.*"))


def test_wandb_tracking_logs_each_epoch_and_the_result(tmp_path, fast_config, monkeypatch):
    import sys
    import types

    calls = {"init": [], "log": [], "summary": {}, "finished": False}

    class FakeRun:
        summary = calls["summary"]

        def log(self, scalars, step):
            calls["log"].append((step, scalars))

        def finish(self):
            calls["finished"] = True

    fake = types.SimpleNamespace(init=lambda **kw: calls["init"].append(kw) or FakeRun())
    monkeypatch.setitem(sys.modules, "wandb", fake)
    cfg = fast_config(train={"tracking": "wandb", "epochs": 2})
    result = reslab.train(cfg, out=tmp_path / "w", quiet=True)
    assert calls["init"][0]["name"] == "w" and calls["init"][0]["config"]["train"]["epochs"] == 2
    assert [step for step, _ in calls["log"]] == [1, 2]
    assert calls["log"][0][1]["val_acc"] == read_jsonl(tmp_path / "w" / "metrics.jsonl")[0][
        "val_acc"]
    assert calls["summary"]["test_acc"] == result["test_acc"] and calls["finished"]


def test_wandb_missing_is_a_clear_error(tmp_path, fast_config, monkeypatch, cli):
    import sys

    monkeypatch.setitem(sys.modules, "wandb", None)  # import fails as if not installed
    path = tmp_path / "c.yaml"
    import yaml

    path.write_text(yaml.safe_dump(fast_config(train={"tracking": "wandb", "epochs": 1})))
    code, _, err = cli("train", path, "--out", tmp_path / "r")
    assert code == 2 and "pip install 'reslab[wandb]'" in err


def test_compiled_training_matches_eager(tmp_path, fast_config):
    # torch.compile on CPU takes about a minute: one tiny model, one epoch.
    cfg = fast_config(model={"width": 4}, train={"epochs": 1})
    eager = reslab.train(cfg, out=tmp_path / "eager", quiet=True)
    compiled = reslab.train(cfg, out=tmp_path / "compiled", overrides=["train.compile=true"],
                            quiet=True)
    a = read_jsonl(tmp_path / "eager" / "metrics.jsonl")[0]
    b = read_jsonl(tmp_path / "compiled" / "metrics.jsonl")[0]
    for key in ("train_loss", "val_loss"):
        assert b[key] == pytest.approx(a[key], rel=1e-3)
    assert compiled["params"] == eager["params"]
