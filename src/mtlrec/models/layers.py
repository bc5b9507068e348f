"""Building blocks shared by every model: typed-feature embedding, MLP, gate, tower, L2 penalty.

Conventions follow the official MPT-Rec code (docs/spec/mptrec.md section 1.1):
- an MLP is Linear layers with ReLU after every one (the last included, "relu out"), so an expert's
  output is non-negative; a tower is an MLP whose last Linear maps to 1 logit (the sigmoid is folded
  into the loss as BCE-with-logits, which is the same maths, numerically safer);
- the embedding output is [dense features, sparse embeddings] concatenated, dense first;
- L2 = reg_emb * sum ||table||^2 / 2 over whole embedding tables + reg_dnn * sum ||W||^2 / 2 over
  Linear weights (not biases) of experts and towers; gates are not regularised.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mtlrec.kernels import l2_penalty, linear, linear_stack, lookup, mix


@dataclass(frozen=True)
class FeatureSpec:
    """The input fields, read from the encoded data's schema.json (never hard-coded)."""

    dense: tuple[str, ...]
    sparse: tuple[tuple[str, int], ...]  # (name, vocab_size)

    @classmethod
    def from_schema(cls, schema: dict[str, Any]) -> FeatureSpec:
        return cls(
            dense=tuple(schema["dense"]),
            sparse=tuple((f["name"], int(f["vocab_size"])) for f in schema["sparse"]),
        )


class FeatureEmbedding(nn.Module):
    """Dense columns as they are, plus one embedding per sparse field, concatenated.

    All sparse fields live in one table with per-field offsets: one lookup instead of one per field,
    and the same maths as separate tables (each field's rows are disjoint; N(0, 1) init as
    nn.Embedding's default, per field).
    """

    def __init__(self, features: FeatureSpec, embed_dim: int) -> None:
        super().__init__()
        sizes = [size for _, size in features.sparse]
        self.embed_dim = embed_dim
        self.num_dense = len(features.dense)
        self.table = nn.Embedding(sum(sizes), embed_dim)
        offsets = torch.tensor([0] + sizes[:-1]).cumsum(0)
        self.register_buffer("offsets", offsets, persistent=False)
        self.output_dim = self.num_dense + len(sizes) * embed_dim

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        # dense [B, n_dense], sparse [B, n_sparse] -> [B, n_dense + n_sparse * E]
        embedded = lookup(self.table.weight, sparse + self.offsets)  # [B, n_sparse, E]
        return torch.cat([dense, embedded.flatten(1)], dim=1)


