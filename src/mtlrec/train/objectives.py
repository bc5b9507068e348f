"""Objectives: a model's prediction head -> per-task losses, and its logits -> scores.

One class per objective, registered by name in OBJECTIVES; an experiment names its objective
(`experiments.<name>.objective`). The training loop, the gradient combiners and the evaluation
look it up here and never assume BCE. Later objectives (BPR over sampled pairs for PMTRec's
ranking tasks) are one more class and one more registry line.
"""

from __future__ import annotations

from typing import ClassVar, Protocol

import torch
import torch.nn.functional as F

from mtlrec.errors import MtlrecError


class Objective(Protocol):
    name: ClassVar[str]

    def task_losses(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """logits, labels [B, K] -> [K] per-task batch losses."""
        ...

    def task_loss(self, logit: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """One task's logit, label [B] -> [] its batch loss (per-task steps)."""
        ...

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """logits [B, K] -> the scores a metric ranks [B, K]."""
        ...


class BinaryCrossEntropy:
    """Per task, the batch mean of binary cross-entropy on the logits (sigmoid folded in): the
    loss of every MPT-Rec Table 2 model (the official code's BCELoss on sigmoid outputs, in its
    numerically safe form)."""

    name: ClassVar[str] = "bce"

    def task_losses(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(0)  # [K]

    def task_loss(self, logit: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logit, label)  # []

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)  # probabilities [B, K]


OBJECTIVES: dict[str, type[Objective]] = {
    BinaryCrossEntropy.name: BinaryCrossEntropy,
}


def get_objective(name: str) -> Objective:
    if name not in OBJECTIVES:
        raise MtlrecError(f"unknown objective '{name}' (known: {sorted(OBJECTIVES)})")
    return OBJECTIVES[name]()
