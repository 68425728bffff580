"""Reports for run, sweep and comparison directories: matplotlib plots, one self-contained
report.html and a report.md, read through the directory classes of `reslab.runs.rundir`."""
from __future__ import annotations

from .html import write_report

__all__ = ["write_report"]
