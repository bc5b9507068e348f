"""t-SNE of task-sharing vs task-specific representations (the paper's Fig. 6).

As the official analysis script (docs/spec/mptrec.md section 7): the first `n_rows` training rows,
the shared expert's output h_share and each task's specific expert output h_spec_k (before the task
embedding), embedded together by sklearn's TSNE with a fixed random_state. Each model names these
representations itself (`named_representations`; for PLE the shared and task-specific experts of
the last CGC level play these roles). Reads checkpoints, never trains.

The Barnes-Hut gradient sums over OpenMP threads, so the embedding (and the figure's bytes) depend
on the thread count: `report.<experiment>.tsne.threads` fixes it (left to the machine, a 16-core
machine would draw another figure than a 2-core one from the same checkpoints).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.manifold import TSNE
from threadpoolctl import threadpool_limits

from mtlrec.config import resolve_model
from mtlrec.data.splits import load_splits
from mtlrec.errors import MtlrecError
from mtlrec.models import build_model
from mtlrec.models.layers import FeatureSpec, MultiTaskModel
from mtlrec.report.figures import save_png
from mtlrec.report.tables import display, run_dir


@torch.no_grad()
def representations(model: MultiTaskModel, dense: torch.Tensor, sparse: torch.Tensor,
                    tasks: list[str]) -> dict[str, np.ndarray]:
    """name -> [N, d] array: 'shared' and 'specific <task>' for each task, from the model's
    `named_representations`."""
    model.eval()
    try:
        rep = model.named_representations(dense, sparse)
    except NotImplementedError as exc:
        raise MtlrecError(f"t-SNE: {exc}") from None
    out = {"shared": rep["shared"]}
    out.update({f"specific {t}": rep["specific"][:, k] for k, t in enumerate(tasks)})
    return {name: value.cpu().numpy() for name, value in out.items()}


def make_tsne(params: dict[str, Any], experiment: str, data_dir: Path, runs_root: Path,
              figures: Path) -> None:
    """tsne_<experiment>.png from the first seed's checkpoints of `report.<experiment>.tsne`."""
    cfg = params["report"][experiment]["tsne"]
    exp = params["experiments"][experiment]
    seed = params["train"]["seeds"][0]
    tasks = exp["tasks"]
    splits = load_splits(data_dir, tasks, seed, params["datasets"][exp["dataset"]]["split"])
    n = min(cfg["n_rows"], len(splits.train))
    train = splits.train.take(slice(0, n))
    features = FeatureSpec.from_schema(splits.schema)
    fig, axes = plt.subplots(1, len(cfg["models"]), figsize=(5 * len(cfg["models"]), 4.6))
    for ax, run_name in zip(np.atleast_1d(axes), cfg["models"], strict=True):
        base, hparams = resolve_model(params, run_name)
        model = build_model(base, features, len(tasks), hparams)
        checkpoint = run_dir(runs_root, experiment, run_name, seed) / "model.pt"
        if not checkpoint.is_file():
            raise MtlrecError(f"t-SNE: missing checkpoint {checkpoint}; train it first")
        model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
        reps = representations(model, train.dense, train.sparse, tasks)
        points = np.concatenate(list(reps.values()))
        perplexity = min(cfg["perplexity"], (len(points) - 1) / 3)
        with threadpool_limits(limits=cfg["threads"]):  # OpenMP and BLAS: a fixed count
            embedded = TSNE(n_components=2, perplexity=perplexity, init="pca",
                            random_state=cfg["random_state"]).fit_transform(points)
        for i, name in enumerate(reps):
            part = embedded[i * n:(i + 1) * n]
            ax.scatter(part[:, 0], part[:, 1], s=1.5, alpha=0.5, label=name)
        ax.set_title(f"{display(params, run_name)} (seed {seed}, {n} training rows)")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(markerscale=6, fontsize=8)
    fig.suptitle("t-SNE of task-sharing vs task-specific representations")
    save_png(fig, figures / f"tsne_{experiment}.png")
