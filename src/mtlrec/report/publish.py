"""What the pipeline publishes over all experiments: `results/paper_tables.tex` (every LaTeX table
in one stand-alone document) and the reproduction check (every paper cell, ours, the delta and
its tolerance from params `reproduction`) as `docs/reproduction.md` + `results/reproduction.csv`.

Both read result files only (the tables and their curated metrics files), never runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtlrec import workflow
from mtlrec.config import is_ranking
from mtlrec.errors import MtlrecError
from mtlrec.provenance import write_text_atomic
from mtlrec.report.cells import read_cells
from mtlrec.report.latex import render_document, signed

PAPERS = {"mptrec": "MPT-Rec (Bai et al. 2024)", "pmtrec": "PMTRec (Yang et al. 2024)"}


def paper_of(params: dict[str, Any], experiment: str) -> str:
    return "pmtrec" if is_ranking(params, experiment) else "mptrec"


def outputs_of(params: dict[str, Any], suffix: str, paper: str | None = None) -> list[str]:
    """The report outputs (paths under the output root) of the experiments in `build` that end
    with `suffix`, in build order; only one paper's with `paper`."""
    return [path for experiment in params["build"]
            if paper is None or paper_of(params, experiment) == paper
            for kind in workflow.report_kinds(params, experiment)
            for path in workflow.report_outputs(experiment, kind).values()
            if path.endswith(suffix)]


def split_built(params: dict[str, Any], root: Path, suffix: str) -> tuple[list[str], list[str]]:
    """(outputs that exist, outputs not built yet). The pipeline builds every one before it
    publishes; by hand (`mtlrec publish` on a partial results tree) the missing ones are named
    in what is published, never silently left out."""
    paths = outputs_of(params, suffix)
    return ([p for p in paths if (root / p).is_file()],
            [p for p in paths if not (root / p).is_file()])


# ------------------------------------------------------------------------------ LaTeX document
def make_paper_tables(params: dict[str, Any], root: Path, out: Path) -> None:
    built, missing = split_built(params, root, ".tex")
    if not built:
        raise MtlrecError("paper tables: no LaTeX table is built yet; run the reports first")
    text = render_document([root / p for p in built], out.parent)
    notes = "".join(f"% not built yet: {p}\n" for p in missing)
    write_text_atomic(out, notes + text)


# -------------------------------------------------------------------------- reproduction check
@dataclass
class Checked:
    """One paper cell: ours against the paper's value, within its tolerance or not."""

    table: str
    row: str
    column: str
    ours: float
    std: float
    n: int
    paper: float
    allowed: float

    @property
    def delta(self) -> float:
        return self.ours - self.paper

    @property
    def within(self) -> bool:
        return abs(self.delta) <= self.allowed

    @property
    def excess(self) -> float:
        """|delta| in units of the tolerance (above 1: outside)."""
        return abs(self.delta) / self.allowed if self.allowed else float("inf")


def allowed(tolerance: dict[str, float], paper: float) -> float:
    """An absolute tolerance, or a relative one (a share of the paper's value)."""
    if "abs" in tolerance:
        return float(tolerance["abs"])
    return float(tolerance["rel"]) * abs(paper)


def checked_cells(params: dict[str, Any], root: Path) -> list[Checked]:
    """Every cell with a paper value in the curated metrics files of the tables in `build`
    whose kind has a tolerance in `reproduction.tolerance`, but for tables marked
    `wiring_only` (the bundled samples of Ali-CCP and ByteRec)."""
    tolerances = params["reproduction"]["tolerance"]
    found = []
    for path in split_built(params, root, ".json")[0]:
        document = read_cells(root / path)
        tolerance = tolerances.get(document["kind"])
        report = params["report"].get(document["experiment"], {}).get(document["kind"], {})
        if tolerance is None or report.get("wiring_only", False):
            continue  # no tolerance, or a sample run for the wiring (its caption says so)
        for row, columns in document["cells"].items():
            for column, cell in columns.items():
                if "paper" in cell:
                    found.append(Checked(document["table"], row, column, cell["mean"],
                                         cell["std"], cell["n"], cell["paper"],
                                         allowed(tolerance, cell["paper"])))
    return found


def summary_line(cells: list[Checked], wiring_only: bool) -> str:
    if not cells:
        return "reproduction check: no paper cell in the tables built"
    inside = sum(c.within for c in cells)
    worst = sorted(cells, key=lambda c: -c.excess)[:3]
    shown = "; ".join(f"{c.table} {c.row}/{c.column} {c.ours:.4f} vs {c.paper:.4f}"
                      for c in worst if not c.within)
    line = (f"reproduction check: {inside} of {len(cells)} paper cells within tolerance"
            + (f"; worst: {shown}" if shown else ""))
    return line + (" (wiring only: this profile's data and epochs are tiny)" if wiring_only
                   else "")


def make_reproduction(params: dict[str, Any], root: Path, md: Path, csv: Path) -> str:
    """Write the check's Markdown page and CSV; return its one-line summary."""
    config = params["reproduction"]
    cells = checked_cells(params, root)
    summary = summary_line(cells, config["wiring_only"])
    lines = ["# Reproduction check", "",
             "Generated by the pipeline (`mtlrec publish check`) from the curated metrics files "
             "`results/metrics/*.json`; tolerances from params.yaml `reproduction.tolerance` "
             "(abs: the same units as the metric; rel: a share of the paper's value). Never "
             "edit by hand.", "", f"**{summary}**", ""]
    missing = split_built(params, root, ".json")[1]
    if missing:
        lines += ["Not built yet, so not checked: " + ", ".join(
            f"`{Path(p).stem}`" for p in missing) + ".", ""]
    if config["wiring_only"]:
        lines += ["> This page was made on a profile that checks wiring only: its numbers come "
                  "from tiny data and a few epochs and say nothing about the reproduction.", ""]
    tolerances = ", ".join(f"{kind}: {', '.join(f'{k} {v}' for k, v in tol.items())}"
                           for kind, tol in config["tolerance"].items())
    lines += [f"Tolerances: {tolerances}.", "",
              "| table | row | column | ours (mean ± std, n) | paper | delta | tolerance | "
              "within |", "|---|---|---|---|---|---|---|---|"]
    rows_csv = ["table,row,column,ours,std,n,paper,delta,tolerance,within"]
    for c in cells:
        ours = f"{c.ours:.4f} ± {c.std:.4f} ({c.n})" if c.n > 1 else f"{c.ours:.4f} (1)"
        lines.append(f"| {c.table} | {c.row} | {c.column} | {ours} | {c.paper:.4f} | "
                     f"{signed(c.delta, 4)} | {c.allowed:.4f} | "
                     f"{'yes' if c.within else '**no**'} |")
        rows_csv.append(f"{c.table},{c.row},{c.column},{c.ours},{c.std},{c.n},{c.paper},"
                        f"{c.delta:.6f},{c.allowed:.6f},{int(c.within)}")
    write_text_atomic(md, "\n".join(lines) + "\n")
    write_text_atomic(csv, "\n".join(rows_csv) + "\n")
    return summary
