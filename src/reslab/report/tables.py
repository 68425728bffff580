"""Tables for papers: LaTeX with booktabs rules (\\toprule, \\midrule, \\bottomrule).

A few lines instead of a dependency: pandas' Styler.to_latex would pull in pandas for this.
Cells arrive as display text (numbers already formatted); LaTeX's special characters are
escaped, and ± and the em dash of an empty cell become their LaTeX forms.
"""
from __future__ import annotations

from collections.abc import Sequence

LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                 "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                 "^": r"\textasciicircum{}", "±": r"$\pm$", "—": "---"}


# Column headers a reader sees (report, .tex) for the raw keys the CSV files keep.
COLUMN_LABELS = {
    "test_acc": "test accuracy", "best_val_acc": "best val accuracy", "seeds": "seeds",
    "test_images": "test images", "params": "parameters", "epochs": "epochs",
    "seconds_per_epoch": "s / epoch", "device": "device", "isa": "CPU kernels",
    "perturbation": "perturbation", "severity": "severity", "clean_acc": "clean accuracy",
    "perturbed_acc": "perturbed accuracy", "drop": "drop", "mode": "mode",
    "factor": "factor", "setting": "setting", "mean_value": "mean objective",
    "trials": "trials", "variant": "variant",
}


def column_label(key: str) -> str:
    """'seconds_per_epoch' -> 's / epoch'; an unlisted key (e.g. a config key such as
    train.lr) is shown as written, underscores as spaces."""
    return COLUMN_LABELS.get(key, key.replace("_", " "))


def latex_escape(text: object) -> str:
    return "".join(LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def latex_table(headers: Sequence[str], rows: Sequence[Sequence[object]], caption: str,
                label: str, numeric: Sequence[bool] | None = None) -> str:
    """A `table` float holding a booktabs `tabular`: numeric columns right-aligned, the rest
    left; every cell escaped. Needs \\usepackage{booktabs} in the document."""
    numeric = list(numeric) if numeric is not None else [False] * len(headers)
    align = "".join("r" if n else "l" for n in numeric)
    body = [" & ".join(latex_escape(c) for c in row) + r" \\" for row in rows]
    return "\n".join([r"\begin{table}[ht]", r"\centering",
                      rf"\caption{{{latex_escape(caption)}}}", rf"\label{{{label}}}",
                      rf"\begin{{tabular}}{{{align}}}", r"\toprule",
                      " & ".join(latex_escape(h) for h in headers) + r" \\", r"\midrule",
                      *body, r"\bottomrule", r"\end{tabular}", r"\end{table}", ""])
