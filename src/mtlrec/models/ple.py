"""PLE: Progressive Layered Extraction (stacked CGC levels).

Paper: Tang et al., "Progressive Layered Extraction (PLE): A Novel Multi-Task Learning (MTL)
Model for Personalized Recommendations", RecSys 2020. Configured as in MPT-Rec's Table 2
(docs/spec/mptrec.md 5.1): 2 levels, 1 shared + 1 specific expert per task per level, single-layer
experts (256,), towers (64,32), gates Linear without bias (two_task code; `gate_bias` switches it).
Each task gate mixes that task's specific experts and the shared ones; every level but the last also
has a shared gate over all experts, whose output is the next level's shared input. Each gate reads
the same input as the experts it mixes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mtlrec.models.layers import MLP, FeatureEmbedding, FeatureSpec, Gate, MultiTaskModel, Tower


class CGCLevel(nn.Module):
    """One customised-gate-control level: inputs per task + shared in, outputs per task + shared."""

    def __init__(self, in_dim: int, num_tasks: int, n_shared: int, n_specific: int,
                 hidden: Sequence[int], shared_gate: bool, gate_bias: bool) -> None:
        super().__init__()
        self.specific = nn.ModuleList(
            nn.ModuleList(MLP(in_dim, hidden) for _ in range(n_specific)) for _ in range(num_tasks)
        )
        self.shared = nn.ModuleList(MLP(in_dim, hidden) for _ in range(n_shared))
        self.task_gates = nn.ModuleList(
            Gate(in_dim, n_specific + n_shared, gate_bias) for _ in range(num_tasks)
        )
        n_all = num_tasks * n_specific + n_shared
        self.shared_gate = Gate(in_dim, n_all, gate_bias) if shared_gate else None
        self.output_dim = self.shared[0].output_dim

    def forward(self, task_inputs: list[torch.Tensor], shared_input: torch.Tensor
                ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        shared_out = [expert(shared_input) for expert in self.shared]  # n_shared x [B, d]
        task_outputs, all_experts = [], []
        for x, experts, gate in zip(task_inputs, self.specific, self.task_gates, strict=True):
            spec_out = [expert(x) for expert in experts]  # n_specific x [B, d]
            all_experts += spec_out
            task_outputs.append(gate(x, spec_out + shared_out))  # [B, d]
        next_shared = None
        if self.shared_gate is not None:
            next_shared = self.shared_gate(shared_input, all_experts + shared_out)  # [B, d]
        return task_outputs, next_shared


class PLE(MultiTaskModel):
    """Args: features, num_tasks, embed_dim, num_levels, num_shared_experts, num_specific_experts,
    expert_hidden, tower_hidden, gate_bias, reg_emb, reg_dnn."""

    def __init__(self, features: FeatureSpec, num_tasks: int, embed_dim: int, num_levels: int,
                 num_shared_experts: int, num_specific_experts: int, expert_hidden: Sequence[int],
                 tower_hidden: Sequence[int], gate_bias: bool, reg_emb: float,
                 reg_dnn: float) -> None:
        super().__init__(num_tasks, reg_emb, reg_dnn)
        self.embedding = FeatureEmbedding(features, embed_dim)
        levels, in_dim = [], self.embedding.output_dim
        for level in range(num_levels):
            cgc = CGCLevel(in_dim, num_tasks, num_shared_experts, num_specific_experts,
                           expert_hidden, shared_gate=level < num_levels - 1, gate_bias=gate_bias)
            levels.append(cgc)
            in_dim = cgc.output_dim
        self.levels = nn.ModuleList(levels)
        self.towers = nn.ModuleList(Tower(in_dim, tower_hidden) for _ in range(num_tasks))

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        x = self.embedding(dense, sparse)  # [B, D_in]
        task_inputs, shared_input = [x] * self.num_tasks, x
        for level in self.levels:
            task_inputs, shared_input = level(task_inputs, shared_input)
        logits = [tower(h) for tower, h in zip(self.towers, task_inputs, strict=True)]
        return torch.stack(logits, dim=1)  # [B, K]

    def named_representations(self, dense: torch.Tensor, sparse: torch.Tensor
                              ) -> dict[str, torch.Tensor]:
        """The last CGC level's first shared expert (on its shared input) and each task's first
        specific expert (on that task's input): {"shared": [B, d], "specific": [B, K, d]}."""
        x = self.embedding(dense, sparse)  # [B, D_in]
        task_inputs, shared_input = [x] * self.num_tasks, x
        for level in self.levels[:-1]:
            task_inputs, shared_input = level(task_inputs, shared_input)
        last = self.levels[-1]
        specific = [experts[0](h) for experts, h in zip(last.specific, task_inputs, strict=True)]
        return {"shared": last.shared[0](shared_input), "specific": torch.stack(specific, dim=1)}

    def regularised_modules(self) -> list[nn.Module]:
        experts = [e for level in self.levels for e in [level.specific, level.shared]]
        return experts + [self.towers]
