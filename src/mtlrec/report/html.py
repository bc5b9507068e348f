"""One self-contained HTML page per paper, made from result files only: every table beside the
paper's with the gap per cell (coloured by the reproduction check's tolerance) and the seed
spread, the validation curves (mean over seeds, one panel per task or metric), every figure of
the experiments, the reproduction summary and the provenance of the runs.

Images are embedded (base64), so the file opens anywhere; identical result files give an
identical page, except the measured wall times (timing.json, where the runs were made).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from pathlib import Path
from typing import Any

from mtlrec import workflow
from mtlrec.config import FULL_PREFIX, NEW_TASK_PREFIX, experiment_runs, is_ranking
from mtlrec.errors import MtlrecError
from mtlrec.provenance import device_label, write_text_atomic
from mtlrec.report.cells import read_cells
from mtlrec.report.latex import fixed, signed
from mtlrec.report.publish import PAPERS, allowed, paper_of
from mtlrec.report.tables import display

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0 auto;max-width:1180px;
padding:1.2em 2em;color:#222;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;
margin-top:2em}h3{margin-top:1.5em}
table{border-collapse:collapse;margin:.6em 0 1em;font-size:.86em}
th,td{border:1px solid #ddd;padding:.25em .55em;text-align:right;white-space:nowrap}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
td.ok{background:#e3f4e3}td.off{background:#fbe3e1}td.na{color:#999}
.std{color:#777;font-size:.9em}.note{color:#555;font-size:.88em}
.summary{background:#f6f8fa;border-left:4px solid #4c72b0;padding:.6em 1em;margin:1em 0}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{color:#555;font-size:.88em}nav a{margin-right:1em}
code{background:#f3f3f3;padding:0 .25em}
"""

CAPTIONS = {
    "ablation": "Ablation: bars are the mean over seeds, error bars the std",
    "em_clusters": "EM pseudo task labels: cluster sizes per epoch and rows that changed "
                   "cluster per E-step round, per seed",
    "tsne": "t-SNE of the task-sharing and task-specific representations (Fig. 6)",
    "newtask_ablation": "Stage-2 ablation of the new task (Fig. 5 and Fig. 4 in stage 2)",
    "rank_ablation": "PMTRec ablation (Fig. 4)",
    "rank_sensitivity": "Sensitivity to alpha and tau (Fig. 5)",
    "rank_curves": "Validation curves (Fig. 6), first seed",
    "tuning": "Grid search: every point's validation score against the learning rate, the "
              "choice starred",
}


def _image(data: bytes) -> str:
    return f'<img alt="" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def _label(params: dict[str, Any], experiment: str, row: str) -> str:
    if is_ranking(params, experiment):
        spec = params["rank_methods"].get(row.partition("-")[0], {})
        name = spec.get("label", row.partition("-")[0])
        return name + (f" ({row.partition('-')[2]})" if "-" in row else "")
    if row.startswith(FULL_PREFIX):
        return f"{display(params, row.removeprefix(FULL_PREFIX))} full training"
    return display(params, row.removeprefix(NEW_TASK_PREFIX))


def _number(text: str) -> str:
    """A printed number with a real minus sign."""
    return text.replace("-", "\u2212")


def _cells_table(params: dict[str, Any], experiment: str, document: dict[str, Any]) -> str:
    """ours (mean ± std) | paper | gap per column; gap coloured by the check's tolerance. A table
    much wider than long (Table 2 of PMTRec: 8 metrics x 3) is shown transposed."""
    tolerance = params["reproduction"]["tolerance"].get(document["kind"])
    found = document["cells"]
    rows = [(r, _label(params, experiment, r)) for r in found]
    columns = [(c, c) for c in dict.fromkeys(c for cols in found.values() for c in cols)]
    has_paper = any("paper" in cell for cols in found.values() for cell in cols.values())
    width = 3 if has_paper else 1
    transposed = len(columns) * width > 12 and len(rows) < len(columns)
    if transposed:
        rows, columns = columns, rows
    head = "".join(f"<th colspan={width}>{html.escape(label)}</th>" for _, label in columns)
    sub = "".join("<th>ours</th><th>paper</th><th>gap</th>" for _ in columns) if has_paper else ""
    corner = document["kind"] + (" (transposed)" if transposed else "")
    lines = [f"<tr><th>{html.escape(corner)}</th>{head}</tr>"]
    if sub:
        lines.append(f"<tr><th></th>{sub}</tr>")
    for row, label in rows:
        tds = [f"<td>{html.escape(label)}</td>"]
        for column, _ in columns:
            cell = found.get(column, {}).get(row) if transposed else found[row].get(column)
            tds.append(_cell_tds(cell, has_paper, tolerance))
        lines.append("<tr>" + "".join(tds) + "</tr>")
    note = f"{html.escape(document['metric'])}, mean ± std over {document['n_seeds']} seed(s)"
    if has_paper:
        note += "; gap = ours − paper, green within the reproduction tolerance, red outside"
    return f"<table>{''.join(lines)}</table><p class=note>{note}.</p>"


