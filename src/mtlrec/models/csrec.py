"""CSRec: Sparse Sharing plus a contrastive subnetwork per task step.

Paper: Bai et al., "A Contrastive Sharing Model for Multi-Task Recommendation", WWW 2022, with the
official code's settings (docs/spec/mptrec.md 5.1): the Sparse Sharing model and masks, and in
task k's step, besides the gradient of its BCE through its subnetwork m_k, the gradient of **-BCE**
through the contrastive subnetwork c = 1 - prod_j m_j (everything but the part all tasks share),
masked by c and added to the masked weights' gradients before the Adam step. The contrastive pass
only feeds the masked bottom matrices (its gradients to embeddings, biases and towers are not
kept). The official code's random part of the contrastive mask is dead code (`p > 1` never holds),
so c is deterministic here too. Task k's step may move the masked matrices inside m_k or c; c
also holds the weights outside every subnetwork, which only the contrastive passes train (they
enter no task's prediction). m_k and c together cover every weight, so `masked_update`
(a Sparse Sharing option) makes no difference here.
"""

from __future__ import annotations

from typing import Any

import torch

from mtlrec.models.layers import Batch
from mtlrec.models.sparse_sharing import SparseSharing


class CSRec(SparseSharing):
    """Args as SparseSharing."""

    min_tasks = 2  # with one task the contrastive subnetwork is empty

    def contrastive_masks(self) -> list[torch.Tensor]:
        """c = 1 - (product of every task's mask), one [out, in] tensor per bottom Linear."""
        return [1 - m.prod(dim=0) for m in self.masks()]

    def update_masks(self, task: int) -> list[torch.Tensor]:
        own = super().update_masks(task)
        return [torch.maximum(m, c) for m, c in zip(own, self.contrastive_masks(), strict=True)]

    def add_extra_gradients(self, batch: Batch, task: int, objective: Any) -> None:
        """The gradient of minus the task's loss through the contrastive subnetwork (official:
        -BCE), added to the masked weights' gradients."""
        weights = [layer.weight for layer in self.masked_layers()]
        with torch.no_grad():
            x = self.embedding(batch.dense, batch.sparse)  # [B, D_in]; not trained by this pass
        logit = self.task_logit(x, task, self.contrastive_masks())  # [B]
        negative_loss = -objective.task_loss(logit, batch.labels[:, task])
        contrastive = torch.autograd.grad(negative_loss, weights)  # masked by c through W * c
        for weight, grad in zip(weights, contrastive, strict=True):
            weight.grad = grad if weight.grad is None else weight.grad + grad
