"""A sweep through the run executor: trial reports (sweep.trial_reports), one worker per
(faked) GPU with the device in trials.csv, --set on the base config."""
from __future__ import annotations

import yaml


def test_trials_get_reports_their_worker_s_gpu_and_the_set_values(write_sweep, tmp_path, cli,
                                                                   monkeypatch, sw):
    monkeypatch.setenv("RESLAB_FAKE_GPU_COUNT", "2")
    path = write_sweep(sampler="grid", base_train={"report": True},
                       space={"train.lr": {"values": [0.05, 0.1]}}, trial_reports=True)
    out = tmp_path / "out"
    code, stdout, err = cli("sweep", path, "--out", out, "--gpus", "0,1",
                            "--set", "data.max_per_class=12")
    assert code == 0, err
    assert "2 worker(s) x " in stdout and " on GPU(s) 0, 1; directory" in stdout
    rows = sw.read_csv(out / "trials.csv")
    assert {r["state"] for r in rows} == {"COMPLETE"}
    assert {r["device"] for r in rows} <= {"cpu (CUDA_VISIBLE_DEVICES=0)",
                                           "cpu (CUDA_VISIBLE_DEVICES=1)"}
    for trial in (out / "trials").iterdir():
        assert (trial / "report.html").is_file()
        assert yaml.safe_load((trial / "config.yaml").read_text())["data"]["max_per_class"] == 12
