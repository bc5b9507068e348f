"""The numbers a person compares, one small JSON file per table: `results/metrics/<table>.json`.

Each file is `{"table", "experiment", "kind", "metric", "n_seeds", "cells": {row: {column: cell}}}`
with a cell `{"mean", "std", "n"}` plus `"paper"` where the paper reports the cell. DVC reads these
files as metrics (`dvc metrics show / diff`); the reproduction check and the HTML report read them
too, so every number they show is one a table shows.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from mtlrec.provenance import write_text_atomic

DIGITS = 6  # what the tables show at most is 5 decimals


def cell(values: list[float], paper: float | None = None) -> dict[str, Any]:
    """Mean, sample std (0 for one value) and count of one cell's per-seed values."""
    found: dict[str, Any] = {
        "mean": round(statistics.fmean(values), DIGITS),
        "std": round(statistics.stdev(values), DIGITS) if len(values) > 1 else 0.0,
        "n": len(values),
    }
    if paper is not None:
        found["paper"] = float(paper)
    return found


def write_cells(path: Path, *, experiment: str, kind: str, metric: str, n_seeds: int,
                cells: dict[str, dict[str, dict[str, Any]]]) -> None:
    document = {"table": path.stem, "experiment": experiment, "kind": kind, "metric": metric,
                "n_seeds": n_seeds, "cells": cells}
    write_text_atomic(path, json.dumps(document, indent=1) + "\n")


def read_cells(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def metrics_path(tables: Path, stem: str) -> Path:
    """results/tables -> results/metrics/<stem>.json (the folder beside the tables)."""
    return tables.parent / "metrics" / f"{stem}.json"


def write_curves(path: Path, series: dict[str, list[dict[int, float]]]) -> None:
    """Validation curves as one wide CSV for `dvc plots`: a column `epoch`, then one column per
    series (`<run>/<task or metric>`) holding the mean over the seeds that reached that epoch
    (empty after every seed stopped). `series[name]` is one {epoch: value} per seed."""
    epochs = sorted({e for runs in series.values() for run in runs for e in run})
    lines = [",".join(["epoch", *series])]
    for epoch in epochs:
        row = [str(epoch)]
        for runs in series.values():
            values = [run[epoch] for run in runs if epoch in run]
            row.append(f"{statistics.fmean(values):.6f}" if values else "")
        lines.append(",".join(row))
    write_text_atomic(path, "\n".join(lines) + "\n")


def plots_path(tables: Path, stem: str) -> Path:
    return tables.parent / "plots" / f"{stem}.csv"