class Linear(nn.Linear):
    """nn.Linear (same parameters, initialisation and state_dict keys) whose products run through
    `mtlrec.kernels.linear` (oneDNN on the CPU by default)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


class MLP(nn.Sequential):
    """Linear layers of sizes `hidden`, each followed by ReLU (and dropout when given).

    The modules are the usual [Linear, ReLU, (Dropout)] sequence; the forward runs each
    Linear + ReLU pair as one fused `linear(..., relu=True)` (the same maths)."""

    def __init__(self, in_dim: int, hidden: Sequence[int], dropout: Sequence[float] = ()) -> None:
        layers: list[nn.Module] = []
        for i, width in enumerate(hidden):
            layers += [Linear(in_dim, width), nn.ReLU()]
            if dropout and dropout[i] > 0:
                layers.append(nn.Dropout(dropout[i]))
            in_dim = width
        super().__init__(*layers)
        self.output_dim = in_dim
        self.has_dropout = any(isinstance(m, nn.Dropout) for m in layers)

    def dense_layers(self) -> list[tuple[torch.Tensor, torch.Tensor | None, bool]]:
        """(weight, bias, relu) of every Linear, in order (for `linear_stack`)."""
        return [(m.weight, m.bias, True) for m in self if isinstance(m, nn.Linear)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.has_dropout:  # the whole stack as one node (the same bits)
            return linear_stack(x, self.dense_layers())
        for module in self:
            if isinstance(module, nn.Linear):  # every Linear is followed by its ReLU
                x = linear(x, module.weight, module.bias, relu=True)
            elif not isinstance(module, nn.ReLU):
                x = module(x)  # dropout
        return x


class Tower(nn.Module):
    """MLP(hidden) then Linear(-> 1): one task's logit."""

    def __init__(self, in_dim: int, hidden: Sequence[int]) -> None:
        super().__init__()
        self.mlp = MLP(in_dim, hidden)
        self.out = Linear(self.mlp.output_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mlp.has_dropout:
            return self.out(self.mlp(x)).squeeze(-1)  # [B]
        layers = [*self.mlp.dense_layers(), (self.out.weight, self.out.bias, False)]
        return linear_stack(x, layers).squeeze(-1)  # [B]


class Gate(nn.Module):
    """softmax(W x) over `num_inputs` choices; no bias by default (official code)."""

    def __init__(self, in_dim: int, num_inputs: int, bias: bool = False) -> None:
        super().__init__()
        self.linear = Linear(in_dim, num_inputs, bias=bias)

    def forward(self, x: torch.Tensor, choices: Sequence[torch.Tensor]) -> torch.Tensor:
        # x [B, in], choices n x [B, d] -> [B, d]
        weights = torch.softmax(self.linear(x), dim=-1)  # [B, n]
        return mix(weights, choices)


def linear_weights(modules: Iterable[nn.Module]) -> list[nn.Parameter]:
    """The weights (not biases) of every Linear layer inside `modules`, in module order."""
    return [layer.weight for module in modules for layer in module.modules()
            if isinstance(layer, nn.Linear)]


@dataclass
class Batch:
    dense: torch.Tensor  # [B, n_dense]
    sparse: torch.Tensor  # [B, n_sparse]
    labels: torch.Tensor  # [B, K]
    row_id: torch.Tensor  # [B], the rows' indices in the training file (e.g. for EM task labels)


@dataclass(frozen=True)
class StepInfo:
    epoch: int  # 1-based
    step: int  # 0-based index of the batch within the epoch
    steps_per_epoch: int
    epochs: int
    batch_size: int  # the configured size (the last batch of an epoch may be smaller)


@dataclass
class LossTerms:
    """The losses of one training step on one batch.

    per_task: [K], the objective's loss of each task on the model's prediction head.
    total: [], what a step on the summed loss minimises: the per-task losses, the model's own
    auxiliary terms (e.g. MPT-Rec's share and adversarial losses) and the L2 terms, added in the
    model's order (floating-point addition order is part of the result's bits).
    """

    per_task: torch.Tensor
    total: torch.Tensor


class MultiTaskModel(nn.Module):
    """Base class of every model: forward(dense, sparse) returns logits [B, n_tasks].

    Subclasses build their embeddings (any FeatureEmbedding inside the model gets reg_emb) and list
    in `regularised_modules()` the experts and towers whose Linear weights get reg_dnn. The model
    never steps an optimiser: `training_losses` turns a batch into `LossTerms` through an
    objective (mtlrec.train.objectives), a gradient combiner (mtlrec.train.combiners, named by
    `combiner`) turns those into an update, and work between epochs (MPT-Rec's EM task
    clustering) is an epoch hook the model names in `epoch_hooks()` (mtlrec.train.hooks).
    """

    min_tasks = 1
    needs_masks = False  # True: trains on per-task weight masks (an artifact of `mtlrec masks`)
    combiner = "sum"  # the gradient combiner this model's method prescribes (COMBINERS key)

    def __init__(self, num_tasks: int, reg_emb: float, reg_dnn: float) -> None:
        super().__init__()
        self.num_tasks = num_tasks
        self.reg_emb = reg_emb
        self.reg_dnn = reg_dnn

    def regularised_modules(self) -> list[nn.Module]:
        raise NotImplementedError

    def named_representations(self, dense: torch.Tensor, sparse: torch.Tensor
                              ) -> dict[str, torch.Tensor]:
        """The model's task-sharing and task-specific representations, for analyses such as the
        t-SNE (Fig. 6): {"shared": [B, d], "specific": [B, K, d]}. Models without such a split
        raise NotImplementedError."""
        raise NotImplementedError(f"{type(self).__name__} has no shared/specific representations")

    def epoch_hooks(self) -> list[Any]:
        """Work the training loop runs before training and after every epoch (EpochHook)."""
        return []

    def training_losses(self, batch: Batch, info: StepInfo, objective: Any) -> LossTerms:
        """The objective's per-task losses plus the L2 terms (the paper's loss for every
        baseline). Models with auxiliary losses override this."""
        per_task = objective.task_losses(self(batch.dense, batch.sparse), batch.labels)  # [K]
        return LossTerms(per_task, per_task.sum() + self.l2_penalty())

    def _l2_parameters(self) -> tuple[list[FeatureEmbedding], list[nn.Parameter]]:
        """The embeddings and Linear weights of the L2 terms, found once (not every step)."""
        if "_l2_cache" not in self.__dict__:
            tables = [m for m in self.modules() if isinstance(m, FeatureEmbedding)]
            weights = linear_weights(self.regularised_modules()) if self.reg_dnn else []
            self.__dict__["_l2_cache"] = (tables, weights)
        return self.__dict__["_l2_cache"]

    def l2_penalty(self) -> torch.Tensor:
        """reg_emb * (whole embedding tables) + reg_dnn * (expert and tower Linear weights)."""
        tables, weights = self._l2_parameters()
        if not (self.reg_emb or self.reg_dnn):
            return next(self.parameters()).new_zeros(())
        emb = [m.table.weight for m in tables] if self.reg_emb else []
        dnn = weights if self.reg_dnn else []
        return l2_penalty(self.reg_emb, self.reg_dnn, emb, dnn)
