"""Sparse Sharing: per-task subnetworks of one shared bottom, found by pruning, trained jointly.

Paper: Sun et al., "Learning Sparse Sharing Architectures for Multiple Tasks", AAAI 2020, as
configured in MPT-Rec's Table 2 (docs/spec/mptrec.md 5.1): a Shared Bottom whose bottom weight
matrices (not biases) are masked per task. The masks come from iterative magnitude pruning
(`mtlrec masks`, mtlrec.train.pruning) and are loaded with `load_masks`; they are buffers, so they
travel in model.pt. Training steps once per task per batch: task k's loss (its BCE + the embedding
L2) through the bottom with weights W * m_k, so the gradient of every masked matrix is masked too.
The steps are made by the `masked_taskwise` gradient combiner (mtlrec.train.combiners), which
reads this model's masks; the model itself never steps the optimiser.

Deviation, as a named option (`masked_update`):
- `exact` (default, the paper: only task k's subnetwork is updated by task k's step): after the Adam
  step, the masked matrices are put back to their old values wherever this step had no gradient.
- `official`: a plain Adam step on the masked gradients, as the official code does; Adam's momentum
  from the other task's steps then still moves weights outside task k's subnetwork.
Weights outside every mask never receive a gradient, so they never move in either mode.

A fresh model under the run's seed starts from the same weights as the Shared Bottom that the
pruning began with (same modules built in the same order): the subnetworks are trained from their
initialisation, not from the warm-up weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from mtlrec.errors import MtlrecError
from mtlrec.kernels import linear_stack
from mtlrec.models.layers import (
    MLP,
    Batch,
    FeatureEmbedding,
    FeatureSpec,
    MultiTaskModel,
    Tower,
)

MASKED_UPDATES = ("exact", "official")


def prune_rate(masks: Sequence[torch.Tensor]) -> float:
    """Share of zeros over a set of 0/1 masks."""
    total = sum(m.numel() for m in masks)
    return 1.0 - sum(float(m.sum()) for m in masks) / total


class SparseSharing(MultiTaskModel):
    """Args: features, num_tasks, embed_dim, expert_hidden (the bottom), tower_hidden, regs,
    masked_update (exact | official)."""

    needs_masks = True
    combiner = "masked_taskwise"  # one step per task per batch (mtlrec.train.combiners)

    def __init__(self, features: FeatureSpec, num_tasks: int, embed_dim: int,
                 expert_hidden: Sequence[int], tower_hidden: Sequence[int], reg_emb: float,
                 reg_dnn: float, masked_update: str = "exact") -> None:
        super().__init__(num_tasks, reg_emb, reg_dnn)
        if masked_update not in MASKED_UPDATES:
            raise MtlrecError(f"masked_update must be one of {MASKED_UPDATES}, got {masked_update}")
        self.masked_update = masked_update
        # Built in Shared Bottom's order, so that one seed gives both the same initial weights.
        self.embedding = FeatureEmbedding(features, embed_dim)
        self.bottom = MLP(self.embedding.output_dim, expert_hidden)
        self.towers = nn.ModuleList(
            Tower(self.bottom.output_dim, tower_hidden) for _ in range(num_tasks)
        )
        for i, layer in enumerate(self.masked_layers()):  # all-ones until load_masks
            self.register_buffer(f"mask_{i}", torch.ones(num_tasks, *layer.weight.shape))
        self.active_tasks: tuple[int, ...] = tuple(range(num_tasks))  # the tasks a batch steps

    def masked_layers(self) -> list[nn.Linear]:
        return [m for m in self.bottom if isinstance(m, nn.Linear)]

    def masks(self) -> list[torch.Tensor]:
        """One [K, out, in] 0/1 tensor per bottom Linear."""
        return [getattr(self, f"mask_{i}") for i in range(len(self.masked_layers()))]

    def load_masks(self, masks: Sequence[torch.Tensor]) -> None:
        """Set the per-task masks ([K, out, in] per bottom Linear), checking their shapes."""
        own = self.masks()
        if len(masks) != len(own) or any(m.shape != o.shape for m, o in zip(masks, own,
                                                                              strict=False)):
            raise MtlrecError(
                f"masks do not fit the model: got {[tuple(m.shape) for m in masks]}, the bottom "
                f"needs {[tuple(o.shape) for o in own]} (pruning.network must match the model)")
        for target, mask in zip(own, masks, strict=True):
            target.copy_((mask != 0).to(target.dtype))

    def prune_rates(self) -> list[float]:
        """Per task, the share of the masked weights outside its subnetwork."""
        return [prune_rate([m[k] for m in self.masks()]) for k in range(self.num_tasks)]

    def subnet_bottom(self, x: torch.Tensor, layer_masks: Sequence[torch.Tensor]) -> torch.Tensor:
        """The bottom with weight i replaced by W_i * layer_masks[i]; x [B, D_in] -> [B, d]."""
        layers = [(layer.weight * mask, layer.bias, True)  # the bottom is an MLP
                  for layer, mask in zip(self.masked_layers(), layer_masks, strict=True)]
        return linear_stack(x, layers)

    def task_logit(self, x: torch.Tensor, task: int,
                   layer_masks: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """Task `task`'s logit [B] through its subnetwork (or through `layer_masks`)."""
        if layer_masks is None:
            layer_masks = [m[task] for m in self.masks()]
        return self.towers[task](self.subnet_bottom(x, layer_masks))

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        x = self.embedding(dense, sparse)  # [B, D_in]
        return torch.stack([self.task_logit(x, k) for k in range(self.num_tasks)], dim=1)

    def task_loss(self, batch: Batch, task: int, objective: Any) -> torch.Tensor:
        """Task `task`'s loss through its subnetwork plus the L2 terms (official: per task step)."""
        logit = self.task_logit(self.embedding(batch.dense, batch.sparse), task)
        return objective.task_loss(logit, batch.labels[:, task]) + self.l2_penalty()

    def update_masks(self, task: int) -> list[torch.Tensor]:
        """Where task `task`'s step may move the masked matrices (its subnetwork)."""
        return [m[task] for m in self.masks()]

    def add_extra_gradients(self, batch: Batch, task: int, objective: Any) -> None:
        """Hook for gradients added to task `task`'s step before it is taken (CSRec)."""

    def regularised_modules(self) -> list[nn.Module]:
        # The masked bottom is not dnn-regularised: an L2 gradient would move weights outside the
        # subnetworks (official Census setting: reg_dnn 0 anyway).
        return [self.towers]
