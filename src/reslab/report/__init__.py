"""Reports for run, sweep and comparison directories: matplotlib plots, one self-contained
report.html and a report.md (see ARCHITECTURE.md for the files they read)."""
from __future__ import annotations

from .html import detect_kind, write_report

__all__ = ["detect_kind", "write_report"]
