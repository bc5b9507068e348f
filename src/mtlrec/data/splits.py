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

from mtlrec.data.batches import BatchSource, read_split
from mtlrec.data.encode import read_schema
from mtlrec.errors import MtlrecError


@dataclass
class Splits:
    train: BatchSource  # a TensorSplit in memory, or a StreamedSplit on disk
    val: BatchSource
    test: BatchSource
    schema: dict[str, Any]
    tasks: list[str]


def input_schema(schema: dict[str, Any], drop_fields: list[str]) -> dict[str, Any]:
    """The encoded schema without the fields in `drop_fields` (a task's label column is no input
    of a run that has the task; names that are no input field are ignored)."""
    drop = set(drop_fields)
    reduced = dict(schema)
    reduced["dense"] = [f for f in schema["dense"] if f not in drop]
    reduced["sparse"] = [f for f in schema["sparse"] if f["name"] not in drop]
    reduced["dropped_inputs"] = [f for f in [*schema["dense"], *(s["name"] for s in
                                                                 schema["sparse"])] if f in drop]
    return reduced


def default_labels_dir(encoded_dir: Path) -> Path:
    """data/encoded/<dataset> -> data/labels/<dataset> (the pipeline's layout)."""
    return encoded_dir.parent.parent / "labels" / encoded_dir.name


def label_files(labels_dir: Path, tasks: list[str]) -> list[Path]:
    """The files that identify the tasks' labels (a resumed run's fingerprint): the two label
    files, or for a streamed dataset (folders of parts) its label.json (rows, positive rates;
    hashing every part of an 84M-row dataset at each start would cost a pass over it)."""
    files = []
    for task in tasks:
        if (labels_dir / task / "train").is_dir():
            files.append(labels_dir / task / "label.json")
        else:
            files += [labels_dir / task / f"{part}.parquet" for part in ("train", "test")]
    return files


def load_splits(encoded_dir: Path, tasks: list[str], seed: int, split: dict[str, Any],
                drop_fields: list[str] = (), labels_dir: Path | None = None) -> Splits:
    """The `holdout_halves` splits of `seed` for `tasks` (params `datasets.<name>.split`), labels
    from labels_dir/<task>/ (default: the pipeline's data/labels/<dataset>), with the fields
    `drop_fields` removed from the inputs."""
    labels_dir = labels_dir or default_labels_dir(encoded_dir)
    schema = input_schema(read_schema(encoded_dir), list(drop_fields))
    if schema.get("layout") == "parts":
        return _streamed_splits(encoded_dir, labels_dir, schema, list(tasks))
    files = {part: encoded_dir / f"{part}.parquet" for part in ("train", "test")}
    train, held_out = (read_split(files[part], schema,
                                  [labels_dir / task / f"{part}.parquet" for task in tasks])
                       for part in ("train", "test"))
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


def _streamed_splits(encoded_dir: Path, labels_dir: Path, schema: dict[str, Any],
                     tasks: list[str]) -> Splits:
    """The fixed splits of a dataset encoded in parts (mtlrec.data.stream), read from disk."""
    from mtlrec.data.stream import SPLITS, StreamedSplit

    parts = {split: StreamedSplit(encoded_dir / split, schema,
                                  [labels_dir / task / split for task in tasks])
             for split in SPLITS}
    return Splits(parts["train"], parts["val"], parts["test"], schema, tasks)
