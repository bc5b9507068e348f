"""The search's own table (#17): per model, the chosen grid point, how many points and tuned runs
reached the epoch cap, and the tuned test metric beside the default experiment's (the same
seeds, so the same splits: a paired t-test per task); then every grid point's validation scores.

Reads `report.<experiment>.tuning` ({models, reference, decimals}), the choice files
(runs/<e>/tuning/<run>/choice.json, mtlrec.train.tuning.select), every seed's metrics of the tuned
runs and of the reference experiment's runs. Writes results/tables/tuning_<e>.{tex,md,csv},
results/metrics/tuning_<e>.json and, given a figures folder, results/figures/tuning_<e>.png: per
model, every point's validation score against the learning rate (one line per setting of the
other grid keys), the chosen point starred.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from mtlrec.errors import MtlrecError
from mtlrec.provenance import write_text_atomic
from mtlrec.report import cells as curated
from mtlrec.report.figures import plt, save_png
from mtlrec.report.latex import fixed, render_table, signed, tex_row
from mtlrec.report.tables import collect, display
from mtlrec.train.tuning import choice_path, format_value, hit_cap, read_choice


def _paired_p(tuned: list[float], default: list[float]) -> float:
    """Two-sided paired t-test over seeds (NaN with fewer than 2 seeds or no spread)."""
    from scipy.stats import ttest_rel

    if len(tuned) < 2 or all(a == b for a, b in zip(tuned, default, strict=True)):
        return math.nan
    return float(ttest_rel(tuned, default).pvalue)


def summarise(params: dict[str, Any], experiment: str, runs_root: Path) -> list[dict[str, Any]]:
    """One row per model: its choice, the cap counts, tuned and default test values per task."""
    table = params["report"][experiment]["tuning"]
    seeds = params["train"]["seeds"]
    tuned = collect(runs_root, experiment, table["models"], seeds)
    default = collect(runs_root, table["reference"], table["models"], seeds)
    rows = []
    for model in table["models"]:
        chosen = read_choice(choice_path(runs_root, experiment, model))
        metric = chosen["metric"]
        tasks = {}
        for task in tuned[model][0]["tasks"]:
            ours = [r[f"test_{metric}"][task] for r in tuned[model]]
            ref = [r[f"test_{metric}"][task] for r in default[model]]
            tasks[task] = {"tuned": ours, "default": ref, "p_value": _paired_p(ours, ref)}
        caps = [r["params"]["train"]["epochs"] for r in tuned[model]]
        rows.append({
            "model": model, "metric": metric, "choice": chosen, "tasks": tasks,
            "points_at_cap": sum(p["hit_cap"] for p in chosen["points"].values()),
            "tuned_at_cap": sum(hit_cap(r, c) for r, c in zip(tuned[model], caps, strict=True)),
            "n_seeds": len(tuned[model]),
            "cap": caps[0],
        })
    return rows


def _mean_std(values: list[float], decimals: int, pm: str) -> str:
    mean = fixed(statistics.fmean(values), decimals)
    return mean if len(values) < 2 else f"{mean}{pm}{fixed(statistics.stdev(values), decimals)}"


def _p(value: float) -> str:
    return "--" if math.isnan(value) else f"{value:.3g}"


def _summary_cells(params: dict[str, Any], row: dict[str, Any], decimals: int, pm: str
                   ) -> list[str]:
    n_points = len(row["choice"]["points"])
    cells = [display(params, row["model"]), row["choice"]["choice"],
             f"{row['points_at_cap']}/{n_points}",
             f"{row['tuned_at_cap']}/{row['n_seeds']}"]
    for cell in row["tasks"].values():
        gain = statistics.fmean(cell["tuned"]) - statistics.fmean(cell["default"])
        cells += [_mean_std(cell["default"], decimals, pm), _mean_std(cell["tuned"], decimals, pm),
                  signed(gain, decimals), _p(cell["p_value"])]
    return cells


def _head(rows: list[dict[str, Any]]) -> list[str]:
    label = rows[0]["metric"].upper()
    head = ["Model", "chosen point", "points at cap", "tuned runs at cap"]
    for i, _ in enumerate(rows[0]["tasks"], 1):
        head += [f"{label}/T{i} default", f"{label}/T{i} tuned", f"Δ T{i}", f"p T{i}"]
    return head


def _point_lines(params: dict[str, Any], row: dict[str, Any], decimals: int) -> list[str]:
    chosen, metric = row["choice"], row["metric"]
    tasks = list(row["tasks"])
    head = ["point", *(f"val {metric.upper()}/{t}" for t in tasks), "score", "best epoch",
            "epochs run", "at cap"]
    lines = [f"## {display(params, row['model'])}: {len(chosen['points'])} points, seed "
             f"{chosen['seed']}, cap {row['cap']} epochs", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in chosen["order"]:
        point = chosen["points"][name]
        mark = " **(chosen)**" if name == chosen["choice"] else ""
        lines.append("| " + " | ".join([
            f"`{name}`{mark}", *(fixed(point[f"val_{metric}"][t], decimals) for t in tasks),
            fixed(point["score"], decimals), str(point["best_epoch"]), str(point["epochs_run"]),
            "yes" if point["hit_cap"] else "no"]) + " |")
    return lines + [""]


def _notes(params: dict[str, Any], experiment: str, rows: list[dict[str, Any]]) -> list[str]:
    table = params["report"][experiment]["tuning"]
    commits = sorted({c for r in rows for c in r["choice"]["grid_run_commits"]})
    return [
        f"search: each model's grid on seed {rows[0]['choice']['seed']}, the point with the best "
        f"sum of validation {rows[0]['metric'].upper()} over tasks (ties: grid order); tuned: "
        f"that point on seeds {params['train']['seeds']}",
        f"default: experiment {table['reference']} (one configuration per model, the official "
        "one), the same seeds and so the same splits",
        "p: two-sided paired t-test over seeds, tuned vs default; at cap: best epoch = the "
        "epoch cap (the cap binds)",
        f"git commits of the grid runs: {', '.join(commits)}",
    ]


def render_markdown(params: dict[str, Any], experiment: str, rows: list[dict[str, Any]],
                    decimals: int, title: str) -> str:
    head = _head(rows)
    lines = [f"# {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_summary_cells(params, r, decimals, " ± ")) + " |" for r in rows]
    lines += [""] + [f"- {note}" for note in _notes(params, experiment, rows)] + [""]
    for row in rows:
        lines += _point_lines(params, row, decimals)
    return "\n".join(lines)


def render_latex(params: dict[str, Any], experiment: str, rows: list[dict[str, Any]],
                 decimals: int, title: str) -> str:
    n = len(rows[0]["tasks"])
    head = [tex_row(_head(rows))]
    body = []
    for row in rows:
        cells = _summary_cells(params, row, decimals, " ± ")
        body.append([cells[0], cells[1].replace(",", ", "), *cells[2:]])
    return render_table(title, f"tuning_{experiment}", "llrr" + "rrrr" * n, head, body,
                        _notes(params, experiment, rows))


def render_csv(rows: list[dict[str, Any]]) -> str:
    """Every grid point of every model: its values, validation scores, epochs and the choice."""
    tasks = list(rows[0]["tasks"])
    metric = rows[0]["metric"]
    keys = list(dict.fromkeys(k for r in rows for p in r["choice"]["points"].values()
                              for k in p["values"]))
    lines = [",".join(["model", "point", *keys, *(f"val_{metric}_{t}" for t in tasks), "score",
                       "best_epoch", "epochs_run", "epochs_cap", "hit_cap", "chosen"])]
    for row in rows:
        chosen = row["choice"]
        for name in chosen["order"]:
            point = chosen["points"][name]
            values = [format_value(point["values"][k]) if k in point["values"] else ""
                      for k in keys]
            lines.append(",".join([
                row["model"], f'"{name}"', *values,
                *(repr(point[f"val_{metric}"][t]) for t in tasks), repr(point["score"]),
                str(point["best_epoch"]), str(point["epochs_run"]), str(point["epochs_cap"]),
                str(point["hit_cap"]).lower(), str(name == chosen["choice"]).lower()]))
    return "\n".join(lines) + "\n"


def _x_key(points: dict[str, Any]) -> str | None:
    """The grid key on the figure's x axis: train.lr when it varies, else the first numeric key
    that varies (None: one point, or nothing numeric varies)."""
    keys = list(next(iter(points.values()))["values"])
    varying = [k for k in keys if len({repr(p["values"][k]) for p in points.values()}) > 1]
    numeric = [k for k in varying if all(isinstance(p["values"][k], (int, float))
                                         and not isinstance(p["values"][k], bool)
                                         for p in points.values())]
    return "train.lr" if "train.lr" in numeric else (numeric[0] if numeric else None)


def make_tuning_figure(params: dict[str, Any], experiment: str, rows: list[dict[str, Any]],
                       path: Path) -> None:
    """Per model: validation score (sum over tasks) of every grid point against the x key,
    one line per setting of the other keys (dashed: ordered batches), the choice starred."""
    cols = min(4, len(rows))
    n_rows = -(-len(rows) // cols)
    fig, axes = plt.subplots(n_rows, cols, figsize=(3.6 * cols, 3.0 * n_rows),
                             layout="constrained", squeeze=False)
    for ax, row in zip(axes.flat, rows, strict=False):
        points, chosen = row["choice"]["points"], row["choice"]["choice"]
        x_key = _x_key(points)
        groups: dict[str, list[tuple[float, float]]] = {}
        ordered: dict[str, bool] = {}  # per line: batches in file order (train.shuffle false)
        for i, point in enumerate(points.values()):
            others = {k: v for k, v in point["values"].items() if k != x_key}
            label = ", ".join(f"{k.split('.')[-1]} {format_value(v)}" for k, v in others.items())
            x = point["values"][x_key] if x_key else i
            groups.setdefault(label, []).append((x, point["score"]))
            ordered[label] = others.get("train.shuffle") is False
        for label, line in groups.items():
            line.sort()
            ax.plot([x for x, _ in line], [y for _, y in line], marker="o", markersize=3,
                    linestyle="--" if ordered[label] else "-", label=label or "score")
        best = points[chosen]
        ax.plot(best["values"][x_key] if x_key else list(points).index(chosen), best["score"],
                marker="*", markersize=14, color="black", linestyle="none", label="chosen")
        if x_key is not None:
            xs = sorted({p["values"][x_key] for p in points.values()})
            if x_key == "train.lr":
                ax.set_xscale("log")
            ax.set_xticks(xs, [format_value(x) for x in xs])
            ax.minorticks_off()
        ax.set_xlabel(x_key or "grid point")
        ax.set_ylabel(f"validation {row['metric']}, sum over tasks")
        ax.set_title(f"{display(params, row['model'])} ({len(points)} points)")
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(rows):]:
        ax.set_visible(False)
    fig.suptitle(f"Grid search on validation ({experiment}): every point, the choice starred")
    save_png(fig, path)


def make_tuning_table(params: dict[str, Any], experiment: str, runs_root: Path, out_dir: Path,
                      figures: Path | None = None) -> list[dict[str, Any]]:
    table = params["report"][experiment].get("tuning")
    if table is None:
        raise MtlrecError(f"report.{experiment} has no tuning section")
    rows = summarise(params, experiment, runs_root)
    decimals = table["decimals"]
    title = (f"Grid search ({params['experiments'][experiment]['dataset']}): the chosen point "
             f"per model and its test {rows[0]['metric'].upper()} against the default "
             f"configuration ({table['reference']}), mean ± std over "
             f"{len(params['train']['seeds'])} seed(s)")
    stem = out_dir / f"tuning_{experiment}"
    write_text_atomic(stem.with_suffix(".md"),
                      render_markdown(params, experiment, rows, decimals, title))
    write_text_atomic(stem.with_suffix(".tex"),
                      render_latex(params, experiment, rows, decimals, title))
    write_text_atomic(stem.with_suffix(".csv"), render_csv(rows))
    cells = {row["model"]: {**{f"{t} default": curated.cell(c["default"])
                               for t, c in row["tasks"].items()},
                            **{f"{t} tuned": curated.cell(c["tuned"])
                               for t, c in row["tasks"].items()}} for row in rows}
    curated.write_cells(curated.metrics_path(out_dir, stem.name), experiment=experiment,
                        kind="tuning", metric=rows[0]["metric"],
                        n_seeds=len(params["train"]["seeds"]), cells=cells)
    if figures is not None:
        make_tuning_figure(params, experiment, rows, figures / f"tuning_{experiment}.png")
    return rows
