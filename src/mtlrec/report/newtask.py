"""Reports of a new-task experiment: Table 3 (the new task five ways), Table 4 (negative
transfer under full training), the stage-2 ablation (Fig. 5, Fig. 4 in stage 2) and the label
correlations (section 4.3.1). LaTeX (booktabs) + Markdown + CSV, the paper's values beside ours.

Every table is a function of result files only (metrics.json, the labels) and is byte-identical
for identical runs. Wall times are measurements (timing.json) and go to a table of their own,
`table3_<experiment>_time.md`, the one report file that differs between reruns.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from mtlrec.config import FULL_PREFIX, NEW_TASK_PREFIX
from mtlrec.errors import MtlrecError
from mtlrec.provenance import write_text_atomic
from mtlrec.report.cells import cell, metrics_path, write_cells
from mtlrec.report.latex import fixed, render_table, signed, tex_row
from mtlrec.report.tables import _provenance_lines, collect, display, paper_values


def _mean_std(values: list[float], decimals: int) -> str:
    if len(values) < 2:
        return fixed(values[0], decimals)
    mean, std = statistics.fmean(values), statistics.stdev(values)
    return f"{fixed(mean, decimals)} ± {fixed(std, decimals)}"


def _paired_p(a: list[float], b: list[float]) -> float:
    from scipy.stats import ttest_rel

    if len(a) < 2 or len(a) != len(b) or a == b:
        return float("nan")
    return float(ttest_rel(a, b).pvalue)


def _short(count: float) -> str:
    """27063 -> '27k', 6.9e6 -> '6.9M' (the paper's style)."""
    if count >= 1e6:
        return f"{count / 1e6:.1f}M"
    if count >= 1e3:
        return f"{count / 1e3:.0f}k"
    return f"{count:.0f}"


def _write(stem: Path, title: str, head: list[str], body: list[list[str]], notes: list[str],
           csv: str) -> None:
    md = [f"# {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    md += ["| " + " | ".join(row) + " |" for row in body]
    md += [""] + [f"- {note}" for note in notes]
    tex = render_table(title, stem.name, "l" + "r" * (len(head) - 1), [tex_row(head)], body, notes)
    write_text_atomic(stem.with_suffix(".md"), "\n".join(md) + "\n")
    write_text_atomic(stem.with_suffix(".tex"), tex)
    if csv:
        write_text_atomic(stem.with_suffix(".csv"), csv)


# ------------------------------------------------------------------------------------ Table 3
def make_table3(params: dict[str, Any], experiment: str, runs_root: Path, out_dir: Path
                ) -> list[dict[str, Any]]:
    """Write out_dir/table3_<experiment>.{tex,md,csv} (+ _time.md); reads
    `report.<experiment>.table3`, `experiments.<experiment>` and `train.seeds`."""
    table = params["report"][experiment]["table3"]
    exp = params["experiments"][experiment]
    seeds, decimals, new = params["train"]["seeds"], table["decimals"], exp["new_task"]
    methods = table["methods"]
    runs = collect(runs_root, experiment, [NEW_TASK_PREFIX + m for m in methods], seeds)
    full_run = FULL_PREFIX + table["full"]
    full = collect(runs_root, experiment, [full_run], seeds)[full_run]
    key = f"test_{full[0]['metric']}"
    full_scores = [r[key][new] for r in full]
    paper = paper_values().get("table3", {}).get(exp["dataset"], {}).get(new, {})
    rows = []
    for method in methods:
        rs = runs[NEW_TASK_PREFIX + method]
        scores = [r[key][new] for r in rs]
        cost = rs[0]["cost"]
        existing = ({t: [r[f"existing_{key}"][t] for r in rs] for t in exp["tasks"]}
                    if rs[0][f"existing_{key}"] is not None else None)
        rows.append({"method": method, "scores": scores, "cost": cost, "existing": existing,
                     "of_full": statistics.fmean(scores) / statistics.fmean(full_scores)})
    candidate = next(r for r in rows if r["method"] == table["candidate"])
    others = [r for r in rows if r is not candidate]
    best = max(others, key=lambda r: statistics.fmean(r["scores"])) if others else None
    label = full[0].get("metric", "auc").upper()
    head = ["Method", f"{label}/T3 (ours)", f"{label}/T3 (paper)", "#Params (ours)",
            "#Params (paper)", "#FLOPs (ours)", "#FLOPs (paper)",
            *(f"{label}/T{i} frozen" for i, _ in enumerate(exp["tasks"], 1))]
    body = []
    for row in rows:
        cost, ref = row["cost"], paper.get(row["method"], {})
        share = cost["trained_params"] / cost["full_params"]
        flops = cost["trained_flops_per_batch"] / cost["full_flops_per_batch"]
        ours = _mean_std(row["scores"], decimals)
        if row is candidate:
            ours += f" ({row['of_full']:.1%})"
        body.append([
            display(params, row["method"]), ours,
            "--" if "auc" not in ref else f"{ref['auc']:.{decimals}f}" + (
                f" ({ref['of_full']:.1%})" if "of_full" in ref else ""),
            f"{_short(cost['trained_params'])} ({share:.1%})", ref.get("params", "--"),
            f"{_short(cost['trained_flops_per_batch'])} ({flops:.1%})", ref.get("flops", "--"),
            *([_mean_std(v, decimals) for v in row["existing"].values()]
              if row["existing"] is not None else ["n/a"] * len(exp["tasks"]))])
    full_cost = full[0]
    full_name = display(params, table["full"])
    body.append([f"{full_name} full training", _mean_std(full_scores, decimals),
                 "--", _short(full_cost["num_params"]), "--", "--", "--",
                 *(_mean_std([r[key][t] for r in full], decimals) for t in exp["tasks"])])
    notes = [
        f"T3 = {new}; tasks T1..: {exp['tasks']}; inputs without {full[0].get('dropped_inputs')}",
        f"({candidate['of_full']:.1%}) = {display(params, candidate['method'])}'s T3 {label} over "
        f"{display(params, table['full'])} trained fully on all tasks (paper: 99.7%)",
        "#Params: parameters trained for T3 (percentage: of the same model trained fully on all"
        " tasks, embeddings included); #FLOPs: multiply-adds of one training batch's forward"
        f" ({cost['batch_size']} rows) of what trains, against the full model's training "
        "forward; the paper's Shared*/MMOE* counts include both removed 2-task heads "
        "(docs/spec/mptrec.md section 5.2)",
        f"T1.. frozen: the pre-trained run's test {label}, which stage 2 does not change (n/a:"
        " MAML fine-tunes every weight of its meta-learnt network)",
    ]
    if best is not None:
        p = _paired_p(candidate["scores"], best["scores"])
        test = f"p={p:.3g}" if not math.isnan(p) else "needs at least 2 seeds"
        notes.append(f"{display(params, candidate['method'])} vs "
                     f"{display(params, best['method'])} (best other):"
                     f" paired t-test over seeds {test}")
    notes += _provenance_lines(runs)
    csv = [f"method,seed_index,test_{label.lower()},trained_params,full_params,"
           "trained_flops_per_batch,full_flops_per_batch"]
    for row in rows:
        c = row["cost"]
        csv += [f"{row['method']},{i},{v!r},{c['trained_params']},{c['full_params']},"
                f"{c['trained_flops_per_batch']},{c['full_flops_per_batch']}"
                for i, v in enumerate(row["scores"])]
    csv += [f"{full_run},{i},{v!r},{full[0]['num_params']},{full[0]['num_params']},,"
            for i, v in enumerate(full_scores)]
    title = (f"Table 3 ({exp['dataset']}, new task {new}): test {label} mean ± std over "
             f"{len(seeds)} seed(s), cost of learning T3")
    stem = out_dir / f"table3_{experiment}"
    _write(stem, title, head, body, notes, "\n".join(csv) + "\n")
    cells = {row["method"]: {new: cell(row["scores"], paper.get(row["method"], {}).get("auc")
                                       if label == "AUC" else None)} for row in rows}
    cells[full_run] = {new: cell(full_scores)}
    write_cells(metrics_path(out_dir, stem.name), experiment=experiment, kind="table3",
                metric=label, n_seeds=len(seeds), cells=cells)
    _write_times(params, out_dir / f"table3_{experiment}_time.md", runs_root, experiment, methods,
                 full_run, seeds)
    return rows


def _wall(runs_root: Path, experiment: str, run: str, seeds: list[int]) -> list[float]:
    walls = []
    for seed in seeds:
        path = runs_root / experiment / run / f"seed={seed}" / "timing.json"
        if path.is_file():
            walls.append(json.loads(path.read_text())["wall_time_s"])
    return walls


def _write_times(params: dict[str, Any], path: Path, runs_root: Path, experiment: str,
                 methods: list[str],
                 full_run: str, seeds: list[int]) -> None:
    """Measured wall time of each method's T3 training (feature caching included) and its
    ratio to the full retraining on all tasks (timing.json of the same pipeline run)."""
    full = _wall(runs_root, experiment, full_run, seeds)
    lines = [f"# Wall time of learning the new task ({experiment}): measured, differs per run",
             "", "| Method | wall time per seed (s) | seeds timed | full retraining / method |",
             "|---|---|---|---|"]
    for method in methods:
        walls = _wall(runs_root, experiment, NEW_TASK_PREFIX + method, seeds)
        if not walls or not full:
            lines.append(f"| {display(params, method)} | -- | {len(walls)} | -- |")
            continue
        ratio = statistics.fmean(full) / statistics.fmean(walls)
        lines.append(f"| {display(params, method)} | {statistics.fmean(walls):.1f} | "
                     f"{len(walls)} | {ratio:.1f}x |")
    if full:
        lines.append(f"| {full_run} (full retraining) | {statistics.fmean(full):.1f} | "
                     f"{len(full)} | 1.0x |")
    lines += ["", f"- seeds timed: of {len(seeds)}, those whose timing.json is where the table "
              "is made (timing.json stays where a run was made, outside git)",
              "- jobs ran side by side on the pipeline's cores, so these are indicative; "
              "benchmarks/bench_prompt_tuning.py measures the ratio in isolation"]
    write_text_atomic(path, "\n".join(lines) + "\n")


# ------------------------------------------------------------------------------------ Table 4
def make_table4(params: dict[str, Any], experiment: str, runs_root: Path, out_dir: Path
                ) -> list[dict[str, Any]]:
    """Write out_dir/table4_<experiment>.{tex,md,csv}: per model and existing task, the test
    metric trained on the tasks alone and with the new task, the paired delta, its spread over
    seeds, a paired t-test, our sign and the paper's."""
    table = params["report"][experiment]["table4"]
    exp = params["experiments"][experiment]
    seeds, new, level = params["train"]["seeds"], exp["new_task"], table["level"]
    models = table["models"]
    runs = collect(runs_root, experiment, [*models, *(FULL_PREFIX + m for m in models)], seeds)
    key = f"test_{runs[models[0]][0]['metric']}"
    paper = paper_values().get("table4", {}).get(exp["dataset"], {}).get(new, {})
    rows, body = [], []
    for model in models:
        for i, task in enumerate(exp["tasks"], 1):
            two = [r[key][task] for r in runs[model]]
            three = [r[key][task] for r in runs[FULL_PREFIX + model]]
            deltas = [b - a for a, b in zip(two, three, strict=True)]
            mean = statistics.fmean(deltas)
            spread = statistics.stdev(deltas) if len(deltas) > 1 else 0.0
            p = _paired_p(three, two)
            sign = "+" if mean > 0 else "-"
            tested = not math.isnan(p)
            mark = "" if not tested else ("" if p < level else " (n.s.)")
            ref = paper.get(model, {}).get(task, "--")
            rows.append({"model": model, "task": task, "two": two, "three": three,
                         "delta": mean, "p": p, "sign": sign, "paper": ref})
            body.append([display(params, model), f"T{i} ({task})",
                         f"{statistics.fmean(two):.4f}",
                         f"{statistics.fmean(three):.4f}",
                         f"{signed(mean, 5)} ± {fixed(spread, 5)}",
                         "--" if math.isnan(p) else f"{p:.3g}",
                         sign + mark, ref,
                         "yes" if ref == sign else ("--" if ref == "--" else "no")])
    head = ["Model", "Task", "T1+T2", "+T3", "Δ (mean ± std)", "p", "sign (ours)",
            "sign (paper)", "same sign"]
    agree = sum(1 for r in rows if r["paper"] == r["sign"])
    notes = [f"T3 = {new}; both runs of a model on the same inputs (without "
             f"{runs[models[0]][0].get('dropped_inputs')}); Δ = +T3 minus T1+T2 per seed",
             (f"p: two-sided paired t-test over {len(seeds)} seeds; (n.s.): p ≥ {level}, the sign "
              "may be noise" if len(seeds) > 1 else
              "one seed: no spread and no test yet; a sign may be noise"),
             f"signs equal to the paper's: {agree} of {len(rows)}"]
    notes += _provenance_lines(runs)
    csv = ["model,task,seed_index,two_tasks,with_new_task"]
    for r in rows:
        csv += [f"{r['model']},{r['task']},{i},{a!r},{b!r}"
                for i, (a, b) in enumerate(zip(r["two"], r["three"], strict=True))]
    title = (f"Table 4 ({exp['dataset']}, new task {new}): negative transfer under full "
             f"training, test {key.removeprefix('test_').upper()}")
    _write(out_dir / f"table4_{experiment}", title, head, body, notes, "\n".join(csv) + "\n")
    cells: dict[str, dict[str, Any]] = {}
    for r in rows:  # the delta of adding T3 per model and task (the paper reports its sign)
        deltas = [b - a for a, b in zip(r["two"], r["three"], strict=True)]
        cells.setdefault(r["model"], {})[r["task"]] = cell(deltas)
    write_cells(metrics_path(out_dir, f"table4_{experiment}"), experiment=experiment,
                kind="table4", metric=f"delta {key.removeprefix('test_').upper()}",
                n_seeds=len(seeds), cells=cells)
    return rows


# ------------------------------------------------------------------------ stage-2 ablation
def make_newtask_ablation(params: dict[str, Any], experiment: str, runs_root: Path,
                          tables: Path, figures: Path) -> None:
    """The new task's test metric per prompt variant: table + bar plot with seed spread."""
    from mtlrec.report.figures import plt, save_png

    methods = params["report"][experiment]["newtask_ablation"]["methods"]
    exp = params["experiments"][experiment]
    seeds, new = params["train"]["seeds"], exp["new_task"]
    runs = collect(runs_root, experiment, [NEW_TASK_PREFIX + m for m in methods], seeds)
    key = f"test_{runs[NEW_TASK_PREFIX + methods[0]][0]['metric']}"
    scores = {m: [r[key][new] for r in runs[NEW_TASK_PREFIX + m]] for m in methods}
    reference = scores[methods[0]]
    body = []
    for method in methods:
        p = _paired_p(scores[method], reference)
        delta = statistics.fmean(scores[method]) - statistics.fmean(reference)
        body.append([display(params, method), _mean_std(scores[method], 4), signed(delta, 4),
                     "--" if method == methods[0] or math.isnan(p) else f"{p:.3g}"])
    label = key.removeprefix("test_").upper()
    title = f"Stage-2 ablation ({experiment}): test {label} of the new task {new}"
    notes = [f"Δ and p (paired t-test over seeds) against {display(params, methods[0])}",
             "FW: equal transfer weights; TES: task-level embedding similarity (Fig. 5); Share /"
             " Specific: z = h_share / h_new; -GAN: the head on a backbone pre-trained without "
             "the adversarial loss (Fig. 4 applied in stage 2)"]
    _write(tables / f"newtask_ablation_{experiment}", title,
           ["Variant", f"{label}/T3", "Δ", "p"], body, notes, "")
    write_cells(metrics_path(tables, f"newtask_ablation_{experiment}"), experiment=experiment,
                kind="newtask_ablation", metric=label, n_seeds=len(seeds),
                cells={m: {new: cell(scores[m])} for m in methods})
    fig, ax = plt.subplots(figsize=(1.3 * len(methods) + 1.5, 3.4), layout="constrained")
    means = [statistics.fmean(scores[m]) for m in methods]
    stds = [statistics.stdev(scores[m]) if len(scores[m]) > 1 else 0.0 for m in methods]
    ax.bar(range(len(methods)), means, yerr=stds, capsize=4,
           color=["#1f77b4"] + ["#aaaaaa"] * (len(methods) - 1))
    for i, m in enumerate(methods):
        ax.scatter([i] * len(scores[m]), scores[m], s=8, color="black", zorder=3)
    low = min(min(v) for v in scores.values())
    high = max(max(v) for v in scores.values())
    ax.set_ylim(low - 0.2 * (high - low + 1e-3), high + 0.2 * (high - low + 1e-3))
    ax.set_xticks(range(len(methods)), [display(params, m) for m in methods], rotation=20,
                  ha="right")
    ax.set_ylabel(f"test {label} of {new}")
    ax.set_title(f"New task {new}: prompt variants (mean ± std, dots = seeds)")
    save_png(fig, figures / f"newtask_ablation_{experiment}.png")


# ----------------------------------------------------------------------------- correlations
def make_correlations(params: dict[str, Any], experiment: str, labels_dir: Path,
                      tables: Path) -> dict[str, float]:
    """|Pearson r| between every pair of the experiment's task labels on the training file."""
    exp = params["experiments"][experiment]
    tasks = [*exp["tasks"], exp["new_task"]]
    labels = {}
    for task in tasks:
        path = labels_dir / task / "train.parquet"
        if not path.is_file():
            raise MtlrecError(f"correlations: {path} not found; run the labels stage first")
        labels[task] = pq.read_table(path).column("label").to_numpy().astype(np.float64)
    paper = paper_values().get("correlations", {}).get(exp["dataset"], {})
    pairs = [(a, b) for i, a in enumerate(tasks) for b in tasks[:i]]
    pairs = sorted(pairs, key=lambda pair: pair[0] != tasks[1])  # T1-T2 first
    found, body, csv = {}, [], ["pair,abs_pearson"]
    for a, b in pairs:
        r = abs(float(np.corrcoef(labels[a], labels[b])[0, 1]))
        name = f"{a}-{b}"
        found[name] = r
        ref = paper.get(name, paper.get(f"{b}-{a}"))
        body.append([f"{a} – {b}", f"{r:.3f}", "--" if ref is None else f"{ref:.3f}"])
        csv.append(f"{name},{r!r}")
    avg = statistics.fmean(v for k, v in found.items() if exp["new_task"] in k.split("-"))
    notes = [f"training file, {len(labels[tasks[0]])} rows; Avg.Coef of the new task "
             f"{exp['new_task']}: {avg:.3f} (paper Table 4: 0.16 education, 0.11 sex)"]
    _write(tables / f"correlations_{experiment}",
           f"Task label correlations ({experiment}): |Pearson r| on the training file",
           ["Pair", "ours", "paper"], body, notes, "\n".join(csv) + "\n")
    cells = {}
    for name, r in found.items():
        a, b = name.split("-")
        ref = paper.get(name, paper.get(f"{b}-{a}"))
        cells[name] = {"abs_pearson": cell([r], ref)}
    write_cells(metrics_path(tables, f"correlations_{experiment}"), experiment=experiment,
                kind="correlations", metric="|Pearson r|", n_seeds=1, cells=cells)
    return found
