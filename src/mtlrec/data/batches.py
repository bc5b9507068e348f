"""Encoded parquet -> in-memory tensors, the per-seed val/test split, and index batching.

Census fits in memory many times over, so each split is held as a few tensors and a batch is an
index slice: no per-sample Dataset, no collate. (Streaming for larger-than-memory data comes with
Ali-CCP.)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch
from sklearn.model_selection import train_test_split

from mtlrec.data.encode import read_schema
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

    def to(self, device: torch.device) -> TensorSplit:
        return TensorSplit(*(t.to(device) for t in (self.dense, self.sparse, self.labels,
                                                    self.row_id)))


@dataclass
class Splits:
    train: TensorSplit
    val: TensorSplit
    test: TensorSplit
    schema: dict[str, Any]
    tasks: list[str]


def _to_tensors(table_path: Path, schema: dict[str, Any], tasks: list[str]) -> TensorSplit:
    table = pq.read_table(table_path)
    names = set(table.column_names)
    wanted = schema["dense"] + [f["name"] for f in schema["sparse"]] + [f"label_{t}" for t in tasks]
    missing = [c for c in wanted + ["row_id"] if c not in names]
    if missing:
        raise MtlrecError(f"data: {table_path.name} lacks column(s) {missing[:5]}")

    def stack(columns: list[str], dtype: np.dtype) -> np.ndarray:
        if not columns:
            return np.zeros((table.num_rows, 0), dtype=dtype)
        return np.stack([table.column(c).to_numpy().astype(dtype) for c in columns], axis=1)

    return TensorSplit(
        dense=torch.from_numpy(stack(schema["dense"], np.float32)),
        sparse=torch.from_numpy(stack([f["name"] for f in schema["sparse"]], np.int64)),
        labels=torch.from_numpy(stack([f"label_{t}" for t in tasks], np.float32)),
        row_id=torch.from_numpy(table.column("row_id").to_numpy().astype(np.int64)),
    )


def load_splits(encoded_dir: Path, tasks: list[str], seed: int, val_fraction: float) -> Splits:
    """Train = the encoded train file; val/test = the test file split by `seed`, as the official
    code does with `train_test_split(test, test_size=0.5, random_state=seed)` (first part = val)."""
    schema = read_schema(encoded_dir)
    unknown = [t for t in tasks if t not in schema["tasks"]]
    if unknown:
        raise MtlrecError(f"train: unknown task(s) {unknown}; the data has {schema['tasks']}")
    train = _to_tensors(encoded_dir / "train.parquet", schema, tasks)
    held_out = _to_tensors(encoded_dir / "test.parquet", schema, tasks)
    val_idx, test_idx = train_test_split(
        np.arange(len(held_out)), test_size=1.0 - val_fraction, random_state=seed % 2**32
    )
    return Splits(
        train=train,
        val=held_out.take(torch.from_numpy(np.sort(val_idx))),
        test=held_out.take(torch.from_numpy(np.sort(test_idx))),
        schema=schema,
        tasks=list(tasks),
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
