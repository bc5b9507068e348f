"""#Params and #FLOPs by the MPT-Rec paper's convention (docs/spec/mptrec.md section 5.2).

- #Params: the parameters that train (numel), and, as the denominator of the percentages, every
  parameter of the same architecture trained jointly on all tasks (embeddings included).
- #FLOPs: one multiply-add = one FLOP (fvcore's convention, which the paper used), of the forward
  pass of one training batch: what a new-task step runs (the head on the cached frozen features)
  against the forward of the jointly trained model's training step. torch.utils.flop_counter
  counts 2 FLOPs per multiply-add (and, like fvcore, matrix products only; fvcore also counts
  LayerNorm, a few hundred FLOPs per row here): the count is halved. The products run on torch's
  plain kernels while counting (the oneDNN path is invisible to the counter).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from mtlrec.kernels import portable_ops


def count_params(modules: Iterable[nn.Module]) -> int:
    seen: set[int] = set()
    total = 0
    for module in modules:
        for parameter in module.parameters():
            if id(parameter) not in seen:
                seen.add(id(parameter))
                total += parameter.numel()
    return total


@torch.no_grad()
def multiply_adds(run: Callable[[], object], model: nn.Module | None = None) -> int:
    """Multiply-adds of the matrix products `run()` makes (torch's count / 2); given `model`,
    without those made inside its frozen submodules (the paper counts trainable modules only:
    PLE*'s frozen later-level shared experts run in every step but are not counted)."""
    counter = FlopCounterMode(display=False)
    with portable_ops(), counter:
        run()
    total = counter.get_total_flops()
    if model is not None:
        by_module = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
        total -= _frozen_flops(model, type(model).__name__, by_module)
    return total // 2


def _frozen_flops(module: nn.Module, name: str, by_module: dict[str, int]) -> int:
    """FLOPs counted inside the outermost frozen submodules of `module` (a container that is
    never called itself, such as a ModuleList, is looked into)."""
    total = 0
    for child_name, child in module.named_children():
        full = f"{name}.{child_name}"
        params = list(child.parameters())
        if params and not any(p.requires_grad for p in params) and full in by_module:
            total += by_module[full]
        elif params:
            total += _frozen_flops(child, full, by_module)
    return total
