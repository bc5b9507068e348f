"""Encoded parquet -> in-memory tensors, and index batching (the split protocol is
mtlrec.data.splits).

Census fits in memory many times over, so each split is held as a few tensors and a batch is an
index slice: no per-sample Dataset, no collate. A split larger than memory is a
mtlrec.data.stream.StreamedSplit instead. Both are a `BatchSource`: the training loop, the
evaluation and the epoch hooks only call `len()`, `batches()` and `device`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow.parquet as pq
import torch

from mtlrec.errors import MtlrecError


@dataclass
class TensorSplit:
    dense: torch.Tensor  # [N, n_dense] float32
    sparse: torch.Tensor  # [N, n_sparse] int64
    labels: torch.Tensor  # [N, n_tasks] float32
    row_id: torch.Tensor  # [N] int64, the row's index in its encoded file

    def __len__(self) -> int:
        return self.labels.shape[0]

    def take(self, index: torch.Tensor | slice) -> TensorSplit:
        return TensorSplit(
            self.dense[index], self.sparse[index], self.labels[index], self.row_id[index]
        )

    def with_labels(self, columns: slice) -> TensorSplit:
        """The same rows with only the label columns `columns` (e.g. one task's)."""
        return TensorSplit(self.dense, self.sparse, self.labels[:, columns], self.row_id)

    def to(self, device: torch.device) -> TensorSplit:
        return TensorSplit(*(t.to(device) for t in (self.dense, self.sparse, self.labels,
                                                    self.row_id)))

    @property
    def device(self) -> torch.device:
        return self.labels.device

    def batches(self, batch_size: int, shuffle: bool = False,
                generator: torch.Generator | None = None) -> Iterator[TensorSplit]:
        """The rows in batches of `batch_size` (row order, or a seeded permutation)."""
        for idx in batch_indices(len(self), batch_size, shuffle, generator):
            yield self.take(idx)


class BatchSource(Protocol):
    """What training and evaluation read: a TensorSplit, or a StreamedSplit from disk."""

    def __len__(self) -> int: ...

    @property
    def device(self) -> torch.device: ...

    def batches(self, batch_size: int, shuffle: bool = False,
                generator: torch.Generator | None = None) -> Iterator[TensorSplit]: ...


def read_split(table_path: Path, schema: dict[str, Any], label_paths: list[Path]
               ) -> TensorSplit:
    """The input fields of `schema` from an encoded file, and one label column per task from
    its labels file (same rows, same order)."""
    table = pq.read_table(table_path)
    names = set(table.column_names)
    wanted = schema["dense"] + [f["name"] for f in schema["sparse"]]
    missing = [c for c in wanted + ["row_id"] if c not in names]
    if missing:
        raise MtlrecError(f"data: {table_path.name} lacks column(s) {missing[:5]}")
    labels = []
    for path in label_paths:
        if not path.is_file():
            raise MtlrecError(f"data: {path} not found; run the labels stage of that task first")
        column = pq.read_table(path).column("label").to_numpy()
        if len(column) != table.num_rows:
            raise MtlrecError(f"data: {path} has {len(column)} rows, {table_path} "
                              f"{table.num_rows}: made from other raw rows; rerun its stages")
        labels.append(column.astype(np.float32))

    def stack(columns: list[str], dtype: np.dtype) -> np.ndarray:
        if not columns:
            return np.zeros((table.num_rows, 0), dtype=dtype)
        return np.stack([table.column(c).to_numpy().astype(dtype) for c in columns], axis=1)

    return TensorSplit(
        dense=torch.from_numpy(stack(schema["dense"], np.float32)),
        sparse=torch.from_numpy(stack([f["name"] for f in schema["sparse"]], np.int64)),
        labels=torch.from_numpy(np.stack(labels, axis=1) if labels
                                else np.zeros((table.num_rows, 0), np.float32)),
        row_id=torch.from_numpy(table.column("row_id").to_numpy().astype(np.int64)),
    )


def batch_indices(
    n_rows: int, batch_size: int, shuffle: bool, generator: torch.Generator | None = None
) -> Iterator[torch.Tensor | slice]:
    """Yield index batches: contiguous slices in row order, or a seeded permutation."""
    if shuffle:
        order = torch.randperm(n_rows, generator=generator)
        for start in range(0, n_rows, batch_size):
            yield order[start : start + batch_size]
    else:
        for start in range(0, n_rows, batch_size):
            yield slice(start, min(start + batch_size, n_rows))
