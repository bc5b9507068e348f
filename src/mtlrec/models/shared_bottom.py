"""Shared Bottom: one shared MLP over the embeddings, one tower per task.

Paper: Caruana 1997 / Ruder 2017, as configured in MPT-Rec (Bai et al. 2024) Table 2
(docs/spec/mptrec.md section 5.1: bottom (256,128), towers (64,32), reg 3e-4 on Census).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mtlrec.models.layers import MLP, FeatureEmbedding, FeatureSpec, MultiTaskModel, Tower


class SharedBottom(MultiTaskModel):
    """Args: features, num_tasks, embed_dim, expert_hidden (the bottom), tower_hidden, regs."""

    def __init__(self, features: FeatureSpec, num_tasks: int, embed_dim: int,
                 expert_hidden: Sequence[int], tower_hidden: Sequence[int], reg_emb: float,
                 reg_dnn: float) -> None:
        super().__init__(num_tasks, reg_emb, reg_dnn)
        self.embedding = FeatureEmbedding(features, embed_dim)
        self.bottom = MLP(self.embedding.output_dim, expert_hidden)
        self.towers = nn.ModuleList(
            Tower(self.bottom.output_dim, tower_hidden) for _ in range(num_tasks)
        )

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        shared = self.bottom(self.embedding(dense, sparse))  # [B, d]
        return torch.stack([tower(shared) for tower in self.towers], dim=1)  # [B, K]

    def regularised_modules(self) -> list[nn.Module]:
        return [self.bottom, self.towers]
