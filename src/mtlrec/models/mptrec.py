"""MPT-Rec pre-training model: task-sharing / task-specific disentangling with an adversarial task
classifier over EM-clustered pseudo task labels, and task-aware fusion.

Paper: Bai et al., "Efficient Multi-task Prompt Tuning for Recommendation", 2024 (arXiv
2408.17214), section 3.2, eqs. 1-9; the official code BAI-LAB/MPTRec as read in
docs/spec/mptrec.md sections 1-2, 4 and 8.

    x          = Embedding(dense, sparse)                               [B, D_in]
    h_share    = SharedExpert(x)                                        [B, d]   (the generator)
    h_spec_k   = SpecificExpert_k(x)                                    [B, d]
    h_aware_k  = h_spec_k * e_k          e_k: task embedding, N(0, 1)   (eq. 6)
    z_k        = g_k0 h_aware_k + g_k1 h_share,  g_k = softmax(W_k x)   (eq. 7)
    fused_k    = Tower_k(z_k);  share_k = Tower_k(h_share)              (eqs. 8, 1-2; towers shared)
    task logit = Classifier(GRL_alpha(h_share))                         (eqs. 3-4, discriminator)
    L = sum_k BCE(fused_k) + (1 - lam) sum_k BCE(share_k) + lam NLL(task logit, EM label) + L2
                                                                        (eq. 9)

Pseudo task labels (one per training row, carried by row id so training may shuffle) start
uniform at random and are re-assigned every `cluster_interval` epochs by the official E-step: each
row goes to the task whose own label the model currently predicts best (argmin of per-task BCE);
the number of clusters equals the number of tasks (spec section 8 #19). `e_step: invpref`
offers InvPref's rule instead (Wang et al. KDD 2022): plug each cluster's embedding into the fused
prediction, take the summed loss, break ties with a tiny seeded noise.

Deviations and options (see docs/deviations.md):
- `alpha_schedule: dann` (default) is DANN's schedule over all training steps; `official` mirrors
  the code's bug (batch size in place of batches per epoch, so alpha restarts every epoch).
- `stage1_loss: paper` (default) is eq. 9; `fused_only` mirrors the three_task branch (spec 3.2).
- `variant` gives the ablations of Fig. 4 as the two_task code's `--way` flag defines them:
  `share`/`specific` train the full loss but predict (and cluster) with Tower_k(h_share) /
  Tower_k(h_spec_k * e_k); `no_gan` drops the classifier term and weighs the share loss by 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mtlrec.models.adversarial import dann_alpha, reverse_gradient, schedule_progress
from mtlrec.models.layers import (
    MLP,
    Batch,
    FeatureEmbedding,
    FeatureSpec,
    Linear,
    LossTerms,
    MultiTaskModel,
    StepInfo,
    Tower,
)
from mtlrec.train.hooks import TaskClustering

VARIANTS = ("full", "share", "specific", "no_gan")


class MPTRec(MultiTaskModel):
    """Args: features, num_tasks, embed_dim, expert_hidden, tower_hidden, reg_emb, reg_dnn,
    gan_lambda (lam of eq. 5), variant, stage1_loss, alpha_schedule, cluster_interval, e_step,
    cluster_init."""

    min_tasks = 2  # the task classifier needs two pseudo task labels to tell apart

    def __init__(self, features: FeatureSpec, num_tasks: int, embed_dim: int,
                 expert_hidden: Sequence[int], tower_hidden: Sequence[int], reg_emb: float,
                 reg_dnn: float, gan_lambda: float = 0.1, variant: str = "full",
                 stage1_loss: str = "paper", alpha_schedule: str = "dann",
                 cluster_interval: int = 2, e_step: str = "official",
                 cluster_init: str = "random") -> None:
        super().__init__(num_tasks, reg_emb, reg_dnn)
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}")
        self.gan_lambda, self.variant, self.stage1_loss = gan_lambda, variant, stage1_loss
        self.alpha_schedule, self.cluster_interval, self.e_step = (alpha_schedule,
                                                                   cluster_interval, e_step)
        self.cluster_init = cluster_init
        self.embedding = FeatureEmbedding(features, embed_dim)
        in_dim = self.embedding.output_dim
        self.shared_expert = MLP(in_dim, expert_hidden)
        self.specific_experts = nn.ModuleList(MLP(in_dim, expert_hidden)
                                              for _ in range(num_tasks))
        d = self.shared_expert.output_dim
        self.task_embedding = nn.Embedding(num_tasks, d)  # e_k, N(0, 1)
        self.gates = Linear(in_dim, 2 * num_tasks, bias=False)  # K gates of Linear(D_in -> 2)
        self.towers = nn.ModuleList(Tower(d, tower_hidden) for _ in range(num_tasks))
        self.classifier = Linear(d, num_tasks)  # the discriminator over pseudo task labels
        nn.init.xavier_uniform_(self.classifier.weight)
        self.env_ids = torch.zeros(0, dtype=torch.long)  # pseudo task label of every train row
        self.alpha = 0.0
        self.em_round = 0

    # ----------------------------------------------------------------------------- forward paths
    def representations(self, dense: torch.Tensor, sparse: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.embedding(dense, sparse)  # [B, D_in]
        h_spec = torch.stack([expert(x) for expert in self.specific_experts], dim=1)  # [B, K, d]
        return {"x": x, "h_share": self.shared_expert(x), "h_spec": h_spec}

    def named_representations(self, dense: torch.Tensor, sparse: torch.Tensor
                              ) -> dict[str, torch.Tensor]:
        rep = self.representations(dense, sparse)
        return {"shared": rep["h_share"], "specific": rep["h_spec"]}  # [B, d], [B, K, d]

    def _gates(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.gates(x).view(-1, self.num_tasks, 2), dim=-1)  # [B, K, 2]

    def _fused(self, rep: dict[str, torch.Tensor], task_emb: torch.Tensor) -> torch.Tensor:
        # task_emb [K, d] (or one cluster's embedding repeated) -> fused logits [B, K]
        g = self._gates(rep["x"])  # [B, K, 2]
        h_aware = rep["h_spec"] * task_emb  # [B, K, d]
        z = g[..., :1] * h_aware + g[..., 1:] * rep["h_share"].unsqueeze(1)  # [B, K, d]
        return torch.stack([tower(z[:, k]) for k, tower in enumerate(self.towers)], dim=1)

    def _share(self, rep: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.stack([tower(rep["h_share"]) for tower in self.towers], dim=1)  # [B, K]

    def _specific(self, rep: dict[str, torch.Tensor]) -> torch.Tensor:
        h_aware = rep["h_spec"] * self.task_embedding.weight  # [B, K, d]
        return torch.stack([tower(h_aware[:, k]) for k, tower in enumerate(self.towers)], dim=1)

    def predict_logits(self, rep: dict[str, torch.Tensor]) -> torch.Tensor:
        """The prediction used for evaluation and for the E-step, per the ablation variant."""
        if self.variant == "share":
            return self._share(rep)
        if self.variant == "specific":
            return self._specific(rep)
        return self._fused(rep, self.task_embedding.weight)

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        return self.predict_logits(self.representations(dense, sparse))  # [B, K]

    # ---------------------------------------------------------------------------------- training
    def regularised_modules(self) -> list[nn.Module]:
        return [self.shared_expert, self.specific_experts, self.towers]

    def epoch_hooks(self) -> list[TaskClustering]:
        return [TaskClustering()]  # initial labels, then the E-step every cluster_interval epochs

    def training_losses(self, batch: Batch, info: StepInfo, objective: Any) -> LossTerms:
        """Eq. 9: the fused heads' task losses, (1 - lam) x the share heads' task losses, lam x
        the task classifier's NLL of the rows' pseudo task labels (through the GRL), and L2."""
        rep = self.representations(batch.dense, batch.sparse)
        per_task = objective.task_losses(self._fused(rep, self.task_embedding.weight),
                                         batch.labels)  # [K]
        loss = per_task.sum()
        if self.stage1_loss == "fused_only":
            return LossTerms(per_task, loss + self.l2_penalty())
        if self.variant == "no_gan":
            share = objective.task_losses(self._share(rep), batch.labels).sum()
            return LossTerms(per_task, loss + share + self.l2_penalty())
        progress = schedule_progress(self.alpha_schedule, info.epoch, info.step,
                                     info.steps_per_epoch, info.epochs, info.batch_size)
        self.alpha = dann_alpha(progress)
        task_logits = self.classifier(reverse_gradient(rep["h_share"], self.alpha))  # [B, K]
        task_loss = F.cross_entropy(task_logits, self.env_ids[batch.row_id])
        share_loss = objective.task_losses(self._share(rep), batch.labels).sum()
        lam = self.gan_lambda
        return LossTerms(per_task,
                         loss + (1 - lam) * share_loss + lam * task_loss + self.l2_penalty())

    def cluster_costs(self, dense: torch.Tensor, sparse: torch.Tensor, labels: torch.Tensor
                      ) -> torch.Tensor:
        """[B, n_clusters] E-step cost of each row under each cluster (labels [B, K]).

        `official`: the cost of cluster k is the BCE of task k on its own label; `invpref`: plug
        cluster c's embedding into every task's fused prediction and sum the BCEs."""
        rep = self.representations(dense, sparse)
        if self.e_step == "official":
            return F.binary_cross_entropy_with_logits(self.predict_logits(rep), labels,
                                                      reduction="none")
        per_cluster = []
        for c in range(self.num_tasks):
            emb = self.task_embedding.weight[c].expand(self.num_tasks, -1)
            bce = F.binary_cross_entropy_with_logits(self._fused(rep, emb), labels,
                                                     reduction="none")
            per_cluster.append(bce.sum(1))
        return torch.stack(per_cluster, dim=1)

    # ------------------------------------------------------------------------- checkpoint state
    def get_extra_state(self) -> dict[str, Any]:
        return {"env_ids": self.env_ids.cpu(), "em_round": self.em_round, "alpha": self.alpha}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.env_ids = state["env_ids"].to(self.task_embedding.weight.device)
        self.em_round, self.alpha = state["em_round"], state["alpha"]
