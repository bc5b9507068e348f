"""Table 2 (multi-task AUC) from per-run metrics.json files: LaTeX (booktabs), Markdown, CSV.

Each cell is mean ± sample std over seeds, with the paper's value beside it; the Gain columns are
the difference of means against the baseline row (Single Task), as in the paper.
"""

from __future__ import annotations

import json
import statistics
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from mtlrec.errors import MtlrecError
from mtlrec.provenance import device_label, write_text_atomic
from mtlrec.report import cells as curated
from mtlrec.report.latex import fixed, render_table, signed, tex_row


def display(params: dict[str, Any], name: str) -> str:
    """A run's name in tables and figures: `display.names.<name>` of params, else the name."""
    return (params.get("display", {}).get("names") or {}).get(name, name)


def paper_values() -> dict[str, Any]:
    text = resources.files("mtlrec.report").joinpath("paper_values.yaml").read_text()
    return yaml.safe_load(text)


def run_dir(runs_root: Path, experiment: str, model: str, seed: int) -> Path:
    """runs/<experiment>/<model or variant>/seed=<seed>: one run's folder."""
    return runs_root / experiment / model / f"seed={seed}"


def collect(runs_root: Path, experiment: str, models: list[str], seeds: list[int]
            ) -> dict[str, list[dict[str, Any]]]:
    """model -> list of metrics dicts (one per seed, in seed order). Missing runs are an error."""
    found: dict[str, list[dict[str, Any]]] = {}
    for model in models:
        found[model] = []
        for seed in seeds:
            path = run_dir(runs_root, experiment, model, seed) / "metrics.json"
            if not path.is_file():
                raise MtlrecError(f"table: missing run {path}; train it first")
            found[model].append(json.loads(path.read_text()))
    return found


def paired_significance(rows: list[dict[str, Any]], candidate: str, level: float) -> None:
    """Mark the candidate's cells that beat the best other model (by mean) significantly.

    Test: two-sided paired t-test over seeds (scipy.stats.ttest_rel); seeds pair up because each
    seed fixes the val/test split and the initialisation. Adds 'p_value', 'versus', 'delta'
    (candidate mean minus the other's: negative when the candidate is behind) and 'significant'
    to each of the candidate's task cells (p is NaN with fewer than 2 seeds).
    """
    from scipy.stats import ttest_rel

    by_model = {row["model"]: row for row in rows}
    others = [r for r in rows if r["model"] != candidate]
    if candidate not in by_model or not others:
        return
    for task, cell in by_model[candidate]["tasks"].items():
        best = max(others, key=lambda r: r["tasks"][task]["mean"])
        theirs = best["tasks"][task]["values"]
        p_value = float("nan")
        if len(cell["values"]) > 1 and len(cell["values"]) == len(theirs):
            p_value = float(ttest_rel(cell["values"], theirs).pvalue)
        delta = cell["mean"] - best["tasks"][task]["mean"]
        cell.update(p_value=p_value, versus=best["model"], delta=delta,
                    significant=bool(p_value < level and delta > 0))


def summarise(runs: dict[str, list[dict[str, Any]]], baseline: str) -> list[dict[str, Any]]:
    """One row per model: per task mean, std, n, gain over the baseline's mean of the runs'
    test metric (the experiment's, e.g. test_auc)."""
    first = next(iter(runs.values()))[0]
    tasks, key = first["tasks"], f"test_{first.get('metric', 'auc')}"
    for model, rs in runs.items():
        for r in rs:
            undefined = [t for t in tasks if r[key][t] is None]
            if undefined:
                raise MtlrecError(f"table: {model} seed={r['seed']} has no {key} for {undefined}"
                                  " (a single-class test split): use more test rows")
    means = {
        model: {t: statistics.fmean(r[key][t] for r in rs) for t in tasks}
        for model, rs in runs.items()
    }
    rows = []
    for model, rs in runs.items():
        row: dict[str, Any] = {"model": model, "n_seeds": len(rs), "tasks": {},
                               "metric": metric_label(first)}
        for task in tasks:
            values = [r[key][task] for r in rs]
            row["tasks"][task] = {
                "mean": means[model][task],
                "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "gain": None if model == baseline else means[model][task] - means[baseline][task],
                "values": values,
            }
        rows.append(row)
    return rows


