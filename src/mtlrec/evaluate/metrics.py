"""Evaluation metrics, registered by name (METRICS): an experiment names its metric
(`experiments.<name>.metric`), early stopping maximises its sum over tasks on the validation
split, and the tables print its label.

AUC is sklearn's roc_auc_score over all predictions of a split (not averaged over batches), as in
the official code. Top-K ranking metrics (PMTRec) are one more entry.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from mtlrec.data.batches import BatchSource
from mtlrec.errors import MtlrecError
from mtlrec.models.layers import MultiTaskModel


@torch.no_grad()
def predict(model: MultiTaskModel, split: BatchSource, batch_size: int,
            objective: Any) -> torch.Tensor:
    """Scores [N, K] (the objective's, e.g. probabilities) for every row of `split`, in order."""
    return predict_with_labels(model, split, batch_size, objective)[0]


@torch.no_grad()
def predict_with_labels(model: MultiTaskModel, split: BatchSource, batch_size: int,
                        objective: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores [N, K] and labels [N, K] of every row of `split`, in order, on the CPU (one pass,
    so a streamed split is read once)."""
    was_training = model.training
    model.eval()
    outputs, labels = [], []
    for rows in split.batches(batch_size):
        outputs.append(objective.scores(model(rows.dense, rows.sparse)))
        labels.append(rows.labels)
    model.train(was_training)
    return torch.cat(outputs).float().cpu(), torch.cat(labels).cpu()


def task_aucs(probabilities: torch.Tensor, labels: torch.Tensor) -> list[float]:
    """One AUC per task column; NaN where a column holds a single class."""
    aucs = []
    for k in range(labels.shape[1]):
        y = labels[:, k].cpu().numpy()
        if y.min() == y.max():
            aucs.append(float("nan"))
        else:
            aucs.append(float(roc_auc_score(y, probabilities[:, k].numpy().astype(np.float64))))
    return aucs


@dataclass(frozen=True)
class Metric:
    name: str  # the key in metrics.json: test_<name>, val_<name>
    label: str  # the tables' column label
    per_task: Callable[[torch.Tensor, torch.Tensor], list[float]]  # (scores, labels) [N, K]
    higher_is_better: bool = True

    def selection_score(self, scores: Sequence[float]) -> float:
        """The score that picks a run's best epoch (early stopping) and a search's best grid
        point: the sum over tasks, negated where lower is better (higher score = better)."""
        total = sum(scores)
        return total if self.higher_is_better else -total


METRICS: dict[str, Metric] = {
    "auc": Metric("auc", "AUC", task_aucs),
}


def get_metric(name: str) -> Metric:
    if name not in METRICS:
        raise MtlrecError(f"unknown metric '{name}' (known: {sorted(METRICS)})")
    return METRICS[name]
