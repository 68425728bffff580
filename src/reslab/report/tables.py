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
