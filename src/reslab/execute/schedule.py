"""The schedule both backends share: which specs may start now, and what became of each.

It hands out specs whose `after` specs have finished, puts a 'busy' spec (claimed by a live
process elsewhere, e.g. a second copy of the same command) back for later with one line
every WAIT_LINE_S saying what it waits for, and retries a run whose worker was killed (its
claim is then stale, so the retry resumes it from its last checkpoint).
"""
from __future__ import annotations

import time
from collections.abc import Callable

from ..errors import ReslabError
from ..output import warn
from .spec import Outcome, RunSpec

Log = Callable[[str], None]
BUSY_POLL_S = 2.0      # how soon a busy spec is tried again
WAIT_LINE_S = 30.0     # one 'waiting for ...' line at most this often
MAX_RETRIES = 3        # a run whose worker is killed more often than this fails


class Schedule:
    """Which specs may start now, and what became of each."""

    def __init__(self, specs: list[RunSpec], log: Log):
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            twice = sorted(n for n in names if names.count(n) > 1)[0]
            raise ReslabError(f"two runs share the name {twice}")
        for spec in specs:
            unknown = [a for a in spec.after if a not in names]
            if unknown:
                raise ReslabError(f"run {spec.name} waits for {unknown[0]}, which is not planned")
        self.todo, self.log = list(specs), log
        self.outcomes: dict[str, Outcome] = {}
        self.not_before: dict[str, float] = {}
        self.retries: dict[str, int] = {}
        self.last_wait_line = 0.0

    def done(self) -> bool:
        return not self.todo

    def take_ready(self) -> RunSpec | None:
        """The next spec that may start now (removed from the to-do list), else None."""
        now = time.monotonic()
        for spec in self.todo:
            failed = [a for a in spec.after if a in self.outcomes and not self.outcomes[a].ok]
            if failed:
                self.todo.remove(spec)
                self.outcomes[spec.name] = Outcome(spec.name, "failed",
                                                   f"not run: {failed[0]} failed")
                return self.take_ready()
            if all(a in self.outcomes for a in spec.after) and \
                    self.not_before.get(spec.name, 0.0) <= now:
                self.todo.remove(spec)
                return spec
        return None

    def finish(self, spec: RunSpec, outcome: Outcome) -> None:
        if outcome.status == "busy":
            self.todo.append(spec)
            self.not_before[spec.name] = time.monotonic() + BUSY_POLL_S
            self._wait_line(spec, outcome)
            return
        self.outcomes[spec.name] = outcome

    def lost(self, spec: RunSpec, why: str, retry: bool) -> None:
        """The worker running `spec` died: retry the run (it resumes), or fail it."""
        tries = self.retries[spec.name] = self.retries.get(spec.name, 0) + 1
        if retry and tries <= MAX_RETRIES:
            warn(f"{spec.name}: {why}; retrying (it resumes from its last checkpoint)")
            self.todo.insert(0, spec)
        else:
            self.outcomes[spec.name] = Outcome(spec.name, "failed", why, exit_code=1)

    def next_start(self) -> float | None:
        """Seconds until a busy spec may be tried again (None: nothing is waiting)."""
        times = [self.not_before[s.name] for s in self.todo if s.name in self.not_before]
        return max(0.0, min(times) - time.monotonic()) if times else None

    def _wait_line(self, spec: RunSpec, outcome: Outcome) -> None:
        now = time.monotonic()
        if now - self.last_wait_line >= WAIT_LINE_S:
            self.last_wait_line = now
            self.log(f"waiting for {spec.name}: being trained by {outcome.holder} (checked "
                     f"every {BUSY_POLL_S:g} s; a dead holder on this host is taken over at "
                     "once, one elsewhere after the claim's grace period)")
