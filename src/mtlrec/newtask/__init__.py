"""Learning a new task on a pre-trained multi-task run (stage 2 of MPT-Rec; Tables 3 and 4).

A method is a params entry `new_task.methods.<name>: {kind, backbone, set}`: `kind` is a head
class in HEADS (or `finetune_all`, every parameter of the backbone trains: MAML), `backbone` the
pre-training run it starts from, `set` the head's options. A head reads the frozen part of the
backbone through its `features(backbone, dense, sparse) -> [B, F]` (computed once per split:
`cache_features`) and maps those features to the new task's logit; `NewTaskModel` makes it a
one-task model the ordinary training loop trains. A new head is one class plus one line in
HEADS.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mtlrec.data.batches import TensorSplit
from mtlrec.data.splits import Splits
from mtlrec.models.layers import MultiTaskModel
from mtlrec.newtask.finetune import MMOEHead, PLEHead, SharedBottomHead
from mtlrec.newtask.prompt import PromptHead

HEADS: dict[str, type[nn.Module]] = {
    "prompt": PromptHead,  # MPT-Rec (mptrec backbones)
    "shared_bottom": SharedBottomHead,  # Shared Bottom*
    "mmoe": MMOEHead,  # MMOE*
    "ple": PLEHead,  # PLE*
}
FINETUNE_ALL = "finetune_all"  # every parameter trains from the pre-trained weights (MAML)
KINDS = (*HEADS, FINETUNE_ALL)


class NewTaskModel(MultiTaskModel):
    """A head as a one-task model: forward(dense, sparse) -> [B, 1].

    Without a backbone (the pipeline's way) `dense` holds the cached features [B, F] (sparse is
    empty); with one, the frozen backbone computes them in every forward, under no_grad and in
    eval mode (the reference path the cache is tested against)."""

    def __init__(self, head: nn.Module, backbone: MultiTaskModel | None = None) -> None:
        super().__init__(1, 0.0, head.reg_dnn)
        self.head = head
        self.backbone = backbone
        if backbone is not None:
            for parameter in backbone.parameters():
                parameter.requires_grad_(False)
            backbone.eval()

    def train(self, mode: bool = True) -> NewTaskModel:
        super().train(mode)
        if self.backbone is not None:
            self.backbone.eval()  # frozen: no dropout, whatever the loop asks
        return self

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        if self.backbone is None:
            features = dense
        else:
            with torch.no_grad():
                features = self.head.features(self.backbone, dense, sparse)
        return self.head(features).unsqueeze(1)  # [B, 1]

    def regularised_modules(self) -> list[nn.Module]:
        return self.head.regularised_modules()


@torch.no_grad()
def _features_of(head_cls: type[nn.Module], backbone: MultiTaskModel, split: TensorSplit,
                 chunk: int) -> torch.Tensor:
    parts = [head_cls.features(backbone, split.dense[i:i + chunk], split.sparse[i:i + chunk])
             for i in range(0, len(split), chunk)]
    return torch.cat(parts)  # [N, F]


def cache_features(head_cls: type[nn.Module], backbone: MultiTaskModel, splits: Splits,
                   new_task: int, batch_size: int, eval_batch_size: int) -> Splits:
    """The frozen backbone's features of every row, once: training rows in chunks of the
    training batch, validation and test rows in chunks of the evaluation batch (the rows every
    forward of the uncached path sees together, so an unshuffled run gets the same bits), and
    the label column `new_task` alone."""
    backbone.eval()

    def cached(split: TensorSplit, chunk: int) -> TensorSplit:
        features = _features_of(head_cls, backbone, split, chunk)
        empty = split.sparse.new_zeros((len(split), 0))
        one = split.with_labels(slice(new_task, new_task + 1))
        return TensorSplit(features, empty, one.labels, one.row_id)

    return Splits(cached(splits.train, batch_size), cached(splits.val, eval_batch_size),
                  cached(splits.test, eval_batch_size), splits.schema,
                  [splits.tasks[new_task]])


def method_spec(params: dict[str, Any], method: str) -> dict[str, Any]:
    from mtlrec.errors import MtlrecError

    methods = params["new_task"]["methods"]
    if method not in methods:
        raise MtlrecError(f"unknown new-task method '{method}' (new_task.methods: "
                          f"{sorted(methods)})")
    return {"set": {}, **methods[method]}
