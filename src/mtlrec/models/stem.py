"""STEM: shared and task-specific embeddings with all-forward task-specific gating.

Paper: Su et al., "STEM: Unleashing the Power of Embeddings for Multi-task Recommendation", AAAI
2024 (arXiv 2308.13537). Configured as in MPT-Rec's Table 2 (docs/spec/mptrec.md 5.1): one shared
embedding table and shared expert, one embedding table and specific expert (256,128) per task; task
k's gate reads emb_k(x) + emb_shared(x) and mixes all K specific experts and the shared expert
(Linear without bias + softmax); the other tasks' specific expert outputs enter task k's mixture
through a stop-gradient, so task k's loss trains only its own and the shared embeddings/experts
(All-Forward Task-specific Gating). Census regs: reg_emb 0.006 on every table, reg_dnn 0.

Deviation option `gating`: `intended` (default, the paper's STEM) or `official`, the official
MPT-Rec code (baseline STEM in multitaskrec/model.py, every stored version): its gate loop reassigns
the list of specific-expert outputs, so the stop-gradients pile up. Task 1's mixture sees its own
expert live; every later task's mixture sees all specific experts detached, its own included. With
two tasks the second task's specific expert then gets no loss gradient at all (only its embedding
table learns, through task 2's gate input). docs/deviations.md, "STEM".
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mtlrec.models.layers import MLP, FeatureEmbedding, FeatureSpec, Gate, MultiTaskModel, Tower

GATINGS = ("intended", "official")


class STEM(MultiTaskModel):
    """Args: features, num_tasks, embed_dim, expert_hidden, tower_hidden, reg_emb, reg_dnn,
    gating (`intended` | `official`, module docstring)."""

    def __init__(self, features: FeatureSpec, num_tasks: int, embed_dim: int,
                 expert_hidden: Sequence[int], tower_hidden: Sequence[int], reg_emb: float,
                 reg_dnn: float, gating: str = "intended") -> None:
        super().__init__(num_tasks, reg_emb, reg_dnn)
        if gating not in GATINGS:
            raise ValueError(f"STEM gating must be one of {GATINGS}, got {gating!r}")
        self.gating = gating
        self.shared_embedding = FeatureEmbedding(features, embed_dim)
        self.task_embeddings = nn.ModuleList(
            FeatureEmbedding(features, embed_dim) for _ in range(num_tasks)
        )
        in_dim = self.shared_embedding.output_dim
        self.shared_expert = MLP(in_dim, expert_hidden)
        self.specific_experts = nn.ModuleList(MLP(in_dim, expert_hidden)
                                              for _ in range(num_tasks))
        self.gates = nn.ModuleList(Gate(in_dim, num_tasks + 1) for _ in range(num_tasks))
        d = self.shared_expert.output_dim
        self.towers = nn.ModuleList(Tower(d, tower_hidden) for _ in range(num_tasks))

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        shared_x = self.shared_embedding(dense, sparse)  # [B, D_in]
        task_x = [emb(dense, sparse) for emb in self.task_embeddings]  # K x [B, D_in]
        shared_h = self.shared_expert(shared_x)  # [B, d]
        specific_h = [expert(x) for expert, x in zip(self.specific_experts, task_x, strict=True)]
        logits = []
        experts = specific_h
        for k, (gate, tower) in enumerate(zip(self.gates, self.towers, strict=True)):
            # intended: detach the other tasks' outputs of this step; official: of the list
            # the previous task left (its detached entries stay detached)
            source = experts if self.gating == "official" else specific_h
            experts = [h if j == k else h.detach() for j, h in enumerate(source)]
            mixed = gate(task_x[k] + shared_x, experts + [shared_h])  # [B, d]
            logits.append(tower(mixed))
        return torch.stack(logits, dim=1)  # [B, K]

    def regularised_modules(self) -> list[nn.Module]:
        return [self.shared_expert, self.specific_experts, self.towers]
