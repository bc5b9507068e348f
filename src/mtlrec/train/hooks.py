"""Epoch hooks: work the training loop runs before training and after each epoch, outside the
model's forward and outside the optimisation step.

`TaskClustering` is MPT-Rec's EM step over pseudo task labels (Bai et al. 2024, section 3.2;
docs/spec/mptrec.md section 2.1): before training every row gets an initial label, and every
`cluster_interval` epochs a pass over the whole training split re-assigns each row to the cluster
with the lowest cost under the current model (the model computes a batch's costs,
`cluster_costs`; this module runs the pass and keeps the history). The labels live on the model
(`env_ids`, saved in its checkpoint) because its adversarial loss reads them.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from mtlrec.data.batches import BatchSource


class EpochHook(Protocol):
    def before_training(self, model: Any, num_train_rows: int) -> None:
        """Called once before training (and before a resumed state is loaded)."""
        ...

    def after_epoch(self, model: Any, epoch: int, train: BatchSource, eval_batch_size: int
                    ) -> dict[str, Any]:
        """Called after each training epoch; returns extra fields of the epoch's curve entry."""
        ...


class TaskClustering:
    """EM pseudo task labels. The model provides `num_tasks`, `cluster_init` (random | balanced),
    `cluster_interval`, `e_step`, `env_ids`, `em_round`, `alpha` and `cluster_costs`."""

    def before_training(self, model: Any, num_train_rows: int) -> None:
        """Initial labels from torch's seeded RNG: `random` draws each row's label uniformly (the
        official code); `balanced` deals a random permutation into equal clusters."""
        if model.cluster_init == "random":
            labels = torch.randint(0, model.num_tasks, (num_train_rows,))
        elif model.cluster_init == "balanced":
            labels = torch.randperm(num_train_rows) % model.num_tasks
        else:
            raise ValueError(f"unknown cluster_init '{model.cluster_init}'")
        model.env_ids = labels.to(model.task_embedding.weight.device)
        model.em_round = 0

    @torch.no_grad()
    def per_row_costs(self, model: Any, train: BatchSource, batch_size: int) -> torch.Tensor:
        """[N, n_clusters] cost of every training row under every cluster (the E-step's costs)."""
        was_training = model.training
        model.eval()
        costs = [model.cluster_costs(rows.dense, rows.sparse, rows.labels)
                 for rows in train.batches(batch_size)]
        model.train(was_training)
        return torch.cat(costs)

    def assign(self, model: Any, train: BatchSource, batch_size: int) -> torch.Tensor:
        """New labels: argmin over clusters of the per-row cost (ties: lowest index; `invpref`
        adds a tiny seeded noise first, as InvPref does)."""
        costs = self.per_row_costs(model, train, batch_size)
        if model.e_step == "invpref":
            noise = torch.rand(costs.shape, generator=torch.Generator().manual_seed(model.em_round))
            costs = costs + 1e-10 * noise.to(costs.device)
        return costs.argmin(dim=1)

    def after_epoch(self, model: Any, epoch: int, train: BatchSource, eval_batch_size: int
                    ) -> dict[str, Any]:
        """E-step every `cluster_interval` epochs (in every variant, as in the official code, even
        where no loss term reads the labels); returns the label history fields."""
        info: dict[str, Any] = {"alpha": round(model.alpha, 6)}
        if epoch % model.cluster_interval == 0:
            new = self.assign(model, train, eval_batch_size)
            info["em_changed"] = float((new != model.env_ids).float().mean())
            model.env_ids = new
            model.em_round += 1
        info["em_round"] = model.em_round
        info["em_sizes"] = torch.bincount(model.env_ids, minlength=model.num_tasks).tolist()
        return info
