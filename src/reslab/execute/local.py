"""The local backend: one spawned worker process per slot (slots.py), each running one spec
at a time through `run_one` and sending its Outcome back over a pipe.

Spawned, not forked: a fork would copy torch's thread pools and locks. A worker that dies
costs no run: a kill (SIGKILL, the OOM killer) re-queues its run, which resumes from its last
checkpoint in a fresh worker in the same slot; a crash signal (SIGSEGV, ...) fails that run
(it would crash again). Workers exit when this process dies.
"""
from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
from dataclasses import dataclass, field

from .runner import run_one_safely
from .schedule import BUSY_POLL_S, Log, Schedule
from .spec import RunSpec

CRASH_SIGNALS = {signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS, signal.SIGFPE, signal.SIGILL}


@dataclass
class Worker:
    slot: int
    env: dict[str, str]
    process: multiprocessing.Process
    conn: multiprocessing.connection.Connection
    spec: RunSpec | None = None
    started: float = field(default_factory=time.monotonic)


def run_on_workers(schedule: Schedule, slots: list[dict[str, str]], quiet: bool,
                   log: Log) -> None:
    ctx = multiprocessing.get_context("spawn")
    workers = [start_worker(ctx, i, env, quiet) for i, env in enumerate(slots)]
    try:
        while not schedule.done() or any(w.spec for w in workers):
            for w in workers:
                if w.spec is None and (spec := schedule.take_ready()) is not None:
                    w.spec = spec
                    w.conn.send(spec)
            waiting = [w.conn for w in workers if w.spec] + \
                [w.process.sentinel for w in workers if w.spec]
            timeout = schedule.next_start() if not waiting else BUSY_POLL_S
            multiprocessing.connection.wait(waiting, timeout=timeout if timeout else BUSY_POLL_S)
            for i, w in enumerate(workers):
                workers[i] = collect(ctx, w, schedule, quiet, log)
    finally:
        for w in workers:
            stop_worker(w)


def collect(ctx, w: Worker, schedule: Schedule, quiet: bool, log: Log) -> Worker:
    """Take a finished worker's Outcome, or replace a dead worker (its run retried)."""
    if w.spec is None:
        return w
    if w.conn.poll():
        try:
            outcome = w.conn.recv()
        except (EOFError, OSError):
            outcome = None
        if outcome is not None:
            spec, w.spec = w.spec, None
            report(outcome, log)
            schedule.finish(spec, outcome)
            return w
    if w.process.is_alive():
        return w
    w.process.join()
    code = w.process.exitcode or 0
    signum = -code if code < 0 else None
    crashed = signum in CRASH_SIGNALS  # the run's own fault: it would crash again
    why = (f"crashed: signal {signum} ({signal_name(signum)})" if crashed
           else f"worker {w.slot} killed by signal {signum} ({signal_name(signum)})" if signum
           else f"worker {w.slot} exited with code {code}")
    schedule.lost(w.spec, why, retry=signum is not None and not crashed)
    w.conn.close()
    return start_worker(ctx, w.slot, w.env, quiet)


def report(outcome, log: Log) -> None:
    where = f" (CUDA_VISIBLE_DEVICES={outcome.device})" if outcome.device is not None else ""
    if outcome.status == "failed":
        log(f"{outcome.name}: failed{where}: {outcome.detail}")
    elif outcome.status != "busy":
        log(f"{outcome.name}: {outcome.status}{where}")


def start_worker(ctx, slot: int, env: dict[str, str], quiet: bool) -> Worker:
    parent, child = ctx.Pipe()
    proc = spawn(ctx, worker_main, (child, quiet), env, f"reslab-worker-{slot}")
    child.close()
    return Worker(slot, env, proc, parent)


def spawn(ctx, target, args: tuple, env: dict[str, str], name: str):
    """Start a process with `env` on top of this one's (a spawned child starts with the
    parent's environment as it is at start: CUDA_VISIBLE_DEVICES is set before torch is)."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        proc = ctx.Process(target=target, args=args, name=name)
        proc.start()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return proc


def stop_worker(w: Worker) -> None:
    try:
        w.conn.send(None)
    except (OSError, ValueError):
        pass
    w.process.join(timeout=5)
    if w.process.is_alive():
        w.process.terminate()
        w.process.join()


def worker_main(conn, quiet: bool) -> None:
    """A worker process: run the specs it is sent until it is sent None."""
    exit_with_parent()
    while True:
        try:
            spec = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        if spec is None:
            return
        conn.send(run_one_safely(spec, quiet=quiet))


def exit_with_parent() -> None:
    """A worker whose parent died (kill -9 included) stops instead of training on as an
    orphan; its run's claim then goes stale and the next command resumes it."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return "unknown signal"
