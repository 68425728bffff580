"""A sweep whose SQLite study was lost (issue 22, second probe): a zero-byte study.db beside
finished trials is refused; the trial directories are never deleted and retrained."""
from __future__ import annotations

from pathlib import Path


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_zero_byte_study_db_never_deletes_finished_trials(tmp_path, write_sweep, cli):
    spec = write_sweep(sampler="grid", space={"train.lr": {"values": [0.05]}})
    out = tmp_path / "out"
    code, _, err = cli("sweep", spec, "--out", out)
    assert code == 0, err
    assert (out / "trials" / "0" / "result.json").is_file()
    (out / "study.db").write_bytes(b"")
    before = snapshot(out)
    code, stdout, err = cli("sweep", spec, "--out", out)
    assert code == 2 and stdout == ""
    assert err == (f"reslab sweep: error: {out / 'study.db'} is empty (0 bytes) but "
                   f"{out / 'trials'} holds 1 trial directories: the study database was lost; "
                   "restore it from a backup, or sweep into a new --out DIR (nothing was "
                   "changed)\n")
    assert snapshot(out) == before
