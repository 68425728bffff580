"""The benchmark scripts run end to end on tiny data (CPU, a few seconds per run): their output
format, and that each candidate's overrides reach its run. No timing is asserted: benchmarks
are scripts; their numbers come from a quiet machine."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
CLASSES = [f"c{i}" for i in range(10)]


def load_script(name: str):
    """Import a benchmark script as a module (its main() does not run)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    sys.path.insert(0, str(BENCH))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module


def run_script(name: str, *args: str, timeout: int = 300) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    out = subprocess.run([sys.executable, str(BENCH / f"{name}.py"), *args], env=env,
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.mark.parametrize("name", sorted(p.stem for p in BENCH.glob("*.py")))
def test_every_benchmark_script_imports(name):
    load_script(name)  # a renamed reslab module breaks a script before any run: caught here


def test_every_candidate_is_a_valid_config_on_the_recipe():
    from reslab.config import load_config

    tta = load_script("time_to_accuracy")
    base = load_config(tta.RECIPE)
    for name, candidate in tta.CANDIDATES.items():
        overrides = candidate.overrides(base)
        cfg = load_config(tta.RECIPE, overrides)  # a typo here would cost a 10-minute run
        assert (name == "baseline") == (not overrides), name
        assert cfg.to_dict() != base.to_dict() or name == "baseline", name
    assert "train.lr=1.2" in tta.CANDIDATES["nesterov-bs1024"].overrides(base)  # 0.3 x 4


def test_candidate_names_are_checked():
    tta = load_script("time_to_accuracy")
    assert tta.parse_candidates("ls0.2,width12") == ["baseline", "ls0.2", "width12"]
    assert tta.parse_candidates("all")[0] == "baseline"
    assert len(tta.parse_candidates("all")) == len(tta.CANDIDATES)
    with pytest.raises(SystemExit, match="unknown wdth12"):
        tta.parse_candidates("ls0.2,wdth12")


def test_isa_settings_run_as_child_processes(tmp_path):
    tta = load_script("time_to_accuracy")
    args = tta.parse_args(["--budget", "10m", "--candidates", "all", "--isa", "both",
                           "--json", str(tmp_path / "ab.json"), "--out", str(tmp_path / "o")])
    child = tta.isa_child(args, "avx2", suffix=True)
    assert child[child.index("--isa") + 1] == "avx2"
    assert child[child.index("--json") + 1] == str(tmp_path / "ab-avx2.json")
    assert child[child.index("--out") + 1] == str(tmp_path / "o" / "avx2")
    assert tta.isa_env("avx2")["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    assert tta.isa_env("avx2")["ATEN_CPU_CAPABILITY"] == "avx2"
    assert "ONEDNN_MAX_CPU_ISA" not in tta.isa_env("native")


def test_ablation_rows_and_the_candidates_reach_their_runs(tmp_path, make_tree):
    tree = make_tree(classes=CLASSES, per_class=20, size=32)
    out, report = tmp_path / "runs", tmp_path / "ablation.json"
    stdout = run_script("time_to_accuracy", "--root", str(tree), "--budget", "4s",
                        "--candidates", "ls0.2,width12", "--out", str(out), "--json",
                        str(report), "--quiet")
    lines = stdout.strip().splitlines()
    assert lines[0].startswith("time to accuracy, budget 4s: machine class cpu-")
    assert lines[1] == ("| candidate | overrides | held-out acc @ budget | images/s | epochs "
                        "| vs baseline |")
    rows = [line.split(" | ") for line in lines[3:]]
    assert [r[0] for r in rows] == ["| baseline", "| ls0.2", "| width12"]
    assert rows[0][-1] == "baseline |" and rows[1][-1].endswith(" pp |")
    data = json.loads(report.read_text())
    assert data["n_train"] == 180 and data["n_heldout"] == 20
    assert [r["candidate"] for r in data["rows"]] == ["baseline", "ls0.2", "width12"]
    assert all(0 <= r["acc"] <= 1 and r["img_s"] > 0 and r["epochs"] > 0 for r in data["rows"])
    configs = {r["candidate"]: yaml.safe_load((out / r["candidate"] / "config.yaml").read_text())
               for r in data["rows"]}
    assert configs["baseline"]["train"]["label_smoothing"] == 0.1
    assert configs["ls0.2"]["train"]["label_smoothing"] == 0.2
    assert [c["model"]["width"] for c in configs.values()] == [16, 16, 12]
    assert all(c["train"]["time_budget"] == "4s" and c["data"]["root"] == str(tree)
               and list(c["machine"]) == [data["machine_class"]] for c in configs.values())


def test_gpu_benchmark_runs_on_cpu(tmp_path, make_tree):
    tree = make_tree(classes=CLASSES, per_class=50, size=32)
    out, report = tmp_path / "runs", tmp_path / "gpu.json"
    stdout = run_script("gpu_time_to_accuracy", "--target", "0.5", "--max-per-class", "50",
                        "--device", "cpu", "--root", str(tree), "--epochs", "2",
                        "--airbench-epochs", "1", "--set", "model.arch=resnet20",
                        "--set", "model.width=8", "--set", "train.compile=false",
                        "--out", str(out), "--json", str(report), "--quiet")
    lines = stdout.strip().splitlines()
    assert lines[0].startswith("data: image folder") and "(450 train / 50 held-out images)" \
        in lines[0] and "device cpu (CPU)" in lines[0]
    assert lines[1].startswith(("reslab: reached 0.5 at epoch ", "reslab: did not reach 0.5"))
    assert lines[2].startswith("airbench94 (builtin port (benchmarks/airbench94.py), 1 epochs, "
                               "batch 450): acc ")
    assert lines[3].startswith("ratio (reslab / airbench94 wall time to 0.5): ")
    result = json.loads(report.read_text())
    assert result["lines"] == lines[1:] and 0 <= result["airbench94"]["acc"] <= 1
    cfg = yaml.safe_load((out / "reslab" / "config.yaml").read_text())["train"]
    assert (cfg["batch_size"], cfg["eval_batch_size"], cfg["epochs"]) == (512, 2000, 2)
    assert cfg["time_budget"] is None and cfg["channels_last"] and cfg["amp"] == "auto"


def test_portability_rewrite_keeps_the_function_and_the_script_prints_both_ratios():
    import torch

    from reslab.config import load_config
    from reslab.models import build_model

    bench = load_script("portability")
    torch.manual_seed(0)
    direct = build_model(load_config(None, ["model.arch=resnet20", "model.width=16"]).model, 10, 3)
    rewritten = bench.rewrite_all(build_model(
        load_config(None, ["model.arch=resnet20", "model.width=16"]).model, 10, 3))
    rewritten.load_state_dict(direct.state_dict())
    x = torch.randn(3, 3, 32, 32)
    direct.eval(), rewritten.eval()
    assert any(type(m) is bench.SubsampledPointwiseConv for m in rewritten.modules())
    assert torch.allclose(direct(x), rewritten(x), atol=1e-5)
    out = run_script("portability", "--batch", "4", "--steps", "1", "--rounds", "1")
    for name in bench.MODELS:
        assert f"{name}: rewrite / direct = " in out
        assert f"{name}: deterministic / default = " in out
