"""Gradient combiners: how the losses of one batch become parameter updates.

A combiner takes the model, a batch, the objective and the optimiser and makes the step(s); the
training loop calls nothing else, and no model steps an optimiser. Registered by name in
COMBINERS; a model names the one its paper prescribes (`MultiTaskModel.combiner`).

- `sum`: one backward pass of the summed loss (`LossTerms.total`), one optimiser step: the same
  update as summing per-task gradients, without computing them apart.
- `masked_taskwise`: Sparse Sharing / CSRec (Sun et al. AAAI 2020; Bai et al. WWW 2022): one step
  per task per batch, task k's loss through its subnetwork, the model's extra gradients for that
  step (CSRec's contrastive term) added, and in `exact` mode the masked matrices put back outside
  the step's update mask (see mtlrec.models.sparse_sharing).

Per-task (Jacobian) combiners for PMTRec's baselines (torchjd's aggregators: PCGrad, GradVac,
CAGrad, Aligned-MTL, Nash-MTL, ...) and PMTRec's per-user/per-item pooling are further classes
with the same `step`, reading `LossTerms.per_task`.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any, ClassVar, Protocol

import torch

from mtlrec.errors import MtlrecError
from mtlrec.models.layers import Batch, MultiTaskModel, StepInfo


class GradientCombiner(Protocol):
    name: ClassVar[str]

    def step(self, model: MultiTaskModel, batch: Batch, info: StepInfo, objective: Any,
             optimizer: torch.optim.Optimizer) -> torch.Tensor:
        """Update the model on `batch`; return the (detached) loss of the step(s)."""
        ...


class SumOfLosses:
    name: ClassVar[str] = "sum"

    def step(self, model: MultiTaskModel, batch: Batch, info: StepInfo, objective: Any,
             optimizer: torch.optim.Optimizer) -> torch.Tensor:
        loss = model.training_losses(batch, info, objective).total
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()


class MaskedTaskSteps:
    """One step per task; the model provides `active_tasks`, `task_loss(batch, task, objective)`,
    `add_extra_gradients(batch, task, objective)`, `update_masks(task)`, `masked_layers()` and
    `masked_update` ('exact' or 'official')."""

    name: ClassVar[str] = "masked_taskwise"

    def step(self, model: Any, batch: Batch, info: StepInfo, objective: Any,
             optimizer: torch.optim.Optimizer) -> torch.Tensor:
        total = batch.labels.new_zeros(())
        for task in model.active_tasks:
            optimizer.zero_grad(set_to_none=True)
            loss = model.task_loss(batch, task, objective)
            loss.backward()
            model.add_extra_gradients(batch, task, objective)
            step_within(model, optimizer, model.update_masks(task))
            total += loss.detach()
        return total


def step_within(model: Any, optimizer: torch.optim.Optimizer,
                update_masks: Sequence[torch.Tensor]) -> None:
    """Adam step; in `exact` mode the masked matrices move only inside `update_masks`."""
    if model.masked_update == "official":
        optimizer.step()
        return
    weights = [layer.weight for layer in model.masked_layers()]
    before = [w.detach().clone() for w in weights]
    optimizer.step()
    with torch.no_grad():
        for weight, old, allowed in zip(weights, before, update_masks, strict=True):
            weight.copy_(torch.where(allowed.bool(), weight, old))


class MetaLearningSteps:
    """MAML's meta-step (Finn et al. 2017, Algorithm 1; choices in mtlrec.models.maml): the batch's
    first half is the support set, the second half the query set; per task, `inner_steps` SGD
    steps on the support loss give fast weights, the query losses at the fast weights plus the L2
    terms at the initialisation are the meta-loss, one optimiser step on it. `order` 1 treats the
    inner gradients as constants (first-order MAML), 2 differentiates through them (plain ops)."""

    name: ClassVar[str] = "maml"

    def step(self, model: Any, batch: Batch, info: StepInfo, objective: Any,
             optimizer: torch.optim.Optimizer) -> torch.Tensor:
        from mtlrec.kernels import portable_ops

        half = batch.labels.shape[0] // 2
        if half == 0:  # a last batch of one row: no query set, no step
            return batch.labels.new_zeros(())
        support = (batch.dense[:half], batch.sparse[:half], batch.labels[:half])
        query = (batch.dense[half:], batch.sparse[half:], batch.labels[half:])
        names = [name for name, _ in model.named_parameters()]
        theta = [p for _, p in model.named_parameters()]
        optimizer.zero_grad(set_to_none=True)
        with portable_ops() if model.order == 2 else nullcontext():
            meta_loss = model.l2_penalty()
            for task in range(model.num_tasks):
                fast = theta
                for _ in range(model.inner_steps):
                    logit = _functional_logit(model, names, fast, support[0], support[1])
                    loss = objective.task_loss(logit, support[2][:, task])
                    grads = torch.autograd.grad(loss, fast, create_graph=model.order == 2,
                                                allow_unused=True)
                    fast = [w if g is None else w - model.inner_lr * g
                            for w, g in zip(fast, grads, strict=True)]
                logit = _functional_logit(model, names, fast, query[0], query[1])
                meta_loss = meta_loss + objective.task_loss(logit, query[2][:, task])
            meta_loss.backward()
        optimizer.step()
        return meta_loss.detach()


def _functional_logit(model: Any, names: list[str], weights: list[torch.Tensor],
                      dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
    """The model's one logit [B] with its parameters replaced by `weights`."""
    return torch.func.functional_call(model, dict(zip(names, weights, strict=True)),
                                      (dense, sparse))[:, 0]


COMBINERS: dict[str, type[GradientCombiner]] = {
    SumOfLosses.name: SumOfLosses,
    MaskedTaskSteps.name: MaskedTaskSteps,
    MetaLearningSteps.name: MetaLearningSteps,
}


def get_combiner(name: str) -> GradientCombiner:
    if name not in COMBINERS:
        raise MtlrecError(f"unknown gradient combiner '{name}' (known: {sorted(COMBINERS)})")
    return COMBINERS[name]()
