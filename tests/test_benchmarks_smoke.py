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


# ------------------------------------------------------------------------------ epoch curves
def test_epoch_curves_append_rows_and_a_rerun_skips_them(tmp_path, make_tree, capsys):
    curves = load_script("epoch_curves")
    tree = make_tree(classes=CLASSES, per_class=100, size=32)
    out = tmp_path / "curves.jsonl"
    common = ["--root", str(tree), "--per-class", "100", "--candidates", "baseline,ls0.2",
              "--epochs", "1,2", "--out", str(out), "--threads", "1", "--quiet"]
    argv = [*common, "--seeds", "0"]
    assert curves.main(argv) == 0
    rows = curves.read_rows(out)
    assert [(r["candidate"], r["epochs"], r["seed"]) for r in rows] == [
        ("baseline", 1, 0), ("ls0.2", 1, 0), ("baseline", 2, 0), ("ls0.2", 2, 0)]
    assert all(r["subset"] == "per_class=100" and (r["n_train"], r["n_heldout"]) == (900, 100)
               and 0 <= r["heldout_acc"] <= 1 and r["epochs_run"] == r["epochs"]
               and len(r["val_curve"]) == r["epochs"] and r["tta"] and r["threads"] == 1
               for r in rows)
    assert [r["overrides"] for r in rows[:2]] == [[], ["train.label_smoothing=0.2"]]
    assert "train.time_budget=null" in rows[0]["shared_overrides"]
    before = out.read_bytes()
    capsys.readouterr()
    assert curves.main(argv) == 0  # everything is in the file: nothing runs
    assert out.read_bytes() == before
    assert "4 rows asked, 4 already in" in capsys.readouterr().out
    assert curves.main([*common, "--seeds", "1", "--dry-run"]) == 0
    assert "4 to run" in capsys.readouterr().out  # another seed is another row


def test_epoch_curves_file_survives_a_torn_last_line(tmp_path):
    curves = load_script("epoch_curves")
    out = tmp_path / "c.jsonl"
    row = {"candidate": "baseline", "epochs": 4, "seed": 0, "subset": "full"}
    curves.append_row(out, row)
    with open(out, "a") as f:
        f.write('{"candidate": "lr0.2", "epo')  # a writer killed mid-line
    curves.append_row(out, {**row, "seed": 1})
    assert [r["seed"] for r in curves.read_rows(out)] == [0, 1]


def test_epoch_curves_informative_order_and_candidates():
    from reslab.config import load_config

    curves = load_script("epoch_curves")
    wanted = curves.runs_wanted(list(curves.CURVE_CANDIDATES), [4, 8, 12, 16, 24], [0, 1])
    order = curves.informative_order(wanted)
    assert sorted(order) == sorted(wanted) and len(set(order)) == len(order)
    assert order[:6] == [("baseline", 4, 0), ("baseline", 8, 0), ("baseline", 8, 1),
                         ("lr0.2", 8, 0), ("lr0.1", 8, 0), ("ls0.2", 8, 0)]
    e8 = [r for r in wanted if r[1:] == (8, 0)]  # seed 0, in CURVE_CANDIDATES' order
    assert order[3:3 + len(e8) - 1] == e8[1:]  # every candidate at E 8 before any E 12
    assert order[3 + len(e8) - 1] == ("baseline", 12, 0)
    assert [r for r in order if r[0] == "fp32"] == [("fp32", 8, 0), ("fp32", 8, 1)]
    assert curves.ordered(wanted, "grid") == wanted
    base = curves.recipe_here(["train.time_budget=null", "train.epochs=10"])
    for name, cand in curves.CURVE_CANDIDATES.items():
        overrides = cand.overrides(base)
        assert (name == "baseline") == (not overrides), name
        load_config(curves.RECIPE, overrides)  # a typo here would cost hours
    assert curves.CURVE_CANDIDATES["warmup0.4"].overrides(base) == ["train.warmup_epochs=4"]
    assert "train.lr=0.6" in curves.CURVE_CANDIDATES["bs512"].overrides(base)
    with pytest.raises(SystemExit, match="evalonce has the baseline's curve"):
        curves.parse_names("baseline,evalonce")


def test_throughput_smoke_writes_one_row_per_candidate(tmp_path, make_tree):
    tree = make_tree(classes=CLASSES, per_class=20, size=32)
    out = tmp_path / "t.jsonl"
    run_script("throughput", "--root", str(tree), "--per-class", "20", "--rounds", "1",
               "--measure-epochs", "1", "--candidates", "baseline,evalonce", "--isa", "native",
               "--threads", "1", "--out", str(out))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["candidate"], r["isa"]) for r in rows] == [("baseline", "native"),
                                                          ("evalonce", "native")]
    assert all(r["img_s"] > 0 and len(r["rounds"]) == 1 for r in rows)
    assert rows[1]["overrides"] == ["train.eval_every=0"]
    tp = load_script("throughput")
    child = tp.child_argv(tp.parse_args(["--isa", "both", "--rounds", "2"]), "avx2")
    assert child[child.index("--isa") + 1] == "avx2" and "--rounds" in child


def test_prediction_interpolates_linearly_in_epochs_and_refuses_outside():
    pred = load_script("budget_prediction")
    curve = {4: 0.70, 8: 0.80, 16: 0.88}
    assert pred.interpolate(curve, 8) == 0.80
    assert pred.interpolate(curve, 6) == pytest.approx(0.75)
    assert pred.interpolate(curve, 12) == pytest.approx(0.84)
    with pytest.raises(pred.OutsideCurve, match=r"E = 2.00 is outside the measured 4..16"):
        pred.interpolate(curve, 2)
    with pytest.raises(pred.OutsideCurve, match="outside the measured 4..16"):
        pred.interpolate(curve, 17)
    assert pred.interpolate(curve, 2, clamp=True) == 0.70
    assert pred.interpolate(curve, 30, clamp=True) == 0.88
    # 30 min at 400 img/s on 45,000 images: 16 epochs; a 90 s overhead leaves 15.2
    assert pred.epochs_in_budget(1800, 400, 45_000) == pytest.approx(16)
    assert pred.predict(curve, 1800, 400, 45_000) == pytest.approx(0.88)
    assert pred.predict(curve, 1800, 400, 45_000, overhead_s=90) == pytest.approx(0.88 - 0.008)
    rows = [{"candidate": "baseline", "epochs": 8, "seed": s, "subset": "full",
             "heldout_acc": a} for s, a in ((0, 0.80), (1, 0.82))]
    rows.append({"candidate": "baseline", "epochs": 8, "seed": 0, "subset": "per_class=100",
                 "heldout_acc": 0.3})
    assert pred.curves(rows) == {"baseline": {8: pytest.approx(0.81)}}
    assert pred.seed_spread(rows, "baseline", 8) == pytest.approx(0.02)
    assert pred.seed_spread(rows, "baseline", 4) is None
    rows.append({"candidate": "ls0.2", "epochs": 8, "seed": 0, "subset": "full",
                 "heldout_acc": 0.835})
    assert pred.kept(rows, "ls0.2", 8) is True  # +2.5 pp > the 2 pp spread
    assert pred.kept(rows, "ls0.2", 4) is None
    table = pred.curve_table(rows).splitlines()
    assert table[0] == "| candidate | E 8 |"
    assert table[2:] == ["| baseline | 0.8100 (0.8000..0.8200) |", "| ls0.2 | 0.8350* |"]
