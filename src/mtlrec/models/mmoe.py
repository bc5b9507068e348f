"""MMOE: Multi-gate Mixture-of-Experts.

Paper: Ma et al., "Modeling Task Relationships in Multi-task Learning with Multi-gate
Mixture-of-Experts", KDD 2018. Configured as in MPT-Rec's Table 2 (docs/spec/mptrec.md 5.1):
3 experts (256,128), per-task gate Linear(D_in -> 3, no bias) + softmax on the embedding output,
towers (64,32); reg 3e-4 on embeddings and expert/tower weights (not gates).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mtlrec.models.layers import MLP, FeatureEmbedding, FeatureSpec, Gate, MultiTaskModel, Tower


class MMOE(MultiTaskModel):
    """Args: features, num_tasks, embed_dim, num_experts, expert_hidden, tower_hidden, regs."""

    def __init__(self, features: FeatureSpec, num_tasks: int, embed_dim: int, num_experts: int,
                 expert_hidden: Sequence[int], tower_hidden: Sequence[int], reg_emb: float,
                 reg_dnn: float) -> None:
        super().__init__(num_tasks, reg_emb, reg_dnn)
        self.embedding = FeatureEmbedding(features, embed_dim)
        in_dim = self.embedding.output_dim
        self.experts = nn.ModuleList(MLP(in_dim, expert_hidden) for _ in range(num_experts))
        self.gates = nn.ModuleList(Gate(in_dim, num_experts) for _ in range(num_tasks))
        d = self.experts[0].output_dim
        self.towers = nn.ModuleList(Tower(d, tower_hidden) for _ in range(num_tasks))

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        x = self.embedding(dense, sparse)  # [B, D_in]
        experts = [expert(x) for expert in self.experts]  # n_exp x [B, d]
        logits = [tower(gate(x, experts)) for gate, tower in zip(self.gates, self.towers,
                                                                   strict=True)]
        return torch.stack(logits, dim=1)  # [B, K]

    def regularised_modules(self) -> list[nn.Module]:
        return [self.experts, self.towers]
