"""Figures and the smaller tables: EM label history, the MPT-Rec ablation, t-SNE (Fig. 6).

Everything here reads metrics.json files (and, for t-SNE, checkpoints plus encoded data), never
trains. PNGs are written with fixed metadata so identical inputs give identical bytes.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from mtlrec.provenance import atomic_write, write_text_atomic  # noqa: E402
from mtlrec.report.cells import metrics_path
from mtlrec.report.tables import (
    collect,
    display,
    render_latex,
    render_markdown,
    summarise,
    write_row_cells,
)

PNG_METADATA = {"Software": None}


def save_png(fig: plt.Figure, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight", metadata=PNG_METADATA)
    plt.close(fig)
    atomic_write(path, lambda tmp: tmp.write_bytes(buffer.getvalue()))


# ------------------------------------------------------------------------------------- ablation
def make_ablation(params: dict[str, Any], experiment: str, runs_root: Path, tables: Path,
                  figures: Path) -> None:
    """Ablation table (LaTeX + Markdown) and a bar plot with ± std error bars: files
    ablation_<experiment>; reads `report.<experiment>.ablation` and `train.seeds`."""
    cfg = params["report"][experiment]["ablation"]
    dataset, seeds = params["experiments"][experiment]["dataset"], params["train"]["seeds"]
    runs = collect(runs_root, experiment, cfg["models"], seeds)
    rows = summarise(runs, cfg["models"][0])
    title = (f"MPT-Rec ablation ({dataset}): test AUC, mean ± std over {len(seeds)} seed(s); "
             f"Gain = variant minus full MPT-Rec")
    notes = ["Share/Specific: trained with the full loss, predicting with Tower(h_share) / "
             "Tower(h_spec * e_k); -GAN: no task classifier, share loss weight 1 (spec section 4)"]
    write_text_atomic(tables / f"ablation_{experiment}.tex",
                      render_latex(params, rows, {}, 4, title, notes, f"ablation_{experiment}"))
    write_text_atomic(tables / f"ablation_{experiment}.md",
                      render_markdown(params, rows, {}, 4, title, notes))
    write_row_cells(metrics_path(tables, f"ablation_{experiment}"), experiment, "ablation",
                    rows, {})
    tasks = list(rows[0]["tasks"])
    fig, axes = plt.subplots(1, len(tasks), figsize=(4 * len(tasks), 3.4), layout="constrained")
    for ax, task in zip(np.atleast_1d(axes), tasks, strict=True):
        means = [r["tasks"][task]["mean"] for r in rows]
        stds = [r["tasks"][task]["std"] for r in rows]
        ax.bar([display(params, r["model"]) for r in rows], means, yerr=stds, capsize=4,
               color=["#4c72b0"] + ["#b0b0b0"] * (len(rows) - 1))
        low = min(m - s for m, s in zip(means, stds, strict=True))
        high = max(m + s for m, s in zip(means, stds, strict=True))
        pad = max(high - low, 1e-3) * 0.5
        ax.set_ylim(low - pad, high + pad)
        ax.set_title(f"{task}")
        ax.set_ylabel(f"test {rows[0]['metric']} of {task}")
        ax.tick_params(axis="x", labelrotation=15)
    fig.suptitle(f"MPT-Rec ablation on {dataset} ({len(seeds)} seeds, mean ± std)")
    save_png(fig, figures / f"ablation_{experiment}.png")


# ------------------------------------------------------------------------------- EM clustering
def make_em_report(params: dict[str, Any], experiment: str, runs_root: Path, tables: Path,
                   figures: Path) -> None:
    """Pseudo task label history of the MPT-Rec runs: cluster sizes per epoch and the share of
    rows that changed cluster at each E-step round (1 - agreement between rounds). Files
    em_history_<experiment>.md, em_clusters_<experiment>.png."""
    cfg = params["report"][experiment]["em"]
    dataset, seeds = params["experiments"][experiment]["dataset"], params["train"]["seeds"]
    runs = collect(runs_root, experiment, [cfg["model"]], seeds)[cfg["model"]]
    lines = [f"# EM pseudo task labels ({display(params, cfg['model'])}, {dataset})", "",
             "| seed | epoch | round | cluster sizes | changed | agreement |",
             "|---|---|---|---|---|---|"]
    fig, (ax_sizes, ax_changed) = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
    styles = ["-", "--", ":", "-."]
    for i, run in enumerate(runs):
        curves = run["curves"]
        epochs = [c["epoch"] for c in curves]
        fractions = np.array([c["em_sizes"] for c in curves], dtype=float)
        fractions /= fractions.sum(axis=1, keepdims=True)
        for k in range(fractions.shape[1]):  # one colour per seed, one line style per cluster
            ax_sizes.plot(epochs, fractions[:, k], alpha=0.8, color=f"C{i}",
                          linestyle=styles[k % len(styles)])
        rounds = [c for c in curves if "em_changed" in c]
        ax_changed.plot([c["em_round"] for c in rounds], [c["em_changed"] for c in rounds],
                        marker="o", alpha=0.8, color=f"C{i}", label=f"seed {run['seed']}")
        for c in rounds:
            lines.append(f"| {run['seed']} | {c['epoch']} | {c['em_round']} | {c['em_sizes']} | "
                         f"{c['em_changed']:.4f} | {1 - c['em_changed']:.4f} |")
    ax_sizes.set(xlabel="epoch", ylabel="share of training rows", title="cluster sizes")
    ax_changed.set(xlabel="E-step round", ylabel="rows that changed cluster",
                   title="label changes per round")
    clusters = max(len(run["curves"][0]["em_sizes"]) for run in runs) if runs else 0
    ax_sizes.legend([Line2D([], [], color="0.3", linestyle=styles[k % len(styles)])
                     for k in range(clusters)], [f"cluster {k}" for k in range(clusters)],
                    fontsize=7, title="line style", title_fontsize=7)
    ax_changed.legend(fontsize=7, title="colour: seed (both panels)", title_fontsize=7)
    fig.suptitle(f"EM pseudo task labels of {display(params, cfg['model'])} on {dataset} "
                 f"({len(runs)} seeds): cluster sizes per epoch and labels changed per round")
    save_png(fig, figures / f"em_clusters_{experiment}.png")
    write_text_atomic(tables / f"em_history_{experiment}.md", "\n".join(lines) + "\n")
