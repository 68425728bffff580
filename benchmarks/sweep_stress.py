"""Stress check for one report of issue 22: "a 1-trial sweep's parent printed its banner and
exited, leaving trial 0 RUNNING with checkpoints and no result". Runs the same 1-trial digits
sweep N times (a fresh directory each time) beside CPU-burning processes, and records per
rerun: the exit code, the trial's state in study.db, whether its result.json exists, and the
last line the parent printed.

    python benchmarks/sweep_stress.py --reruns 20 --burners 2 \
        --out benchmarks/results/sweep-stress.json

This is a fault hunt, not a timing: the seconds it records are only there to spot a hang.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import yaml

SWEEP = {"name": "stress", "sampler": "random", "n_trials": 1, "seed": 0,
         "space": {"train.lr": {"low": 0.01, "high": 0.2, "log": True}},
         "objective": {"metric": "best_val_acc", "direction": "maximize"},
         "base": {"data": {"source": "digits", "max_per_class": 30},
                  "model": {"arch": "resnet20", "width": 4},
                  "train": {"epochs": 2, "batch_size": 32, "tensorboard": False,
                            "report": False, "progress": False, "device": "cpu"}}}


def burn(stop_at: float) -> None:
    """Keep one core busy until `stop_at` (the load the report was seen under)."""
    x = 0
    while time.time() < stop_at:
        x = (x * 31 + 7) % 1_000_003


def one_rerun(folder: Path) -> dict:
    spec = folder / "sweep.yaml"
    spec.write_text(yaml.safe_dump(SWEEP))
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "reslab", "sweep", str(spec), "--out",
                           str(folder / "out")], capture_output=True, text=True, timeout=1800)
    seconds = time.perf_counter() - started
    study = optuna.load_study(study_name="stress",
                              storage=f"sqlite:///{folder / 'out' / 'study.db'}")
    trials = study.get_trials(deepcopy=False)
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    return {"exit_code": proc.returncode, "seconds": round(seconds, 1),
            "states": [t.state.name for t in trials],
            "result_json": (folder / "out" / "trials" / "0" / "result.json").is_file(),
            "last_line": lines[-1] if lines else ""}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reruns", type=int, default=20)
    parser.add_argument("--burners", type=int, default=4, help="CPU-burning processes")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/sweep-stress.json"))
    args = parser.parse_args()
    burners = [multiprocessing.Process(target=burn, args=(time.time() + 86400,), daemon=True)
               for _ in range(args.burners)]
    for b in burners:
        b.start()
    rows = []
    try:
        for i in range(args.reruns):
            with tempfile.TemporaryDirectory() as tmp:
                rows.append({"rerun": i, **one_rerun(Path(tmp))})
            print(json.dumps(rows[-1]), flush=True)
    finally:
        for b in burners:
            b.terminate()
    ok = [r for r in rows if r["exit_code"] == 0 and r["states"] == ["COMPLETE"]
          and r["result_json"]]
    summary = {"reruns": len(rows), "burners": args.burners, "complete": len(ok),
               "rows": rows}
    args.out.write_text(json.dumps(summary, indent=1) + "\n")
    print(f"{len(ok)}/{len(rows)} reruns: exit 0, trial 0 COMPLETE with its result.json")


if __name__ == "__main__":
    main()
