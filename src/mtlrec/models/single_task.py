"""Single Task: one independent network per task (embeddings -> MLP expert -> tower).

Paper: the "Single Task" baseline of MPT-Rec (Bai et al. 2024), Table 2.
Deviation: the official code trains one model per task in separate runs. Here the K networks live in
one module and are trained in one run on the summed loss. Their parameters are disjoint and Adam is
per-parameter, so every network gets exactly the updates of its solo run; only the early-stopping
epoch is shared (chosen on the sum of validation AUCs, like every other model here).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mtlrec.models.layers import MLP, FeatureEmbedding, FeatureSpec, MultiTaskModel, Tower


class SingleTask(MultiTaskModel):
    """Args: features, num_tasks, embed_dim, expert_hidden, tower_hidden, reg_emb, reg_dnn."""

    def __init__(self, features: FeatureSpec, num_tasks: int, embed_dim: int,
                 expert_hidden: Sequence[int], tower_hidden: Sequence[int], reg_emb: float,
                 reg_dnn: float) -> None:
        super().__init__(num_tasks, reg_emb, reg_dnn)
        self.embeddings = nn.ModuleList(
            FeatureEmbedding(features, embed_dim) for _ in range(num_tasks)
        )
        in_dim = self.embeddings[0].output_dim
        self.experts = nn.ModuleList(MLP(in_dim, expert_hidden) for _ in range(num_tasks))
        self.towers = nn.ModuleList(
            Tower(self.experts[0].output_dim, tower_hidden) for _ in range(num_tasks)
        )

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        logits = [
            tower(expert(embedding(dense, sparse)))  # [B]
            for embedding, expert, tower in zip(self.embeddings, self.experts, self.towers,
                                                strict=True)
        ]
        return torch.stack(logits, dim=1)  # [B, K]

    def regularised_modules(self) -> list[nn.Module]:
        return [self.experts, self.towers]
