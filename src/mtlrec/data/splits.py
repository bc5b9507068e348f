"""Split protocols: encoded files -> the train / validation / test splits of one run.

`holdout_halves` (the only protocol so far, params `datasets.<name>.split`): the encoded train file
trains; the held-out (test) file is split by the run's seed into validation and test, as the
official MPT-Rec code does with `train_test_split(test, test_size=1 - val_fraction,
random_state=seed)` (first part = validation). Every dataset declaration (the Census files, a
user's table) ends in these two encoded files, so every dataset gets this protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from mtlrec.data.batches import TensorSplit, read_split
from mtlrec.data.encode import read_schema
from mtlrec.errors import MtlrecError


@dataclass
class Splits:
    train: TensorSplit
    val: TensorSplit
    test: TensorSplit
    schema: dict[str, Any]
    tasks: list[str]


def load_splits(encoded_dir: Path, tasks: list[str], seed: int, split: dict[str, Any]) -> Splits:
    """The `holdout_halves` splits of `seed` for `tasks` (params `datasets.<name>.split`)."""
    schema = read_schema(encoded_dir)
    unknown = [t for t in tasks if t not in schema["tasks"]]
    if unknown:
        raise MtlrecError(f"train: unknown task(s) {unknown}; the data has {schema['tasks']}")
    train = read_split(encoded_dir / "train.parquet", schema, tasks)
    held_out = read_split(encoded_dir / "test.parquet", schema, tasks)
    if len(train) == 0 or len(held_out) < 2:
        raise MtlrecError(f"data: {encoded_dir} has an empty split (train {len(train)} rows, "
                          f"held-out {len(held_out)})")
    val_idx, test_idx = train_test_split(
        np.arange(len(held_out)), test_size=1.0 - split["val_fraction"], random_state=seed % 2**32
    )
    return Splits(
        train=train,
        val=held_out.take(torch.from_numpy(np.sort(val_idx))),
        test=held_out.take(torch.from_numpy(np.sort(test_idx))),
        schema=schema,
        tasks=list(tasks),
    )
