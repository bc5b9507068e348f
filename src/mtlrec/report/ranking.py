"""Reports of a ranking experiment (PMTRec): Table 2 (methods x top-K metrics), Table 3 (the task
study), the ablation (Fig. 4), the alpha / tau sensitivity (Fig. 5) and the validation curves
(Fig. 6). LaTeX (booktabs) + Markdown + CSV + PNG from metrics.json files only, mean +- std over
the seeds, the paper's values beside ours where the dataset is the paper's (`paper`), and a
paired t-test over seeds of the candidate against the best other method per metric.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from mtlrec.config import rank_report_runs, rank_table_metrics, sweep_point  # noqa: E402
from mtlrec.errors import MtlrecError  # noqa: E402
from mtlrec.provenance import device_label, write_text_atomic  # noqa: E402
from mtlrec.report.cells import (  # noqa: E402
    cell,
    metrics_path,
    plots_path,
    write_cells,
    write_curves,
)
from mtlrec.report.figures import save_png  # noqa: E402
from mtlrec.report.latex import signed_percent  # noqa: E402
from mtlrec.report.newtask import _mean_std, _paired_p, _write  # noqa: E402
from mtlrec.report.tables import collect, paper_values  # noqa: E402

SHORT = {"recall": "R", "ndcg": "N", "hr": "HR"}


def _label(params: dict[str, Any], run: str) -> str:
    spec = params["rank_methods"].get(run)
    if spec is not None:
        return spec.get("label", run)
    method, _, point = run.partition("-")
    return f"{params['rank_methods'][method].get('label', method)} ({point})"


def _short_metric(name: str) -> str:
    kind, _, k = name.partition("@")
    return f"{SHORT[kind]}@{k}"


def _provenance(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    first = next(iter(runs.values()))[0]
    commits = sorted({r["provenance"]["git_commit"] for rs in runs.values() for r in rs})
    devices = sorted({device_label(r["provenance"]) for rs in runs.values() for r in rs})
    versions = ", ".join(f"{k} {v}" for k, v in sorted(first["provenance"]["versions"].items()))
    data = first["data"]
    return [f"seeds: {[r['seed'] for r in next(iter(runs.values()))]}",
            f"data: {data['users']:,} users, {data['items']:,} items, {data['interactions']:,} "
            f"interactions ({data['train']:,} in training), test users {first['test_users']:,}",
            f"git commits of the runs: {', '.join(commits)}",
            f"devices: {', '.join(devices)}; versions: {versions}"]


def _metrics(params: dict[str, Any], table: dict[str, Any]) -> list[str]:
    return rank_table_metrics(params, table)


def _paper(table: dict[str, Any], kind: str) -> dict[str, Any]:
    if not table.get("paper"):
        return {}
    return paper_values().get("pmtrec", {}).get(kind, {}).get(table["paper"], {})


def _values(runs: list[dict[str, Any]], metric: str) -> list[float]:
    return [r["test"][metric] for r in runs]


def _method_table(params: dict[str, Any], experiment: str, kind: str, runs_root: Path,
                  tables: Path) -> dict[str, list[dict[str, Any]]]:
    """Methods x metrics (mean +- std; the paper's row under ours where it has one), with a
    paired test of the candidate against the best other method of each metric."""
    table = params["report"][experiment][kind]
    seeds = params["rank_train"]["seeds"]
    methods = rank_report_runs(params["report"][experiment])[kind]
    runs = collect(runs_root, experiment, methods, seeds)
    metrics = _metrics(params, table)
    paper = _paper(table, kind)
    decimals = table["decimals"]
    head = ["method", *(_short_metric(m) for m in metrics)]
    body: list[list[str]] = []
    csv = ["method,source," + ",".join(metrics)]
    for method in methods:
        means = [statistics.fmean(_values(runs[method], m)) for m in metrics]
        body.append([_label(params, method), *(_mean_std(_values(runs[method], m), decimals)
                                               for m in metrics)])
        csv.append(f"{method},ours," + ",".join(f"{v:.6f}" for v in means))
        if method in paper:
            cells = [paper[method].get(m) for m in metrics]
            body.append(["  paper", *("" if c is None else f"{c:.{decimals}f}" for c in cells)])
            csv.append(f"{method},paper," + ",".join("" if c is None else str(c) for c in cells))
    notes = [f"test split, full ranking over all items but the user's training items; mean ± "
             f"std over {len(seeds)} seed(s)"]
    candidate = table.get("candidate")
    if candidate and len(methods) > 1:
        row = [f"p ({_label(params, candidate)} vs best other)"]
        for m in metrics:
            others = {o: statistics.fmean(_values(runs[o], m)) for o in methods if o != candidate}
            best = max(others, key=others.get)
            p = _paired_p(_values(runs[candidate], m), _values(runs[best], m))
            gain = statistics.fmean(_values(runs[candidate], m)) / others[best] - 1
            row.append("n/a" if math.isnan(p) else f"{p:.3f} ({signed_percent(gain)} vs {best})")
        body.append(row)
        notes.append(f"p: paired t-test over seeds of {candidate} against the best other method "
                     f"of each column (by mean); significant below {table.get('level', 0.05)}; "
                     "n/a with one seed")
    if paper:
        notes.append(f"paper: PMTRec (Yang et al. 2024) values for '{table['paper']}' "
                     "(report/paper_values.yaml)")
    elif table.get("paper") is None:
        notes.append("no paper values: the paper did not use this dataset")
    notes += _provenance(runs)
    title = {"rank_table2": "Table 2", "rank_table3": "Table 3 (task study)",
             "rank_ablation": "Ablation (Fig. 4)"}[kind]
    caption = (f"{title} ({experiment}): test Recall@K (R) and NDCG@K (N), mean ± std over "
               f"{len(seeds)} seed(s)")
    _write(tables / f"{kind}_{experiment}", caption, head, body, notes,
           "\n".join(csv) + "\n")
    cells = {method: {m: cell(_values(runs[method], m), paper.get(method, {}).get(m))
                      for m in metrics} for method in methods}
    write_cells(metrics_path(tables, f"{kind}_{experiment}"), experiment=experiment, kind=kind,
                metric="top-K", n_seeds=len(seeds), cells=cells)
    return runs


def make_rank_report(params: dict[str, Any], experiment: str, kind: str, runs_root: Path,
                     tables: Path, figures: Path) -> None:
    """Write the files of report `kind` (workflow.report_outputs) of a ranking experiment."""
    if kind not in params["report"].get(experiment, {}):
        raise MtlrecError(f"report: no report.{experiment}.{kind} section")
    tables.mkdir(parents=True, exist_ok=True)
    figures.mkdir(parents=True, exist_ok=True)
    if kind in ("rank_table2", "rank_table3"):
        _method_table(params, experiment, kind, runs_root, tables)
    elif kind == "rank_ablation":
        runs = _method_table(params, experiment, kind, runs_root, tables)
        _ablation_plot(params, experiment, runs, figures / f"{kind}_{experiment}.png")
    elif kind == "rank_sensitivity":
        _sensitivity(params, experiment, runs_root, tables, figures)
    else:
        _curves(params, experiment, runs_root, tables, figures)


def _ablation_plot(params: dict[str, Any], experiment: str,
                   runs: dict[str, list[dict[str, Any]]], path: Path) -> None:
    table = params["report"][experiment]["rank_ablation"]
    metrics = _metrics(params, table)
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.2),
                             layout="constrained")
    axes = [axes] if len(metrics) == 1 else list(axes)
    for ax, metric in zip(axes, metrics, strict=True):
        names = list(runs)
        means = [statistics.fmean(_values(runs[n], metric)) for n in names]
        stds = [statistics.stdev(_values(runs[n], metric)) if len(runs[n]) > 1 else 0.0
                for n in names]
        ax.bar(range(len(names)), means, yerr=stds, capsize=3,
               color=["#9ecae1"] * (len(names) - 1) + ["#3182bd"])
        ax.set_xticks(range(len(names)), [_label(params, n) for n in names], rotation=20,
                      ha="right", fontsize=8)
        ax.set_ylabel(_short_metric(metric))
        low = min(m - s for m, s in zip(means, stds, strict=True))
        ax.set_ylim(max(0.0, low * 0.9), max(m + s for m, s in zip(means, stds, strict=True))
                    * 1.03)
    fig.suptitle(f"PMTRec ablation, {experiment} (test, ± std over seeds)", fontsize=9)
    save_png(fig, path)


def _sensitivity(params: dict[str, Any], experiment: str, runs_root: Path, tables: Path,
                 figures: Path) -> None:
    sweep = params["report"][experiment]["rank_sensitivity"]
    seeds = params["rank_train"]["seeds"]
    metric = sweep["metric"]
    keys = [k for k in ("alpha", "tau") if sweep.get(k)]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.2), squeeze=False,
                             layout="constrained")
    md = [f"# Sensitivity (Fig. 5): {experiment}, test {_short_metric(metric)}", "",
          "| option | value | mean ± std |", "|---|---|---|"]
    csv = ["option,value,mean,std"]
    for ax, key in zip(axes[0], keys, strict=True):
        values = sweep[key]
        points = [sweep_point(sweep["method"], key, v) for v in values]
        runs = collect(runs_root, experiment, points, seeds)
        means, stds = [], []
        for value, point in zip(values, points, strict=True):
            scores = _values(runs[point], metric)
            means.append(statistics.fmean(scores))
            stds.append(statistics.stdev(scores) if len(scores) > 1 else 0.0)
            md.append(f"| {key} | {value:g} | {_mean_std(scores, 4)} |")
            csv.append(f"{key},{value!r},{means[-1]:.6f},{stds[-1]:.6f}")
        ax.errorbar(values, means, yerr=stds, marker="o", capsize=3)
        if key == "tau":
            ax.set_xscale("log")
        ax.set_xlabel("α (task focusing base)" if key == "alpha" else "τ (temperature)")
        ax.set_ylabel(f"test {_short_metric(metric)}")
        ax.grid(alpha=0.3)
    fig.suptitle(f"PMTRec sensitivity, {experiment} (± std over {len(seeds)} seed(s))",
                 fontsize=9)
    save_png(fig, figures / f"rank_sensitivity_{experiment}.png")
    write_text_atomic(tables / f"rank_sensitivity_{experiment}.md", "\n".join(md) + "\n")
    write_text_atomic(tables / f"rank_sensitivity_{experiment}.csv", "\n".join(csv) + "\n")


def _curves(params: dict[str, Any], experiment: str, runs_root: Path, tables: Path,
            figures: Path) -> None:
    table = params["report"][experiment]["rank_curves"]
    seeds = params["rank_train"]["seeds"]
    metric = _metrics(params, table)[0]
    runs = collect(runs_root, experiment, list(table["methods"]), seeds)
    fig, ax = plt.subplots(figsize=(5.5, 3.4), layout="constrained")
    md = [f"# Validation curves (Fig. 6): {experiment}, {_short_metric(metric)}", "",
          "| method | best epoch per seed | epochs run | best val |", "|---|---|---|---|"]
    for method, results in runs.items():
        first = [e for e in results[0]["curves"] if "val" in e]
        ax.plot([e["epoch"] for e in first], [e["val"][metric] for e in first],
                label=_label(params, method))
        md.append(f"| {_label(params, method)} | {[r['best_epoch'] for r in results]} | "
                  f"{[r['epochs_run'] for r in results]} | "
                  f"{_mean_std([r['val'][metric] for r in results], 4)} |")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"validation {_short_metric(metric)}")
    ax.set_title(f"{experiment}: seed {seeds[0]}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save_png(fig, figures / f"rank_curves_{experiment}.png")
    write_text_atomic(tables / f"rank_curves_{experiment}.md", "\n".join(md) + "\n")
    series = {f"{method}/{metric}": [{e["epoch"]: e["val"][metric] for e in r["curves"]
                                      if "val" in e} for r in results]
              for method, results in runs.items()}
    write_curves(plots_path(tables, f"rank_val_curves_{experiment}"), series)
