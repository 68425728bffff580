"""The Ray backend on a local 3-node cluster (ray_cluster.py), inside a network namespace with
only loopback: the same tables as the local executor, a node killed mid-run retried with the
same metrics, each task's CUDA_VISIBLE_DEVICES recorded."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("ray")
HERE = Path(__file__).resolve().parent


def loopback_only(command: list[str]) -> list[str]:
    """`command` in a new network namespace whose only interface is loopback (root only)."""
    return ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *command]


@pytest.fixture(scope="module")
def ray_findings(tmp_path_factory):
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        pytest.skip("needs root, unshare and ip for a loopback-only network namespace")
    work = tmp_path_factory.mktemp("ray")
    base = {"data": {"source": "digits", "val_fraction": 0.2, "test_fraction": 0.25,
                     "max_per_class": 16, "augment": "none"},
            "model": {"arch": "resnet20", "width": 4},
            "train": {"epochs": 2, "batch_size": 64, "lr": 0.05, "tensorboard": False,
                      "report": False, "device": "cpu", "progress": False, "threads": 1}}
    (work / "compare.yaml").write_text(yaml.safe_dump(
        {"runs": [{"name": f"w{w}", **base, "model": {"arch": "resnet20", "width": w}}
                  for w in (4, 8)], "repeats": 2}))
    (work / "study.yaml").write_text(yaml.safe_dump(
        {"name": "widths", "base": base,
         "axes": {"width": {"w4": {"model.width": 4}, "w8": {"model.width": 8}}},
         "confirm": {"repeats": 2}, "scale": {"tiny": {"train.epochs": 1}}}))
    (work / "long.yaml").write_text(yaml.safe_dump(
        {**base, "data": {**base["data"], "max_per_class": 40},
         "train": {**base["train"], "epochs": 8}}))
    proc = subprocess.run(loopback_only([sys.executable, str(HERE / "ray_cluster.py"),
                                         str(work)]),
                          capture_output=True, text=True, timeout=1500,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-5000:]
    return json.loads(lines[-1][len("RESULT "):])


def test_compare_and_study_on_ray_write_the_local_tables(ray_findings):
    f = ray_findings
    assert (f["compare_local_rc"], f["compare_ray_rc"]) == (0, 0)
    assert (f["study_local_rc"], f["study_ray_rc"]) == (0, 0)
    assert f["compare_same"] and f["study_same"] and f["study_tables"] > 0


def test_each_ray_task_records_its_gpu(ray_findings):
    assert ray_findings["ray_devices"] == ["0"]  # one declared GPU per node: device 0 there


def test_a_killed_node_s_run_is_retried_and_resumed_to_the_same_metrics(ray_findings):
    f = ray_findings
    assert f["node_killed"] and f["victim_status"] in ("trained", "resumed")
    assert f["victim_resumed"] and f["victim_same_metrics"]


def test_an_unreachable_cluster_is_one_line_before_any_work(tmp_path, cli):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("runs: [{model: {arch: resnet20}}]\n")
    code, _, err = cli("compare", cfg, "--out", tmp_path / "out", "--executor",
                       "ray://127.0.0.1:1")
    assert code == 2
    assert err.strip().splitlines()[-1].startswith(
        "reslab compare: error: --executor: cannot reach the Ray cluster at ray://127.0.0.1:1 (")
    assert not (tmp_path / "out" / "runs").exists()


def test_a_missing_ray_extra_is_one_line_before_any_work(tmp_path, cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    cfg = tmp_path / "c.yaml"
    cfg.write_text("runs: [{model: {arch: resnet20}}]\n")
    code, _, err = cli("compare", cfg, "--out", tmp_path / "out", "--executor", "ray")
    assert code == 2
    assert err.strip().splitlines()[-1] == \
        "reslab compare: error: --executor ray needs Ray: pip install 'reslab[ray]'"
    assert not (tmp_path / "out" / "runs").exists()
