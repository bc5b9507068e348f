"""Matrix factorisation as PMTRec's encoder (Yang et al. 2024, section 4.1.4): the embedding table
itself, d = 32, Xavier initialisation.

The table holds users (rows 0..U-1) then items (U..U+I-1). Each part is initialised as its own
[U, d] / [I, d] Xavier-uniform matrix (what two embedding tables would get). The encoder is the
identity on the rows, so a batch's losses depend only on the rows it touches: `sparse_rows`
tells the training loop to take gradients of those rows alone (cost proportional to the batch,
not to the table).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from mtlrec.ranking.data import RankingData


class RankingEncoder(nn.Module):
    """An embedding table [U + I, d] and a map from (a slice of) it to output embeddings."""

    sparse_rows: ClassVar[bool] = True

    def __init__(self, data: RankingData, dim: int) -> None:
        super().__init__()
        self.users, self.items = data.users, data.items
        weight = torch.empty(data.rows, dim)
        nn.init.xavier_uniform_(weight[:data.users])
        nn.init.xavier_uniform_(weight[data.users:])
        self.weight = nn.Parameter(weight)

    def forward(self, table: torch.Tensor) -> torch.Tensor:
        """table [R, d] (base rows) -> output embeddings of the same rows [R, d]."""
        return table

    def output_table(self) -> torch.Tensor:
        """Output embeddings of every row [U + I, d] (evaluation)."""
        return self.forward(self.weight)


class MF(RankingEncoder):
    pass
