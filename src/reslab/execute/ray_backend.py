"""The Ray backend (`--executor ray`, `--executor ray://HOST:PORT` or `ray:HOST:PORT`): each
run a Ray task, for clusters (extra `reslab[ray]`).

Ray schedules by declared resources: each task asks for 1 CPU and, on a cluster with GPUs,
1/--runs-per-gpu GPU (Ray then sets the task's CUDA_VISIBLE_DEVICES, which env.json
records). A task whose worker or node dies is retried by Ray (max_retries); the retry finds
the run's stale claim and resumes it from its last checkpoint. Run directories must be on a
filesystem every node shares. The address comes from --executor, else $RAY_ADDRESS; with
neither, Ray starts a local instance.
"""
from __future__ import annotations

import os
import socket
import time

from ..errors import ReslabError
from .local import report
from .runner import run_one_safely
from .schedule import BUSY_POLL_S, Log, Schedule
from .spec import ExecOptions, Outcome, RunSpec

CONNECT_TIMEOUT_S = 10.0
TASK_RETRIES = 3


def ray_address(executor: str) -> str | None:
    """'ray' -> $RAY_ADDRESS or None (a local instance); 'ray://H:P' as is; 'ray:H:P' -> 'H:P'."""
    if executor == "ray":
        return os.environ.get("RAY_ADDRESS") or None
    if executor.startswith("ray://"):
        return executor
    if executor.startswith("ray:"):
        return executor[len("ray:"):]
    raise ReslabError(f"--executor {executor}: expected local, ray, ray://HOST:PORT or "
                      "ray:HOST:PORT")


def check_reachable(address: str) -> None:
    """A one-line error in seconds instead of Ray's long retries on a wrong address."""
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except (OSError, ValueError) as err:
        raise ReslabError(f"--executor: cannot reach the Ray cluster at {address} ({err}); "
                          "start it with `ray start --head` or check RAY_ADDRESS") from None


def check_address(options: ExecOptions) -> str | None:
    """The cluster's address (None: a local instance), once Ray is importable, the flags fit
    and the address answers."""
    address = ray_address(options.executor)
    try:
        import ray  # noqa: F401
    except ImportError:
        raise ReslabError("--executor ray needs Ray: pip install 'reslab[ray]'") from None
    if options.gpus is not None:
        raise ReslabError("--gpus picks this machine's GPUs; with --executor ray each run asks "
                          "Ray for 1/--runs-per-gpu of a GPU wherever the cluster has one")
    if address is not None:
        check_reachable(address)
    return address


def connect(options: ExecOptions):
    import ray

    address = check_address(options)
    if not ray.is_initialized():
        ray.init(address=address, logging_level="ERROR", log_to_driver=not options.quiet,
                 include_dashboard=False if address is None else None)
    return ray


def _task(spec: RunSpec, quiet: bool) -> Outcome:
    return run_one_safely(spec, quiet=quiet)


def run_on_ray(schedule: Schedule, options: ExecOptions, log: Log) -> None:
    ray = connect(options)
    gpus = 1.0 / options.runs_per_gpu if ray.cluster_resources().get("GPU", 0) > 0 else 0
    remote = ray.remote(_task).options(num_cpus=1, num_gpus=gpus, max_retries=TASK_RETRIES)
    cap = options.workers if options.workers > 1 else None
    running: dict = {}
    while not schedule.done() or running:
        while cap is None or len(running) < cap:
            spec = schedule.take_ready()
            if spec is None:
                break
            running[remote.remote(spec, options.quiet)] = spec
        if not running:
            ray_sleep(schedule)
            continue
        done, _ = ray.wait(list(running), num_returns=1, timeout=BUSY_POLL_S)
        for ref in done:
            spec = running.pop(ref)
            try:
                outcome = ray.get(ref)
            except Exception as err:  # noqa: BLE001 - retries used up (node lost every time)
                outcome = Outcome(spec.name, "failed", f"Ray task failed: {type(err).__name__}",
                                  exit_code=1)
            report(outcome, log)
            schedule.finish(spec, outcome)


def ray_sleep(schedule: Schedule) -> None:
    time.sleep(schedule.next_start() or BUSY_POLL_S)