def _cell_tds(cell: dict[str, Any] | None, has_paper: bool, tolerance: dict | None) -> str:
    if cell is None:
        return "<td class=na>--</td>" * (3 if has_paper else 1)
    spread = f' <span class=std>± {fixed(cell["std"], 4)}</span>' if cell["n"] > 1 else ""
    ours = f"<td>{_number(fixed(cell['mean'], 4))}{spread}</td>"
    if not has_paper:
        return ours
    if "paper" not in cell:
        return ours + "<td class=na>--</td><td class=na></td>"
    gap = cell["mean"] - cell["paper"]
    kind = "na"
    if tolerance is not None:
        kind = "ok" if abs(gap) <= allowed(tolerance, cell["paper"]) else "off"
    return (f"{ours}<td>{_number(fixed(cell['paper'], 4))}</td>"
            f"<td class={kind}>{_number(signed(gap, 4))}</td>")


def _full_table(md: Path, kind: str) -> str:
    """The table as its .md file has it (every column: costs, p-values, signs) and its notes,
    folded away except for the tables whose extra columns carry the result (Tables 3-4)."""
    lines = md.read_text().splitlines()
    rows = [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in lines if line.startswith("|") and not line.startswith("|---")]
    notes = [line[2:] for line in lines if line.startswith("- ")]
    if not rows:
        return ""
    cells = [f"<tr>{''.join(f'<th>{html.escape(c)}</th>' for c in rows[0])}</tr>"]
    cells += [f"<tr>{''.join(f'<td>{html.escape(c)}</td>' for c in row)}</tr>"
              for row in rows[1:]]
    opened = " open" if kind in ("table3", "table4") else ""
    return (f"<details{opened}><summary class=note>the full table and its notes</summary>"
            f"<table>{''.join(cells)}</table><ul class=note>"
            + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul></details>")


def _curves_figure(params: dict[str, Any], experiment: str, path: Path) -> str:
    """One panel per task / metric, one line per run (mean over seeds) from the plots CSV."""
    from mtlrec.report.figures import plt

    with path.open() as handle:
        table = list(csv.DictReader(handle))
    if not table:
        return ""
    panels: dict[str, list[str]] = {}
    for column in table[0]:
        if column != "epoch":
            panels.setdefault(column.rpartition("/")[2], []).append(column)
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.6),
                             layout="constrained", squeeze=False)
    for ax, (panel, columns) in zip(axes[0], panels.items(), strict=True):
        for i, column in enumerate(columns):
            points = [(int(r["epoch"]), float(r[column])) for r in table if r[column]]
            ax.plot(*zip(*points, strict=True), color=f"C{i % 10}",
                    linestyle="-" if i < 10 else "--",
                    label=_label(params, experiment, column.rpartition("/")[0]))
        ax.set(xlabel="epoch", ylabel=f"validation {panel}", title=panel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return (f"<figure>{_image(buffer.getvalue())}<figcaption>Validation curves: the mean over "
            f"seeds of each run (a run stops early on its own; data: "
            f"<code>{path.name}</code>)</figcaption></figure>")


def _provenance(params: dict[str, Any], experiment: str, root: Path) -> str:
    """Over every finished run of the experiment on disk (the seeds of a table can be fewer
    than those configured, and the tables of one experiment can differ in seeds)."""
    commits, devices, versions, walls = set(), set(), set(), []
    seeds: set[int] = set()
    count = 0
    for run in experiment_runs(params, experiment):
        base = (root / workflow.run_dir(experiment, run, 0)).parent
        for metrics in sorted(base.glob("seed=*/metrics.json")):
            folder = metrics.parent
            seeds.add(int(folder.name.removeprefix("seed=")))
            count += 1
            prov = json.loads(metrics.read_text())["provenance"]
            commits.add(prov["git_commit"])
            devices.add(f"{device_label(prov)} ({prov.get('linear_kernels', 'torch')} kernels, "
                        f"{prov.get('num_threads', '?')} thread(s))")
            versions.add(", ".join(f"{k} {v}" for k, v in sorted(prov["versions"].items())))
            timing = folder / "timing.json"
            if timing.is_file():
                walls.append(json.loads(timing.read_text())["wall_time_s"])
    wall = (f"{sum(walls) / 60:.1f} min of run time over {len(walls)} runs (timing.json: "
            "measured where the runs were made, one core each)" if walls else
            "not recorded here (timing.json stays where the runs were made; README gives the "
            "measured wall times)")
    items = [f"finished runs found: {count} (seeds {sorted(seeds)})",
             f"git commits of the runs: {', '.join(sorted(commits)) or '--'}",
             f"devices: {'; '.join(sorted(devices)) or '--'}",
             *(f"versions: {v}" for v in sorted(versions)), f"wall time: {wall}"]
    return "<ul class=note>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>"


def _experiment(params: dict[str, Any], experiment: str, root: Path) -> str:
    parts = [f'<h2 id="{experiment}">{html.escape(experiment)}</h2>']
    exp = params["experiments"][experiment]
    parts.append(f"<p class=note>dataset <code>{exp['dataset']}</code>, tasks "
                 f"<code>{', '.join(exp['tasks'])}</code>"
                 + (f", new task <code>{exp['new_task']}</code>" if exp.get("new_task") else "")
                 + "</p>")
    missing = []
    for kind in workflow.report_kinds(params, experiment):
        outputs = workflow.report_outputs(experiment, kind)
        if not all((root / p).is_file() for p in outputs.values()):
            missing.append(kind)
            continue
        if "json" in outputs:
            document = read_cells(root / outputs["json"])
            title = (root / outputs["md"]).read_text().splitlines()[0].lstrip("# ")
            links = " · ".join(f'<a href="../{Path(outputs[e]).relative_to("results")}">{e}</a>'
                               for e in ("md", "tex", "csv") if e in outputs)
            parts.append(f"<h3>{html.escape(title)}</h3>")
            parts.append(_cells_table(params, experiment, document))
            parts.append(_full_table(root / outputs["md"], kind))
            parts.append(f"<p class=note>files: {links}</p>")
        if "curves" in outputs:
            parts.append(_curves_figure(params, experiment, root / outputs["curves"]))
        if "png" in outputs and "curves" not in outputs:  # the curves figure shows its data
            stem = Path(outputs["png"]).stem.removesuffix(f"_{experiment}")
            data = (root / outputs["png"]).read_bytes()
            parts.append(f"<figure>{_image(data)}<figcaption>"
                         f"{html.escape(CAPTIONS.get(stem, stem))}</figcaption></figure>")
        if kind == "em":
            parts.append(f'<p class=note>EM label history per round: <a href="../'
                         f'{Path(outputs["md"]).relative_to("results")}">table</a></p>')
    if missing:
        parts.append(f"<p class=note>not built yet: {html.escape(', '.join(missing))}</p>")
    parts.append("<h3>Provenance</h3>" + _provenance(params, experiment, root))
    return "\n".join(parts)


def make_html(params: dict[str, Any], paper: str, root: Path, check_md: Path, out: Path) -> None:
    """results/report/<paper>.html for the experiments of `paper` in `build`."""
    experiments = [e for e in params["build"] if paper_of(params, e) == paper]
    if not experiments:
        raise MtlrecError(f"html: no experiment of {paper} in build")
    summary = next((line.strip("*") for line in check_md.read_text().splitlines()
                    if line.startswith("**reproduction check")), "")
    nav = " ".join(f'<a href="#{e}">{e}</a>' for e in experiments)
    body = [f"<h1>{html.escape(PAPERS[paper])}: the reproduction</h1>",
            f"<nav>{nav}</nav>",
            f'<div class=summary>{html.escape(summary)} (all papers; every cell: '
            f'<a href="../../docs/reproduction.md">docs/reproduction.md</a>)</div>',
            "<p class=note>Made by <code>mtlrec publish html</code> from the result files "
            "(results/metrics, results/plots, results/figures, runs/*/metrics.json). Tables: "
            "ours as mean ± std over seeds beside the paper's value.</p>"]
    body += [_experiment(params, e, root) for e in experiments]
    page = ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            f"<title>mtlrec: {html.escape(PAPERS[paper])}</title><style>{CSS}</style></head>"
            "<body>\n" + "\n".join(body) + "\n</body></html>\n")
    write_text_atomic(out, page)
