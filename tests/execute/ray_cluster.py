"""Ray checks, run by test_ray.py inside a network namespace with only loopback (Ray would
otherwise advertise the machine's external address). Prints one JSON line of findings.

A local cluster of 3 nodes (ray.cluster_utils.Cluster): a head without GPUs and two nodes
with 1 CPU and 1 declared (fake) GPU each, so every run is a task on a non-head node.
"""
from __future__ import annotations

import csv
import json
import os
import sys
import threading
import time
from pathlib import Path

import yaml

# Timings, and where each run trained (a Ray task on a node with a declared GPU: the
# device column says so), differ by design.
TIMING = {"seconds_per_epoch", "seconds", "measured_seconds", "estimated_seconds", "device"}


def table(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(f)]


def rows(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines]


def parent_pid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def main(work: Path) -> dict:
    import ray
    from ray.cluster_utils import Cluster

    from reslab.cli import main as reslab
    from reslab.execute import ExecOptions, RunSpec, execute
    from reslab.runs.claim import read_holder

    found: dict = {}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0})
    nodes = [cluster.add_node(num_cpus=1, num_gpus=1) for _ in range(2)]
    os.environ["RAY_ADDRESS"] = cluster.address
    try:
        # 1. compare and a tiny study: the same tables as the local executor.
        for name in ("compare", "study"):
            spec = work / f"{name}.yaml"
            args = [name, str(spec), "--quiet"] + (["--scale", "tiny"] if name == "study" else [])
            found[f"{name}_local_rc"] = reslab([*args, "--out", str(work / f"{name}-local")])
            found[f"{name}_ray_rc"] = reslab([*args, "--out", str(work / f"{name}-ray"),
                                              "--executor", "ray"])
        found["compare_same"] = table(work / "compare-ray" / "compare.csv") == \
            table(work / "compare-local" / "compare.csv")
        found["study_tables"] = len(list((work / "study-local" / "tables").glob("*.csv")))
        found["study_same"] = all(
            table(t) == table(work / "study-ray" / "tables" / t.name)
            for t in (work / "study-local" / "tables").glob("*.csv"))
        envs = [yaml.safe_load(p.read_text()) for p in (work / "compare-ray").rglob("env.json")]
        found["ray_devices"] = sorted({e["cuda_visible_devices"] for e in envs})
        # 2. a node killed mid-run: Ray retries the task, which resumes the run.
        cfg = yaml.safe_load((work / "long.yaml").read_text())
        straight = RunSpec("straight", cfg, str(work / "straight"))
        execute([straight], ExecOptions(quiet=True))
        victim = RunSpec("victim", cfg, str(work / "victim"))
        done: dict = {}
        thread = threading.Thread(target=lambda: done.update(
            execute([victim], ExecOptions(executor="ray", quiet=True))))
        thread.start()
        run = work / "victim"
        deadline = time.monotonic() + 300
        while not ((run / "last.pt").is_file() and read_holder(run)):
            assert time.monotonic() < deadline, "the victim never checkpointed"
            time.sleep(0.05)
        raylet = parent_pid(read_holder(run).pid)
        node = next(n for n in nodes if n.all_processes["raylet"][0].process.pid == raylet)
        cluster.remove_node(node)
        found["node_killed"] = True
        thread.join(timeout=600)
        found["victim_status"] = done["victim"].status if "victim" in done else None
        found["victim_same_metrics"] = rows(run) == rows(work / "straight")
        found["victim_resumed"] = bool(yaml.safe_load((run / "env.json").read_text())
                                       .get("earlier"))
    finally:
        ray.shutdown()
        cluster.shutdown()
    return found


if __name__ == "__main__":
    print("RESULT " + json.dumps(main(Path(sys.argv[1]))), flush=True)
