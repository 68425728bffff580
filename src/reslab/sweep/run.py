"""`run_sweep`: validate, open the study, queue the trials, run the workers, write outputs."""
from __future__ import annotations

from pathlib import Path

import optuna
from optuna.trial import TrialState

from ..errors import ReslabError
from ..execute import ExecOptions
from ..execute.slots import worker_slots
from ..output import info, warn
from ..report import write_report
from ..runs.rundir import SweepDir, safe_name
from ..training.tracking import finish_parent_run, start_parent_run, trackers
from ..utils import available_cores
from .confirm import Confirmation, confirm, confirm_rows, confirmed_best
from .monitor import Monitor, retry_map
from .outputs import (
    best_trial,
    confirmed_text,
    fmt_value,
    write_best_yaml,
    write_factors_md,
    write_trial_hparams,
    write_trials_csv,
)
from .plots import write_plots
from .spec import Sweep, load_sweep
from .storage import (
    default_url,
    make_storage,
    open_before,
    refuse_emptied_study_db,
    storage_errors,
)
from .study import fill_queue, has_running, open_study
from .workers import WorkerJob, run_processes


def run_sweep(spec_path: str | Path, out: str | Path | None = None, storage: str | None = None,
              workers: int = 1, study_name: str | None = None,
              options: ExecOptions | None = None, overrides: list[str] | None = None) -> Path:
    """Run (or resume, or join) the sweep in SWEEP.yaml; returns the sweep directory.

    `options` (the executor flags) place the worker processes: one per --gpus GPU (or per
    visible GPU), else `workers` CPU workers; `overrides` (--set) apply to the base config."""
    options = options or ExecOptions(workers=workers)
    if options.executor != "local":
        raise ReslabError("reslab sweep shares work through its storage, not --executor: run "
                          "the same command on each machine with one --storage (README: Many "
                          "runs)")
    slots = worker_slots(options)
    sweep = load_sweep(spec_path, overrides)
    sweep_dir = SweepDir(out if out else Path("sweeps") / safe_name(sweep.name))
    name = study_name or sweep.name
    url = storage or default_url(sweep_dir.path)
    refuse_emptied_study_db(sweep_dir, url)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own one-line errors say what failed
    opened = open_before(url, sweep_dir.path, sweep.spec.heartbeat)  # nothing written yet
    sweep_dir.claim(name)
    with storage_errors(url):
        study = open_study(sweep, opened or make_storage(url, sweep.spec.heartbeat), name)
        queued = fill_queue(study, sweep)
        threads = max(1, available_cores() // len(slots))
        info(f"Sweep {name}: {sweep.spec.sampler} over {', '.join(sweep.keys)}; {queued} "
             f"trial(s) queued, {len(slots)} worker(s) x {threads} thread(s){gpu_note(slots)}; "
             f"directory {sweep_dir.path}")
        job = WorkerJob(sweep, sweep_dir, url, name, threads)
        parent = start_parent_run(name, sweep_dir.path) if "mlflow" in trackers(sweep.base) \
            else None
        try:
            lost = run_and_write(job, slots, study, sweep, sweep_dir, options)
        finally:
            if parent is not None:  # the trials' MLflow runs are nested under this one
                finish_parent_run(parent, [sweep_dir.trials_csv, sweep_dir.best_yaml])
    for line in lost:
        warn(line)
    return sweep_dir.path


def gpu_note(slots: list[dict[str, str]]) -> str:
    gpus = [s["CUDA_VISIBLE_DEVICES"] for s in slots if "CUDA_VISIBLE_DEVICES" in s]
    return f" on GPU(s) {', '.join(gpus)}" if gpus else ""


def run_and_write(job: WorkerJob, slots: list[dict[str, str]], study: optuna.Study,
                  sweep: Sweep, sweep_dir: SweepDir, options: ExecOptions) -> list[str]:
    """Run the trials (and the confirmation) and write the outputs; -> lost-worker lines."""
    try:
        with Monitor(job.url, job.study_name, sweep):
            # Always in worker processes: a native crash in a trial must not end the sweep.
            lost = run_processes(job, slots, study)
        confirmed = maybe_confirm(study, sweep, sweep_dir, options)
    except KeyboardInterrupt:
        # Keep what finished; re-running the command resumes the rest.
        write_outputs(sweep_dir, study, sweep)
        raise
    write_outputs(sweep_dir, study, sweep, confirmed)
    return lost


def maybe_confirm(study: optuna.Study, sweep: Sweep, sweep_dir: SweepDir,
                  options: ExecOptions) -> list[Confirmation] | None:
    """The confirmation (`confirm:`), once no trial is queued or running anywhere."""
    if sweep.spec.confirm is None:
        return None
    if has_running(study) or study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        info("Confirmation waits for the trials still running elsewhere; re-run the command "
             "once they finish")
        return None
    return confirm(study, sweep, sweep_dir, options)


def write_outputs(sweep_dir: SweepDir, study: optuna.Study, sweep: Sweep,
                  confirmed: list[Confirmation] | None = None) -> None:
    """trials.csv, confirm.csv, best.yaml, factors.md, plots/ and report.html."""
    trials = study.get_trials(deepcopy=False)
    write_trials_csv(sweep_dir, trials, sweep, retry_map(trials))
    best, chosen = best_trial(study), None
    if confirmed is not None:
        chosen = confirmed_best(confirmed, sweep)
        sweep_dir.write_confirm(*confirm_rows(confirmed, chosen, sweep))
        best = chosen.trial if chosen is not None else best
    best_path = write_best_yaml(sweep_dir, best, sweep, chosen.summary if chosen else None)
    write_factors_md(sweep_dir, trials, sweep)
    write_trial_hparams(sweep_dir, trials, sweep)
    write_plots(sweep_dir, study, sweep)
    _write_report(sweep_dir.path)
    counts = {}
    for t in trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    info("Trials: " + ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())))
    if best is not None:
        params = ", ".join(f"{k}={fmt_value(v)}" for k, v in best.params.items())
        value = f"{best.value:.4f}" if chosen is None else \
            f"confirmed {confirmed_text(chosen.summary)} (single run {best.value:.4f})"
        info(f"Best trial {best.number}: {sweep.spec.objective.metric} {value} "
             f"({params}); config {best_path}")
    else:
        info("No trial completed.")
    info(f"Sweep directory: {sweep_dir.path}")


def _write_report(sweep_dir: Path) -> None:
    try:
        write_report(sweep_dir)
    except Exception as err:  # the report is a convenience: the sweep's own files are written
        warn(f"report not written ({err})")
