"""Gradient pools for the ranking experiments: per-task gradients of the embedding table -> the one
gradient the optimiser steps on (PMTRec's view: any MTL method is a Pool over task gradients).

A pool sees G [T, R, d]: task t's gradient of the R table rows the batch touches (rows it does
not touch have a zero gradient for every task, so leaving them out changes no pool below: the
Gram matrix and every per-coordinate rule are the same; tests/test_pooling.py checks it against
the full table). Task 0 is the main task. Registered by name in POOLS; a method names its pool
(`rank_methods.<m>.pool`), options from `pools.<name>` (and the method's `set`).

- `ew`: equal weights, the plain sum of the task losses' gradients (one backward pass of the
  summed loss: `per_task = False`).
- `pmtrec`: PMTRec (Algorithm 1): per row r, norms n[t, r] = |G[t, r]|, the main task's norm times
  alpha^epoch (task focusing; epoch 1-based), weights softmax_t(n[:, r] / tau) (magnitude
  balancing), the row's gradient sum_t w[t, r] G[t, r]. `mask_absent: true` gives tasks with a
  zero gradient at a row no weight there (the paper's literal rule, the default, gives them
  exp(0) / Z like any other norm).
- torchjd aggregators (torchjd 0.18) on the Jacobian of all touched rows as one matrix [T, R*d]
  (the whole model: MF and LightGCN have no parameter but the table): `graddrop`, `pcgrad`,
  `gradvac` (one parameter group: the table), `cagrad` (c), `aligned_mtl` (scale_mode),
  `nash_mtl` (max_norm, update_weights_every, optim_niter), `rlw` (random loss weighting: softmax
  of a standard normal draw, `draw: epoch` as the PMTRec paper describes RLW, or `draw: step`,
  torchjd's Random). Their scales differ and are kept (each method's own convention): sum of task
  gradients for pcgrad, graddrop and gradvac; a mean for aligned_mtl (min) and cagrad; a
  convex combination for rlw; nash_mtl's norm is capped by max_norm.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import torch

from mtlrec.errors import MtlrecError


class EqualWeights:
    name: ClassVar[str] = "ew"
    per_task: ClassVar[bool] = False

    def pool(self, grads: torch.Tensor, epoch: int) -> torch.Tensor:
        return grads.sum(0)  # [T, R, d] -> [R, d]


class PMTRecPool:
    name: ClassVar[str] = "pmtrec"
    per_task: ClassVar[bool] = True

    def __init__(self, alpha: float, tau: float, mask_absent: bool = False) -> None:
        self.alpha, self.tau, self.mask_absent = alpha, tau, mask_absent

    def weights(self, grads: torch.Tensor, epoch: int) -> torch.Tensor:
        """Per-row task weights [T, R] of G [T, R, d] at a 1-based epoch."""
        norms = grads.norm(dim=-1)  # [T, R]
        focus = torch.ones_like(norms[:, :1])
        focus[0] = self.alpha ** epoch  # task focusing on the main task
        logits = norms * focus / self.tau
        if self.mask_absent:
            logits = logits.masked_fill(norms == 0, float("-inf"))
            logits[:, (norms == 0).all(0)] = 0.0  # a row no task touched: any weights (G = 0)
        return torch.softmax(logits, dim=0)  # magnitude balancing, per row

    def pool(self, grads: torch.Tensor, epoch: int) -> torch.Tensor:
        weights = self.weights(grads, epoch)  # [T, R]
        return (weights.unsqueeze(-1) * grads).sum(0)  # [R, d]


class TorchJDPool:
    """A torchjd aggregator over the flattened Jacobian [T, R*d]."""

    per_task: ClassVar[bool] = True

    def __init__(self, name: str, aggregator: Any) -> None:
        self.name = name
        self.aggregator = aggregator

    def pool(self, grads: torch.Tensor, epoch: int) -> torch.Tensor:
        flat = grads.reshape(grads.shape[0], -1)  # [T, R*d]
        with warnings.catch_warnings():  # Nash-MTL's cvxpy problem warns on every solve that
            warnings.filterwarnings("ignore", message=".*not DPP.*")  # it is not DPP
            return self.aggregator(flat).reshape(grads.shape[1:])


class RandomLossWeights:
    """RLW (Lin et al. 2022): weights softmax(z), z ~ N(0, I), drawn per epoch or per step."""

    name: ClassVar[str] = "rlw"
    per_task: ClassVar[bool] = True

    def __init__(self, draw: str = "epoch") -> None:
        if draw not in ("epoch", "step"):
            raise MtlrecError(f"pools.rlw.draw must be epoch or step, not '{draw}'")
        self.draw = draw
        self._epoch = 0
        self._weights: torch.Tensor | None = None

    def pool(self, grads: torch.Tensor, epoch: int) -> torch.Tensor:
        from torchjd.aggregation import Constant, Random

        if self.draw == "step":
            return TorchJDPool("rlw", Random()).pool(grads, epoch)
        if self._weights is None or epoch != self._epoch:
            self._epoch = epoch
            self._weights = torch.softmax(torch.randn(grads.shape[0], dtype=grads.dtype), 0)
        return TorchJDPool("rlw", Constant(self._weights)).pool(grads, epoch)


def _torchjd(name: str, factory: str) -> Any:
    def build(num_tasks: int, **options: Any) -> TorchJDPool:
        import torchjd.aggregation as agg

        if factory == "NashMTL":
            options = {"n_tasks": num_tasks, **options}
        return TorchJDPool(name, getattr(agg, factory)(**options))

    return build


POOLS: dict[str, Any] = {
    "ew": lambda num_tasks, **o: EqualWeights(**o),
    "pmtrec": lambda num_tasks, **o: PMTRecPool(**o),
    "graddrop": _torchjd("graddrop", "GradDrop"),
    "pcgrad": _torchjd("pcgrad", "PCGrad"),
    "gradvac": _torchjd("gradvac", "GradVac"),
    "cagrad": _torchjd("cagrad", "CAGrad"),
    "aligned_mtl": _torchjd("aligned_mtl", "AlignedMTL"),
    "nash_mtl": _torchjd("nash_mtl", "NashMTL"),
    "rlw": lambda num_tasks, **o: RandomLossWeights(**o),
}


def build_pool(name: str, num_tasks: int, options: dict[str, Any]) -> Any:
    if name not in POOLS:
        raise MtlrecError(f"unknown gradient pool '{name}' (known: {sorted(POOLS)})")
    try:
        return POOLS[name](num_tasks, **options)
    except (TypeError, ValueError) as exc:
        raise MtlrecError(f"pools.{name}: {exc}") from None
