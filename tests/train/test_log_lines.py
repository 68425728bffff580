"""What a run says: phase starts and a frozen backbone, training vs total time, and a diverged
run's one line and exit code even with --quiet; the parameter budget before any data."""
from __future__ import annotations

import yaml


def write(tmp_path, cfg) -> str:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_phases_and_a_frozen_backbone_each_get_a_line(fast_config, tmp_path, cli):
    cfg = fast_config(data={"max_per_class": 8}, model={"arch": "resnet20"},
                      train={"freeze_backbone_epochs": 1,
                             "phases": [{"epochs": 1}, {"epochs": 1, "lr_scale": 0.5}]})
    code, out, err = cli("train", write(tmp_path, cfg), "--out", tmp_path / "run")
    assert code == 0, err
    assert "Phase 1 of 2: epochs 1-1, lr 0.05, sgd, augment crop, backbone frozen in " \
        "epochs 1-1" in out
    assert "Phase 2 of 2: epochs 2-2, lr 0.025, sgd, augment crop" in out
    last = out.strip().splitlines()[-1]
    assert last.startswith("Time: training ") and " in all (reading the data" in last


def test_a_diverged_run_says_so_and_exits_3_even_quiet(fast_config, tmp_path, cli):
    cfg = fast_config(data={"max_per_class": 8}, train={"lr": 100.0, "scheduler": "none"})
    code, out, err = cli("train", write(tmp_path, cfg), "--out", tmp_path / "run", "--quiet")
    assert code == 3 and out == ""
    (line,) = err.strip().splitlines()
    assert line.startswith("reslab train: diverged: epoch ") and \
        line.endswith("(stop_reason: diverged in result.json)")


def test_the_parameter_budget_is_checked_before_any_data_is_read(fast_config, tmp_path, cli,
                                                                  monkeypatch):
    import reslab.training.loop as loop

    def no_data(*args, **kwargs):
        raise AssertionError("data read before the budget was checked")

    monkeypatch.setattr(loop, "load_data", no_data)
    cfg = fast_config(model={"width": 64, "max_params": 10_000})
    code, _, err = cli("train", write(tmp_path, cfg), "--out", tmp_path / "run")
    assert code == 2 and "model.max_params: resnet20 (width 64) has " in err
