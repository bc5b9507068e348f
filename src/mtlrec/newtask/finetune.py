"""Fine-tuned baselines for a new task: a pre-trained multi-task model, part of it frozen, a new
one-task part trained (Shared Bottom*, MMOE*, PLE* of the MPT-Rec paper, section 4.3.2, Fig. 3;
the official `baseline/*/CensusIncome_NewTask.py` as read in docs/spec/mptrec.md section 5.1).

What each freezes (the parts that train start from a fresh initialisation, as the official
scripts delete them from the checkpoint before loading it):
- Shared Bottom*: embeddings + the shared bottom frozen; a new tower trains.
- MMOE*: embeddings + every expert frozen; a new gate over the experts and a new tower train.
- PLE*: embeddings + the shared experts of every level frozen; a new one-task PLE's specific
  experts, its task and shared gates and its tower train (the frozen shared expert of a later
  level still runs on the new shared gate's output).
The frozen part that depends on the inputs alone is computed once (`features`); the head runs
the rest.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from mtlrec.models.layers import MLP, Gate, Tower
from mtlrec.models.mmoe import MMOE
from mtlrec.models.ple import PLE
from mtlrec.models.shared_bottom import SharedBottom


def _frozen(module: nn.Module) -> nn.Module:
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module


class SharedBottomHead(nn.Module):
    """Shared Bottom*: a new tower on the frozen bottom's output [B, d]."""

    backbone_models = ("shared_bottom",)

    def __init__(self, backbone: SharedBottom, tower_hidden: Sequence[int], reg_dnn: float
                 ) -> None:
        super().__init__()
        self.reg_dnn = reg_dnn
        self.feature_dim = backbone.bottom.output_dim
        self.tower = Tower(self.feature_dim, tower_hidden)

    @staticmethod
    def features(backbone: SharedBottom, dense: torch.Tensor, sparse: torch.Tensor
                 ) -> torch.Tensor:
        return backbone.bottom(backbone.embedding(dense, sparse))  # [B, d]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.tower(features)  # [B]

    def regularised_modules(self) -> list[nn.Module]:
        return [self.tower]

    def trained_modules(self) -> list[nn.Module]:
        return [self.tower]


class MMOEHead(nn.Module):
    """MMOE*: a new gate (on the embedding output) over the frozen experts, and a new tower."""

    backbone_models = ("mmoe",)

    def __init__(self, backbone: MMOE, tower_hidden: Sequence[int], reg_dnn: float) -> None:
        super().__init__()
        self.reg_dnn = reg_dnn
        self.in_dim = backbone.embedding.output_dim
        self.num_experts = len(backbone.experts)
        self.d = backbone.experts[0].output_dim
        self.feature_dim = self.in_dim + self.num_experts * self.d
        self.gate = Gate(self.in_dim, self.num_experts)
        self.tower = Tower(self.d, tower_hidden)

    @staticmethod
    def features(backbone: MMOE, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        x = backbone.embedding(dense, sparse)  # [B, D_in]
        return torch.cat([x, *(expert(x) for expert in backbone.experts)], dim=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x, *experts = features.split([self.in_dim] + [self.d] * self.num_experts, dim=1)
        return self.tower(self.gate(x, experts))  # [B]

    def regularised_modules(self) -> list[nn.Module]:
        return [self.tower]

    def trained_modules(self) -> list[nn.Module]:
        return [self.gate, self.tower]


class PLEHead(nn.Module):
    """PLE*: a one-task PLE whose shared experts are the backbone's (frozen); the first level's
    shared experts run on the embedding output and are cached, later levels' run in the head."""

    backbone_models = ("ple",)

    def __init__(self, backbone: PLE, tower_hidden: Sequence[int], reg_dnn: float) -> None:
        super().__init__()
        self.reg_dnn = reg_dnn
        first = backbone.levels[0]
        self.in_dim = backbone.embedding.output_dim
        self.n_shared = len(first.shared)
        self.n_specific = len(first.specific[0])
        self.d = first.output_dim
        self.feature_dim = self.in_dim + self.n_shared * self.d
        gate_bias = first.task_gates[0].linear.bias is not None
        hidden = [m.out_features for m in first.shared[0] if isinstance(m, nn.Linear)]
        self.specific = nn.ModuleList()
        self.task_gates = nn.ModuleList()
        self.shared_gates = nn.ModuleList()
        self.later_shared = nn.ModuleList()  # frozen shared experts of levels 2..L
        in_dim = self.in_dim
        for index, level in enumerate(backbone.levels):
            self.specific.append(nn.ModuleList(MLP(in_dim, hidden)
                                               for _ in range(self.n_specific)))
            self.task_gates.append(Gate(in_dim, self.n_specific + self.n_shared, gate_bias))
            if level.shared_gate is not None:
                self.shared_gates.append(Gate(in_dim, self.n_specific + self.n_shared,
                                              gate_bias))
            if index > 0:
                self.later_shared.append(_frozen(copy.deepcopy(level.shared)))
            in_dim = level.output_dim
        self.tower = Tower(in_dim, tower_hidden)

    @staticmethod
    def features(backbone: PLE, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        x = backbone.embedding(dense, sparse)  # [B, D_in]
        return torch.cat([x, *(expert(x) for expert in backbone.levels[0].shared)], dim=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x, *shared_out = features.split([self.in_dim] + [self.d] * self.n_shared, dim=1)
        task_input, shared_input = x, x
        for level, experts in enumerate(self.specific):
            if level > 0:
                shared_out = [expert(shared_input) for expert in self.later_shared[level - 1]]
            spec_out = [expert(task_input) for expert in experts]
            choices = spec_out + list(shared_out)
            next_task = self.task_gates[level](task_input, choices)  # [B, d]
            if level < len(self.shared_gates):
                shared_input = self.shared_gates[level](shared_input, choices)  # [B, d]
            task_input = next_task
        return self.tower(task_input)  # [B]

    def regularised_modules(self) -> list[nn.Module]:
        return [self.specific, self.tower]

    def trained_modules(self) -> list[nn.Module]:
        return [self.specific, self.task_gates, self.shared_gates, self.tower]
