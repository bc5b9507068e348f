"""Evaluation metrics. AUC is sklearn's roc_auc_score over all predictions of a split (not averaged
over batches), as in the official code."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from mtlrec.data.batches import TensorSplit, batch_indices
from mtlrec.models.layers import MultiTaskModel


@torch.no_grad()
def predict(model: MultiTaskModel, split: TensorSplit, batch_size: int) -> torch.Tensor:
    """Probabilities [N, K] for every row of `split`, in row order."""
    was_training = model.training
    model.eval()
    outputs = [
        torch.sigmoid(model(split.dense[idx], split.sparse[idx]))
        for idx in batch_indices(len(split), batch_size, shuffle=False)
    ]
    model.train(was_training)
    return torch.cat(outputs).float().cpu()


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
