"""A worker SIGKILLed mid-trial (SQLite): the heartbeat fails its trial, the re-run retries it
and finishes every grid point exactly once."""
from __future__ import annotations


def test_sqlite_killed_worker_is_retried_on_rerun(write_sweep, tmp_path, sw):
    sw.kill_and_resume(write_sweep, tmp_path, None, "killsqlite")
