"""The run executor's speed-up and Ray's cost: an 8-run compare on digits (4 configs x 2
seeds), with 1 and 2 local workers and on a local 2-CPU Ray instance, side by side.

Rounds alternate the arms (fresh output directories each time, so every run trains) and the
figures are medians of rounds: `speedup` = wall(1 worker) / wall(2 workers); Ray's overhead per
run = (wall(Ray, 2 tasks at a time) - wall(2 local workers)) / 8. Ray advertises the machine's
external address, so run the Ray arm inside a loopback-only network namespace (as root):

    unshare -n sh -c 'ip link set lo up && exec python benchmarks/executor.py --ray'

Quote the ratios with the CPU kind (`lscpu`), measured with nothing else running.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import yaml

from reslab.execute import ExecOptions
from reslab.studies.compare import run_compare

BASE = {"data": {"source": "digits", "val_fraction": 0.2, "test_fraction": 0.2,
                 "augment": "crop", "pad": 1},
        "train": {"epochs": 3, "batch_size": 64, "lr": 0.05, "tensorboard": False,
                  "report": False, "progress": False, "device": "cpu"}}


def compare_file(folder: Path, epochs: int) -> Path:
    base = {**BASE, "train": {**BASE["train"], "epochs": epochs}}
    runs = [{"name": f"w{w}", **base, "model": {"arch": "resnet20", "width": w}}
            for w in (4, 6, 8, 12)]
    path = folder / "cmp.yaml"
    path.write_text(yaml.safe_dump({"runs": runs, "repeats": 2}))
    return path


def wall(spec: Path, out: Path, options: ExecOptions) -> float:
    t0 = time.perf_counter()
    run_compare(spec, out, quiet=True, log=lambda line: None, options=options)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ray", action="store_true", help="add the Ray arm (in a netns: see above)")
    ap.add_argument("--epochs", type=int, default=3,
                    help="epochs per run (3: ~1.5 s runs, where a worker's start-up shows)")
    args = ap.parse_args()
    arms = {"local-1": ExecOptions(workers=1, quiet=True),
            "local-2": ExecOptions(workers=2, quiet=True)}
    if args.ray:
        import ray

        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
        arms["ray-2"] = ExecOptions(executor="ray", workers=2, quiet=True)
    times: dict[str, list[float]] = {name: [] for name in arms}
    with tempfile.TemporaryDirectory() as tmp:
        spec = compare_file(Path(tmp), args.epochs)
        wall(spec, Path(tmp) / "warm", arms["local-1"])  # the decoded cache, imports
        for r in range(args.rounds):
            for name, options in arms.items():
                times[name].append(wall(spec, Path(tmp) / f"{name}-{r}", options))
    med = {name: statistics.median(ts) for name, ts in times.items()}
    out = {"epochs": args.epochs, "seconds": times, "median": med,
           "speedup_2_workers": med["local-1"] / med["local-2"]}
    if "ray-2" in med:
        out["ray_over_local_2"] = med["ray-2"] / med["local-2"]
        out["ray_overhead_per_run_s"] = (med["ray-2"] - med["local-2"]) / 8
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