def _provenance_lines(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    first = next(iter(runs.values()))[0]
    prov = first["provenance"]
    commits = sorted({r["provenance"]["git_commit"] for rs in runs.values() for r in rs})
    devices = sorted({device_label(r["provenance"]) for rs in runs.values() for r in rs})
    kernels = sorted({r["provenance"].get("linear_kernels", "torch") for rs in runs.values()
                      for r in rs})
    seeds = [r["seed"] for r in next(iter(runs.values()))]
    versions = ", ".join(f"{k} {v}" for k, v in sorted(prov["versions"].items()))
    return [
        f"seeds: {seeds}",
        f"git commits of the runs: {', '.join(commits)}",
        f"devices: {', '.join(devices)}; threads per run: {prov['num_threads']}; "
        f"dense-layer kernels: {', '.join(kernels)}",
        f"versions: {versions}",
        f"rows train/val/test: {first['rows']['train']}/{first['rows']['val']}/"
        f"{first['rows']['test']}",
    ]


def _significance_note(params: dict[str, Any], rows: list[dict[str, Any]],
                       significance: dict[str, Any], decimals: int) -> str:
    """The footnote of the candidate's test against the best other model per task: the signed
    difference of means (so a candidate behind cannot read as ahead) and the p-value."""
    candidate = next((r for r in rows if r["model"] == significance["candidate"]), None)
    if candidate is None:
        return "significance: candidate not in the table"
    parts = [
        f"{task} vs {display(params, c['versus'])} {signed(c['delta'], decimals)} "
        f"p={c['p_value']:.3g}"
        for task, c in candidate["tasks"].items() if "versus" in c
    ]
    name = display(params, significance["candidate"])
    return (f"*: {name} above the best other model with p < {significance['level']} "
            f"(two-sided paired t-test over seeds; {name} minus that model's mean, p): "
            f"{'; '.join(parts)}")


def _fmt(value: float, decimals: int) -> str:
    return fixed(value, decimals)


def _mean_std(cell: dict[str, Any], decimals: int, pm: str, star: str = "") -> str:
    """'mean ± std' (the mean alone when one seed gives no spread), starred when significant."""
    mark = star if cell.get("significant") else ""
    if len(cell["values"]) < 2:
        return _fmt(cell["mean"], decimals) + mark
    return f"{_fmt(cell['mean'], decimals)}{mark}{pm}{_fmt(cell['std'], decimals)}"


def _gain(value: float | None, decimals: int) -> str:
    return "--" if value is None else signed(value, decimals)


def metric_label(metrics: dict[str, Any]) -> str:
    """The tables' label of a run's metric (AUC for runs made before metrics were named)."""
    from mtlrec.evaluate.metrics import get_metric

    return get_metric(metrics.get("metric", "auc")).label


def _cells(params: dict[str, Any], row: dict[str, Any], paper: dict[str, Any], decimals: int
           ) -> list[str]:
    """One model's plain-text cells: name, (ours, paper) per task, gain per task."""
    cells = [display(params, row["model"])]
    for task, cell in row["tasks"].items():
        ref = paper.get(row["model"], {}).get(task)
        cells += [_mean_std(cell, decimals, " ± ", "*"),
                  "--" if ref is None else _fmt(ref, decimals)]
    return cells + [_gain(cell["gain"], decimals) for cell in row["tasks"].values()]


def render_markdown(params: dict[str, Any], rows: list[dict[str, Any]], paper: dict[str, Any],
                    decimals: int, title: str, notes: list[str]) -> str:
    tasks, label = list(rows[0]["tasks"]), rows[0]["metric"]
    head = ["Model"]
    for i, _ in enumerate(tasks, 1):
        head += [f"{label}/T{i} (ours)", f"{label}/T{i} (paper)"]
    head += [f"Gain/T{i}" for i, _ in enumerate(tasks, 1)]
    lines = [f"# {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_cells(params, r, paper, decimals)) + " |" for r in rows]
    lines += [""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def render_latex(params: dict[str, Any], rows: list[dict[str, Any]], paper: dict[str, Any],
                 decimals: int, title: str, notes: list[str], label: str) -> str:
    n, metric = len(rows[0]["tasks"]), rows[0]["metric"]
    head = [
        " & ".join(["Model"]
                   + [rf"\multicolumn{{2}}{{c}}{{{metric}/T{i}}}" for i in range(1, n + 1)]
                   + [f"Gain/T{i}" for i in range(1, n + 1)]) + r" \\",
        "".join(rf"\cmidrule(lr){{{2 * i}-{2 * i + 1}}}" for i in range(1, n + 1)),
        tex_row(["", *(["ours", "paper"] * n), *([""] * n)]),
    ]
    body = [_cells(params, r, paper, decimals) for r in rows]
    return render_table(title, label, "l" + "rr" * n + "r" * n, head, body, notes)


def render_csv(rows: list[dict[str, Any]]) -> str:
    lines = [f"model,task,seed_index,test_{rows[0]['metric'].lower()}"]
    for row in rows:
        for task, cell in row["tasks"].items():
            lines += [f"{row['model']},{task},{i},{v!r}" for i, v in enumerate(cell["values"])]
    return "\n".join(lines) + "\n"


def make_table2(params: dict[str, Any], experiment: str, runs_root: Path, out_dir: Path
                ) -> list[dict[str, Any]]:
    """Write out_dir/table2_<experiment>.{tex,md,csv}; reads `report.<experiment>.table2`,
    `experiments.<experiment>.dataset` and `train.seeds`."""
    table = params["report"][experiment]["table2"]
    dataset, decimals = params["experiments"][experiment]["dataset"], table["decimals"]
    runs = collect(runs_root, experiment, table["models"], params["train"]["seeds"])
    rows = summarise(runs, table["baseline"])
    notes = []
    significance = table.get("significance")
    if significance:
        paired_significance(rows, significance["candidate"], significance["level"])
        notes.append(_significance_note(params, rows, significance, decimals))
    paper = paper_values()["table2"].get(table.get("paper", dataset), {})
    title = (f"Table 2 ({dataset}): test {rows[0]['metric']}, mean ± std over "
             f"{len(params['train']['seeds'])} "
             f"seed(s); Gain = ours minus {display(params, table['baseline'])}")
    if table.get("note"):  # in the caption, so no copy of the table loses it
        title = f"{title}. {table['note']}"
    notes += _provenance_lines(runs)
    stem = out_dir / f"table2_{experiment}"
    write_text_atomic(stem.with_suffix(".tex"),
                      render_latex(params, rows, paper, decimals, title, notes, stem.name))
    write_text_atomic(stem.with_suffix(".md"),
                      render_markdown(params, rows, paper, decimals, title, notes))
    write_text_atomic(stem.with_suffix(".csv"), render_csv(rows))
    write_row_cells(curated.metrics_path(out_dir, stem.name), experiment, "table2", rows, paper)
    curated.write_curves(curated.plots_path(out_dir, f"val_curves_{experiment}"),
                         val_curves(runs))
    return rows


def val_curves(runs: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[int, float]]]:
    """`<model>/<task>` -> per seed {epoch: validation metric} from the runs' curves."""
    series: dict[str, list[dict[int, float]]] = {}
    for model, rs in runs.items():
        key = f"val_{rs[0].get('metric', 'auc')}"
        for i, task in enumerate(rs[0]["tasks"]):
            series[f"{model}/{task}"] = [{c["epoch"]: c[key][i] for c in r["curves"]} for r in rs]
    return series


def write_row_cells(path: Path, experiment: str, kind: str, rows: list[dict[str, Any]],
                    paper: dict[str, Any]) -> None:
    """The curated metrics file of a Table-2-shaped table (rows of `summarise`)."""
    cells = {row["model"]: {task: curated.cell(c["values"], paper.get(row["model"], {}).get(task))
                            for task, c in row["tasks"].items()} for row in rows}
    curated.write_cells(path, experiment=experiment, kind=kind, metric=rows[0]["metric"],
                n_seeds=rows[0]["n_seeds"], cells=cells)
