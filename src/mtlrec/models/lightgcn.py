"""LightGCN (He et al. SIGIR 2020) as PMTRec's second encoder (Table 3): K rounds of propagation
over the symmetrically normalised user-item graph of the training split, the output the mean of
the K + 1 layer embeddings.

Every output row depends on the whole table, so the loop takes per-task gradients of the full
table (`sparse_rows = False`); they are still gradients of the base table, as the paper states.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from mtlrec.models.mf import RankingEncoder
from mtlrec.ranking.data import RankingData


def normalised_adjacency(data: RankingData) -> torch.Tensor:
    """D^-1/2 A D^-1/2 of the bipartite training graph, [U + I, U + I] sparse CSR."""
    users, items = data.train_user, data.train_item + data.users
    rows = torch.cat([users, items])
    cols = torch.cat([items, users])
    degree = torch.bincount(rows, minlength=data.rows).float()
    inv_sqrt = degree.pow(-0.5).masked_fill(degree == 0, 0.0)
    values = inv_sqrt[rows] * inv_sqrt[cols]
    adj = torch.sparse_coo_tensor(torch.stack([rows, cols]), values, (data.rows, data.rows))
    return adj.coalesce().to_sparse_csr()


class LightGCN(RankingEncoder):
    sparse_rows: ClassVar[bool] = False

    def __init__(self, data: RankingData, dim: int, layers: int = 3) -> None:
        super().__init__(data, dim)
        self.layers = layers
        self.adjacency = normalised_adjacency(data)

    def forward(self, table: torch.Tensor) -> torch.Tensor:
        """table [U + I, d] -> mean of the layer embeddings [U + I, d]."""
        out, layer = table, table
        for _ in range(self.layers):
            layer = torch.sparse.mm(self.adjacency, layer)
            out = out + layer
        return out / (self.layers + 1)
