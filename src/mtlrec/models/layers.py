"""Building blocks shared by every model: typed-feature embedding, MLP, gate, tower, L2 penalty.

Conventions follow the official MPT-Rec code (design/mptrec-spec.md section 1.1):
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
import torch.nn.functional as F
from torch import nn

from mtlrec.kernels import linear, linear_stack


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


class _Lookup(torch.autograd.Function):
    """Embedding lookup whose backward is one `index_add_` in row order: the same bits as
    F.embedding's dense backward (which, past 3,000 indices, sorts and runs several times
    slower on the CPU). tests/test_models.py checks the bits."""

    @staticmethod
    def forward(ctx, table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(index)
        ctx.num_rows = table.shape[0]
        return F.embedding(index, table)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (index,) = ctx.saved_tensors
        dim = grad.shape[-1]
        grad_table = grad.new_zeros(ctx.num_rows, dim)
        grad_table.index_add_(0, index.reshape(-1), grad.reshape(-1, dim))
        return grad_table, None


def lookup(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """table [V, E], index [...] -> [..., E]: an embedding lookup (dense gradient). On a GPU,
    torch's own backward (sort-based, deterministic) beats `index_add_`, whose deterministic
    variant (the one a GPU run asks for) is slow there."""
    if table.is_cuda:
        return F.embedding(index, table)
    return _Lookup.apply(table, index)


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


class _Mix(torch.autograd.Function):
    """sum_n weights[b, n] * choices_n[b, :], with the numbers of einsum("bn,bnd->bd") over the
    stacked choices (a batched [1, n] @ [n, d] matmul) at a fraction of its cost on the CPU, where
    that bmm of tiny matrices is slow, and without stacking the choices in the forward. The
    forward product and the gradients of the choices have no sum of more than n terms taken in a
    different order, so elementwise ops give the bmm's bits; the gradient of `weights` (a length-d
    dot per entry) keeps the bmm. tests/test_models.py checks the bits."""

    @staticmethod
    def forward(ctx, weights: torch.Tensor, *choices: torch.Tensor) -> torch.Tensor:
        # weights [B, n], choices n x [B, d] -> [B, d]
        ctx.save_for_backward(weights, *choices)
        out = weights[:, :1] * choices[0]
        for i in range(1, len(choices)):
            out = out + weights[:, i:i + 1] * choices[i]  # the order of a sum over dim 1
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        weights, *choices = ctx.saved_tensors
        grad_weights = None
        if ctx.needs_input_grad[0]:
            stacked = torch.stack(choices, dim=1)  # [B, n, d]
            grad_weights = torch.bmm(grad.unsqueeze(1), stacked.transpose(1, 2)).squeeze(1)
        grad_choices = [weights[:, i:i + 1] * grad if ctx.needs_input_grad[1 + i] else None
                        for i in range(len(choices))]  # n x [B, d]
        return grad_weights, *grad_choices


def mix(weights: torch.Tensor, choices: Sequence[torch.Tensor]) -> torch.Tensor:
    """weights [B, n], choices n x [B, d] -> [B, d]: the gate's weighted sum of its choices."""
    return _Mix.apply(weights, *choices)


def linear_weights(modules: Iterable[nn.Module]) -> list[nn.Parameter]:
    """The weights (not biases) of every Linear layer inside `modules`, in module order."""
    return [layer.weight for module in modules for layer in module.modules()
            if isinstance(layer, nn.Linear)]


def squares_l2(weights: Iterable[torch.Tensor]) -> torch.Tensor:
    """sum ||W||^2 / 2 over `weights`."""
    return torch.stack([w.pow(2).sum() for w in weights]).sum() / 2


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


def multitask_bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum over tasks of the batch-mean BCE (logits, labels [B, K])."""
    per_task = F.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(0)
    return per_task.sum()


class MultiTaskModel(nn.Module):
    """Base class of every model: forward(dense, sparse) returns logits [B, n_tasks].

    Subclasses build their embeddings (any FeatureEmbedding inside the model gets reg_emb) and list
    in `regularised_modules()` the experts and towers whose Linear weights get reg_dnn. Models with
    a training procedure of their own (extra losses, per-row state, work between epochs, steps of
    their own) override the hooks `prepare`, `training_loss`, `train_step` and `on_epoch_end`; the
    training loop only calls these.
    """

    min_tasks = 1
    needs_masks = False  # True: trains on per-task weight masks (an artifact of `mtlrec masks`)

    def __init__(self, num_tasks: int, reg_emb: float, reg_dnn: float) -> None:
        super().__init__()
        self.num_tasks = num_tasks
        self.reg_emb = reg_emb
        self.reg_dnn = reg_dnn

    def regularised_modules(self) -> list[nn.Module]:
        raise NotImplementedError

    def prepare(self, num_train_rows: int) -> None:
        """Called once before training (and before a resumed state is loaded)."""

    def training_loss(self, batch: Batch, info: StepInfo) -> torch.Tensor:
        """Sum of per-task BCE plus the L2 terms (the paper's loss for every baseline)."""
        return multitask_bce(self(batch.dense, batch.sparse), batch.labels) + self.l2_penalty()

    def train_step(self, batch: Batch, info: StepInfo,
                   optimizer: torch.optim.Optimizer) -> torch.Tensor:
        """One optimisation step on `batch`; returns the detached loss. Models that step per task
        or edit gradients before the step (Sparse Sharing, CSRec) override this."""
        loss = self.training_loss(batch, info)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    def on_epoch_end(self, epoch: int, train: Any, eval_batch_size: int) -> dict[str, Any]:
        """Called after each training epoch with the training split; returns extra curve fields."""
        return {}

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
        return _L2Penalty.apply(self.reg_emb, self.reg_dnn, len(emb), *emb, *dnn)


def l2_value(reg_emb: float, reg_dnn: float, tables: Sequence[torch.Tensor],
             weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """reg_emb * sum ||T||^2 / 2 + reg_dnn * sum ||W||^2 / 2, term by term in a fixed order."""
    terms = []
    if reg_emb:
        terms.append(reg_emb * torch.stack([t.pow(2).sum() / 2 for t in tables]).sum())
    if reg_dnn:
        terms.append(reg_dnn * squares_l2(weights))
    return torch.stack(terms).sum()


class _L2Penalty(torch.autograd.Function):
    """The L2 term as one autograd node: forward = `l2_value` (the same ops), backward = the
    gradient the chain of those ops gives, g * reg * T per tensor (the halving and the doubling
    are exact), as one node instead of ~4 per tensor. tests/test_models.py checks the bits of
    value and gradients against the op-by-op graph."""

    @staticmethod
    def forward(ctx, reg_emb: float, reg_dnn: float, n_tables: int, *tensors: torch.Tensor
                ) -> torch.Tensor:
        ctx.save_for_backward(*tensors)
        ctx.regs, ctx.n_tables = (reg_emb, reg_dnn), n_tables
        return l2_value(reg_emb, reg_dnn, tensors[:n_tables], tensors[n_tables:])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        tensors = ctx.saved_tensors
        reg_emb, reg_dnn = ctx.regs
        scales = (grad * reg_emb, grad * reg_dnn)  # [] each, as MulBackward computes them
        grads = [t * scales[0 if i < ctx.n_tables else 1] for i, t in enumerate(tensors)]
        return None, None, None, *grads
