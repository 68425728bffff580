"""Progress while a sweep runs: a rich live table on a terminal, else one line per finished
trial. It polls the storage, so it shows every worker's trials (other machines' too)."""
from __future__ import annotations

import sys
import threading

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..output import info
from .outputs import describe_reason, fmt_value
from .spec import Sweep
from .storage import is_storage_failure, make_storage

POLL_S = 1.0
TABLE_ROWS = 20


def trial_line(t: FrozenTrial, sweep: Sweep, retried_by: dict[int, int]) -> str:
    params = " ".join(f"{k}={fmt_value(t.params.get(k))}" for k in sweep.keys)
    value = f" {sweep.spec.objective.metric} {t.value:.4f}" if t.value is not None \
        and t.state == TrialState.COMPLETE else ""
    reason = describe_reason(t, retried_by)
    seconds = _seconds(t)
    return (f"trial {t.number} {t.state.name}{value} {params}"
            + (f" ({reason})" if reason else "") + (f" {seconds:.1f} s" if seconds else ""))


def _seconds(t: FrozenTrial) -> float | None:
    if t.datetime_start and t.datetime_complete:
        return (t.datetime_complete - t.datetime_start).total_seconds()
    return None


def retry_map(trials: list[FrozenTrial]) -> dict[int, int]:
    """Trial number -> the trial that retried it after its worker was lost."""
    out = {}
    for t in trials:
        history = t.system_attrs.get("retry_history") or []
        if history:
            out[history[-1]] = t.number
    return out


class Monitor:
    """Context manager: a thread that polls the study and prints progress."""

    def __init__(self, url: str, study_name: str, sweep: Sweep, tty: bool | None = None):
        self.url, self.study_name, self.sweep = url, study_name, sweep
        self.tty = sys.stdout.isatty() if tty is None else tty
        self._stop = threading.Event()
        self._seen: set[int] = set()
        self._thread = threading.Thread(target=self._run, daemon=True, name="sweep-monitor")

    def __enter__(self) -> Monitor:
        storage = make_storage(self.url)  # no heartbeat: it only reads
        self.study = optuna.load_study(study_name=self.study_name, storage=storage,
                                       sampler=optuna.samplers.RandomSampler())
        done = [t for t in self.study.get_trials(deepcopy=False) if t.state.is_finished()]
        self._seen = {t.number for t in done}
        if done:
            info(f"{len(done)} trial(s) already finished; continuing the study")
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        if self.tty:
            self._run_live()
            return
        while True:
            stopping = self._stop.wait(POLL_S)
            self._poll(self._print_new)
            if stopping:
                return

    @staticmethod
    def _poll(show) -> None:
        try:
            show()
        except Exception as err:
            if not is_storage_failure(err):
                raise
            # The database is away: the workers stop with one line saying so (a traceback
            # here would be one more per poll); the next poll retries.

    def _print_new(self) -> None:
        trials = self.study.get_trials(deepcopy=False)
        retried = retry_map(trials)
        for t in trials:
            if t.state.is_finished() and t.number not in self._seen:
                self._seen.add(t.number)
                info(trial_line(t, self.sweep, retried))

    def _run_live(self) -> None:
        from rich.live import Live

        with Live(self._table(), refresh_per_second=2, transient=False) as live:
            while True:
                stopping = self._stop.wait(POLL_S)
                self._poll(lambda: live.update(self._table()))
                if stopping:
                    return

    def _table(self):
        from rich.table import Table

        trials = self.study.get_trials(deepcopy=False)
        retried = retry_map(trials)
        done = sum(t.state.is_finished() for t in trials)
        table = Table(title=f"sweep {self.study_name}: {done}/{len(trials)} trials finished")
        for col in ("#", "state", self.sweep.spec.objective.metric, *self.sweep.keys,
                    "seconds", "reason"):
            table.add_column(col)
        for t in trials[-TABLE_ROWS:]:
            value = f"{t.value:.4f}" if t.value is not None and t.state == TrialState.COMPLETE \
                else ""
            seconds = _seconds(t)
            table.add_row(str(t.number), t.state.name, value,
                          *(fmt_value(t.params.get(k)) for k in self.sweep.keys),
                          f"{seconds:.1f}" if seconds else "", describe_reason(t, retried))
        return table
