"""Only the report draws plots: a module outside report/ importing report.plots is a second
owner of a figure (the report would redraw or miss it)."""
import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "reslab"
# Drawn once, where the report cannot: Optuna's figures need the live study object; a study's
# per-factor figures come from its sweeps' trials (the report embeds them, never redraws
# them); lr-find's directory has no report.
ALLOWED = {"sweep/plots.py", "studies/study_outputs.py", "cli/lr_find.py"}


def plot_importers() -> set[str]:
    found = set()
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith("report/"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("report.plots"):
                found.add(rel)
    return found


def test_only_the_report_draws_plots():
    assert plot_importers() <= ALLOWED, plot_importers() - ALLOWED
