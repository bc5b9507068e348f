"""LaTeX a paper can use: every table is a `table` float with a caption and a label, wide tables
shrink to the line width, text is escaped, numbers carry real minus signs and no signed zero.

A table file needs `\\usepackage{booktabs,graphicx}` (said in its first line) and compiles when
`\\input` anywhere in a document; `results/paper_tables.tex` inputs them all and is compiled in CI.
"""

from __future__ import annotations

import re
from pathlib import Path

# Defined once however many tables a document inputs: the tabular is set in a box and scaled
# down to \linewidth only when it is wider (never scaled up).
FIT_PREAMBLE = [
    r"\ifdefined\mtlrecbox\else\newsavebox{\mtlrecbox}\fi",
    r"\providecommand{\mtlrecfit}[1]{\sbox{\mtlrecbox}{#1}\ifdim\wd\mtlrecbox>\linewidth"
    r"\resizebox{\linewidth}{!}{\usebox{\mtlrecbox}}\else\usebox{\mtlrecbox}\fi}",
]

_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "±": r"$\pm$", "−": r"$-$", "Δ": r"$\Delta$", "≥": r"$\geq$", "≤": r"$\leq$",
    "–": "--", "*": r"$^{*}$", "<": r"$<$", ">": r"$>$", "α": r"$\alpha$", "τ": r"$\tau$",
}
_NUMBER_MINUS = re.compile(r"(?<![\w.])-(?=\.?\d)")  # the '-' of '-0.0133', not of '--'


def escape(text: str) -> str:
    """Plain text -> LaTeX: specials escaped, a number's '-' a math minus, '±' a math pm; a cell
    that is only a sign ('-', '+') becomes a math sign."""
    if text.strip() in ("-", "+"):
        return f"${text.strip()}$"
    text = _NUMBER_MINUS.sub("−", text)
    return "".join(_SPECIAL.get(ch, ch) for ch in text)


def fixed(value: float, decimals: int) -> str:
    """'0.9505'; a value that rounds to zero prints '0.0000', never '-0.0000'."""
    text = f"{value:.{decimals}f}"
    return text.lstrip("-") if float(text) == 0 else text


def signed(value: float, decimals: int) -> str:
    """'+0.0041' / '-0.0002'; a value that rounds to zero prints '0.0000' with no sign."""
    text = f"{value:+.{decimals}f}"
    return text[1:] if float(text) == 0 else text


def signed_percent(value: float, decimals: int = 1) -> str:
    """'+31.0%' / '-2.5%'; '0.0%' for a value that rounds to zero."""
    text = f"{value:+.{decimals}%}"
    return text[1:] if float(text[:-1]) == 0 else text


def tex_row(cells: list[str]) -> str:
    """One tabular row of plain-text cells; a cell's leading spaces (a sub-row such as the
    paper's values under ours) become an indent."""
    return " & ".join(_indented(cell) for cell in cells) + r" \\"


def _indented(cell: str) -> str:
    text = cell.lstrip(" ")
    return (r"\quad " if len(text) < len(cell) else "") + escape(text)


def render_table(caption: str, label: str, colspec: str, head: list[str],
                 body: list[list[str]], notes: list[str]) -> str:
    """A complete table float. `head`: header lines, already LaTeX (see `tex_row`); `body`: plain
    text cells; `notes`: kept as comments above the float (provenance, tests)."""
    lines = [r"% needs \usepackage{booktabs,graphicx}", f"% {caption}"]
    lines += [f"% {note}" for note in notes]
    lines += FIT_PREAMBLE + [
        r"\begin{table}[htbp]", r"\centering", rf"\caption{{{escape(caption)}}}",
        rf"\label{{tab:{label}}}", r"\mtlrecfit{%", rf"\begin{{tabular}}{{{colspec}}}",
        r"\toprule", *head, r"\midrule", *(tex_row(cells) for cells in body),
        r"\bottomrule", r"\end{tabular}}", r"\end{table}",
    ]
    return "\n".join(lines) + "\n"


def render_document(tables: list[Path], root: Path) -> str:
    """A stand-alone document that inputs every table file (paths relative to `root`)."""
    inputs = [rf"\input{{{path.relative_to(root).with_suffix('').as_posix()}}}" for path in tables]
    return "\n".join([
        "% Every table of the reproduction; compile with `pdflatex paper_tables.tex` here.",
        r"\documentclass{article}", r"\usepackage[T1]{fontenc}", r"\usepackage{lmodern}",
        r"\usepackage[margin=2.5cm]{geometry}", r"\usepackage{booktabs,graphicx}",
        r"\begin{document}", *inputs, r"\end{document}",
    ]) + "\n"
