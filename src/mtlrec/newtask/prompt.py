"""MPT-Rec's prompt tuning of a new task on the frozen pre-trained MPT-Rec (the NewTask head).

Paper: Bai et al., "Efficient Multi-task Prompt Tuning for Recommendation", 2024, section 3.3,
eqs. 10-15; the official three_task branch as read in docs/spec/mptrec.md section 3.3:

    h_p   = LayerNorm(W2 ReLU(W1 x))          W1: D_in -> d/2, W2: d/2 -> d, no biases   (eq. 10)
    w     = softmax_k(h_p . e_k / tau)        instance-level weights over the K tasks    (eq. 11)
    h_tr  = sum_k w_k h_spec_k                                                           (eq. 12)
    h_new = h_tr * e_new                      e_new: trainable task embedding, N(0, 1)   (eq. 13)
    z     = g_0 h_new + g_1 h_share,          g = softmax(W_g x), no bias                 (eq. 14)
    logit = Tower(z);  loss = BCE + reg_dnn sum ||W_tower||^2 / 2                        (eq. 15)

x, h_share, h_spec_k and e_k come from the frozen backbone (its embedding output, shared expert,
raw specific experts and task embeddings). tau = 150 is the official code's constant (not in the
paper).

Variants (Fig. 5 and the stage-2 reading of Fig. 4, spec section 4):
- `transfer: fixed` (FW): w = 1/K for every instance (the official commented "FW" line);
  `transfer: task` (TES): w = softmax_k(e_new . e_k / tau), one weight vector for all instances;
- `fusion: share`: z = h_share (gate fixed to [0, 1]); `fusion: specific`: z = h_new ([1, 0]).
  The -GAN variant is the same head on a backbone pre-trained without the adversarial loss.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mtlrec.models.layers import Linear, Tower
from mtlrec.models.mptrec import MPTRec

TRANSFERS = ("instance", "fixed", "task")
FUSIONS = ("gate", "share", "specific")


class PromptHead(nn.Module):
    """The NewTask head on cached backbone features [x | h_share | h_spec_1..K]."""

    backbone_models = ("mptrec",)

    def __init__(self, backbone: MPTRec, tower_hidden: Sequence[int], reg_dnn: float,
                 tau: float = 150.0, transfer: str = "instance", fusion: str = "gate") -> None:
        super().__init__()
        if transfer not in TRANSFERS or fusion not in FUSIONS:
            raise ValueError(f"transfer must be one of {TRANSFERS}, fusion one of {FUSIONS}")
        self.tau, self.transfer, self.fusion, self.reg_dnn = tau, transfer, fusion, reg_dnn
        self.in_dim = backbone.embedding.output_dim
        d = backbone.shared_expert.output_dim
        self.d, self.num_tasks = d, backbone.num_tasks
        # the existing tasks' embeddings e_k: frozen constants of the head [K, d]
        self.register_buffer("task_embedding", backbone.task_embedding.weight.detach().clone())
        self.new_embedding = nn.Embedding(1, d)  # e_new, N(0, 1)
        self.projection = nn.Sequential(Linear(self.in_dim, d // 2, bias=False), nn.ReLU(),
                                        Linear(d // 2, d, bias=False), nn.LayerNorm(d))
        self.gate = Linear(self.in_dim, 2, bias=False)
        self.tower = Tower(d, tower_hidden)
        self.feature_dim = self.in_dim + d + self.num_tasks * d

    @staticmethod
    def features(backbone: MPTRec, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        """The frozen backbone's outputs the head reads, as one row [B, D_in + d + K d]."""
        rep = backbone.representations(dense, sparse)
        return torch.cat([rep["x"], rep["h_share"], rep["h_spec"].flatten(1)], dim=1)

    def split(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, h_share, h_spec = features.split([self.in_dim, self.d, self.num_tasks * self.d], 1)
        return x, h_share, h_spec.view(-1, self.num_tasks, self.d)  # [B,D_in], [B,d], [B,K,d]

    def transfer_weights(self, x: torch.Tensor) -> torch.Tensor:
        """w [B, K] (eq. 11, or the FW / TES variant)."""
        if self.transfer == "fixed":
            return x.new_full((x.shape[0], self.num_tasks), 1.0 / self.num_tasks)
        if self.transfer == "task":
            w = torch.softmax(self.task_embedding @ self.new_embedding.weight[0] / self.tau, 0)
            return w.expand(x.shape[0], -1)  # the same [K] weights for every instance
        prompt = self.projection(x)  # [B, d]
        return torch.softmax(prompt @ self.task_embedding.T / self.tau, dim=1)  # [B, K]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x, h_share, h_spec = self.split(features)
        w = self.transfer_weights(x)  # [B, K]
        h_new = (w.unsqueeze(2) * h_spec).sum(1) * self.new_embedding.weight[0]  # [B, d]
        if self.fusion == "share":
            z = h_share
        elif self.fusion == "specific":
            z = h_new
        else:
            g = torch.softmax(self.gate(x), dim=1)  # [B, 2]
            z = g[:, :1] * h_new + g[:, 1:] * h_share  # [B, d]
        return self.tower(z)  # [B]

    def regularised_modules(self) -> list[nn.Module]:
        return [self.tower]

    def trained_modules(self) -> list[nn.Module]:
        """The modules whose parameters train (for #Params / #FLOPs), per variant."""
        modules: list[nn.Module] = [self.tower]
        if self.fusion != "share":
            modules.append(self.new_embedding)
            if self.transfer == "instance":
                modules.append(self.projection)
        if self.fusion == "gate":
            modules.append(self.gate)
        return modules
