"""MAML: a meta-learnt initialisation for new tasks (the MPT-Rec paper's Table 3 baseline).

Paper: Finn, Abbeel, Levine, "Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks",
ICML 2017 (Algorithm 1, supervised), as the MPT-Rec paper (Bai et al. 2024, section 4.3.2) uses it
for new-task adoption. No official MPT-Rec driver exists (docs/spec/mptrec.md section 5.1: the
only hook, `SingleTask.functional_forward`, ignores its fast weights), so every choice below is
ours (docs/deviations.md, "MAML"):

- Network: the Single Task architecture (embeddings -> expert MLP -> tower -> one logit), so the
  new task fine-tunes one ordinary network. Its forward returns that logit for each of the K
  training tasks ([B, K], the same column K times): the meta-initialisation predicts no task in
  particular.
- Meta-tasks: the existing tasks (T1, T2) of the experiment; the new task is the meta-test task
  and is never seen in meta-training.
- One meta-step per training batch: the batch's first half is the support set, the second half
  the query set; for every task k, `inner_steps` SGD steps of size `inner_lr` on the support loss
  of task k give fast weights theta'_k, and the meta-loss is sum_k L_query,k(theta'_k) + L2(theta),
  stepped by the run's Adam (the outer optimiser, `train.lr`).
- `order: 1` (default) is first-order MAML (the inner gradients are constants: the meta-gradient
  is the query gradient at theta'); `order: 2` differentiates through the inner steps and runs on
  torch's plain ops (the fused `onednn` / `blas` paths have first-order backward only).
- Meta-training stops early on the sum of the initialisation's validation AUCs over the existing
  tasks (the loop's rule for every run); the new task then fine-tunes every parameter
  (new_task method kind `finetune`, backbone `maml`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mtlrec.models.layers import MLP, FeatureEmbedding, FeatureSpec, MultiTaskModel, Tower


class MAML(MultiTaskModel):
    """Args: features, num_tasks, embed_dim, expert_hidden, tower_hidden, reg_emb, reg_dnn,
    inner_lr, inner_steps, order."""

    combiner = "maml"

    def __init__(self, features: FeatureSpec, num_tasks: int, embed_dim: int,
                 expert_hidden: Sequence[int], tower_hidden: Sequence[int], reg_emb: float,
                 reg_dnn: float, inner_lr: float = 0.01, inner_steps: int = 1,
                 order: int = 1) -> None:
        super().__init__(num_tasks, reg_emb, reg_dnn)
        if order not in (1, 2):
            raise ValueError("order must be 1 (first-order MAML) or 2")
        self.inner_lr, self.inner_steps, self.order = inner_lr, inner_steps, order
        self.embedding = FeatureEmbedding(features, embed_dim)
        self.expert = MLP(self.embedding.output_dim, expert_hidden)
        self.tower = Tower(self.expert.output_dim, tower_hidden)

    def logit(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        return self.tower(self.expert(self.embedding(dense, sparse)))  # [B]

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        return self.logit(dense, sparse).unsqueeze(1).expand(-1, self.num_tasks)  # [B, K]

    def regularised_modules(self) -> list[nn.Module]:
        return [self.expert, self.tower]
