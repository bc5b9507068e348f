"""Dataset declarations: where a dataset's raw files come from and how they become typed columns.

A dataset is a params section `datasets.<name>` naming a reader (READERS) plus that reader's keys,
its encoding options (`fit_encoders_on`, row limits) and its split protocol (`split`, see
mtlrec.data.splits). A reader does two things:
- `fetch(name, section, out_dir)`: place the raw files in data/raw/<name>, verified by sha256;
- `read(name, section, raw_dir) -> RawTables`: the train and held-out files as columns, their
  sparse and dense field names, and a function that gives one task's 0/1 labels per file.
The encode stage writes the features (data/encoded/<name>), a labels stage per task writes that
task's labels (data/labels/<name>/<task>), so declaring a new task adds a stage and changes no
existing file. Everything below the reader (encoding, batching, splitting, models, reports)
reads those files and never names a dataset.

Readers: `census` (the UCI Census-Income KDD files, mtlrec.data.census), `table` (a user's own
CSV or parquet file(s), mtlrec.data.table) and `stream` (delimited files of any size, encoded in
parts with bounded memory and read back batch by batch, mtlrec.data.stream: Ali-CCP, ByteRec). A
new dataset with its own raw format is one module with these two functions and one line in
READERS; a reader that encodes out of core gives `encode` and `labels` instead of `read`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mtlrec.config import RANKING_READERS
from mtlrec.errors import MtlrecError


@dataclass
class RawTables:
    frames: dict[str, pd.DataFrame]  # split (train, test) -> the raw columns
    label_of: Callable[[str], dict[str, np.ndarray]]  # task -> split -> 0/1 int8 labels
    tasks: list[str]  # the tasks the dataset declares
    sparse: list[str]  # categorical fields (label-encoded, embedded)
    dense: list[str]  # numeric fields (min-max scaled)


@dataclass(frozen=True)
class Reader:
    fetch: Callable[[str, dict[str, Any], Path], list[Path]]
    read: Callable[[str, dict[str, Any], Path], RawTables] | None
    # out-of-core readers: (name, section, raw_dir, out_dir) -> schema, and
    # (name, section, task, raw_dir, out_dir) -> label info
    encode: Callable[..., dict[str, Any]] | None = None
    labels: Callable[..., dict[str, Any]] | None = None


def _census_fetch(name: str, section: dict[str, Any], out_dir: Path) -> list[Path]:
    from mtlrec.data.sources import fetch

    return fetch("census", out_dir, section["mirror"])


def _census_read(name: str, section: dict[str, Any], raw_dir: Path) -> RawTables:
    from mtlrec.data import census
    from mtlrec.data.sources import verify_placed
    from mtlrec.data.tasks import task_label

    verify_placed("census", raw_dir)
    limits = {"train": section["max_train_rows"], "test": section["max_test_rows"]}
    frames = {}
    for split, file_name in census.RAW_FILES.items():
        path = raw_dir / file_name
        if not path.is_file():
            raise MtlrecError(f"census: raw file {path} not found; run the fetch stage first")
        frames[split] = census.read_raw(path, limits[split])
    tasks = section["tasks"]

    def label_of(task: str) -> dict[str, np.ndarray]:
        return {split: task_label(frame, task, tasks[task], f"census: {census.RAW_FILES[split]}")
                for split, frame in frames.items()}

    return RawTables(frames, label_of, list(tasks), list(census.SPARSE), list(census.DENSE))


def _table_fetch(name: str, section: dict[str, Any], out_dir: Path) -> list[Path]:
    from mtlrec.data.table import fetch_table

    return fetch_table(name, section, out_dir)


def _table_read(name: str, section: dict[str, Any], raw_dir: Path) -> RawTables:
    from mtlrec.data.table import read_table

    return read_table(name, section, raw_dir)


def _source_fetch(name: str, section: dict[str, Any], out_dir: Path) -> list[Path]:
    from mtlrec.data.sources import fetch

    return fetch(section["source"], out_dir, section["mirror"])


def _user_files_fetch(name: str, section: dict[str, Any], out_dir: Path) -> list[Path]:
    from mtlrec.ranking.readers import fetch_user_files

    return fetch_user_files(name, section, out_dir)


def _ranking_read(kind: str) -> Callable[[str, dict[str, Any], Path], Any]:
    def read(name: str, section: dict[str, Any], raw_dir: Path) -> Any:
        from mtlrec.ranking import readers

        return {"tang": readers.read_tang, "recbole": readers.read_recbole,
                "interactions": readers.read_user_files}[kind](name, section, raw_dir)

    return read


def _stream_fetch(name: str, section: dict[str, Any], out_dir: Path) -> list[Path]:
    from mtlrec.data.table import fetch_files

    return fetch_files(name, section, out_dir)


def _stream_encode(name: str, section: dict[str, Any], raw_dir: Path, out_dir: Path
                   ) -> dict[str, Any]:
    from mtlrec.data.stream import encode_stream

    return encode_stream(name, section, raw_dir, out_dir)


def _stream_labels(name: str, section: dict[str, Any], task: str, raw_dir: Path, out_dir: Path
                   ) -> dict[str, Any]:
    from mtlrec.data.stream import write_stream_labels

    return write_stream_labels(name, section, task, raw_dir, out_dir)


READERS: dict[str, Reader] = {
    "census": Reader(_census_fetch, _census_read),
    "table": Reader(_table_fetch, _table_read),
    "stream": Reader(_stream_fetch, None, _stream_encode, _stream_labels),
    # interaction datasets (PMTRec): read -> InteractionTables, encoded by mtlrec.ranking.data
    "tang": Reader(_source_fetch, _ranking_read("tang")),
    "recbole": Reader(_source_fetch, _ranking_read("recbole")),
    "interactions": Reader(_user_files_fetch, _ranking_read("interactions")),
}


def dataset_section(params: dict[str, Any], name: str) -> dict[str, Any]:
    datasets = params["datasets"]
    if name not in datasets:
        raise MtlrecError(f"unknown dataset '{name}' (declared in params: {sorted(datasets)})")
    return datasets[name]


def fetch_dataset(params: dict[str, Any], name: str, out_dir: Path) -> list[Path]:
    """Place the verified raw files of dataset `name` in `out_dir`."""
    section = dataset_section(params, name)
    out_dir.mkdir(parents=True, exist_ok=True)
    return READERS[section["reader"]].fetch(name, section, out_dir)


def encode_dataset(params: dict[str, Any], name: str, raw_dir: Path, out_dir: Path
                   ) -> dict[str, Any]:
    """Raw files of dataset `name` -> out_dir/{train,test}.parquet + schema.json."""
    from mtlrec.data.encode import encode_frames, write_encoded

    section = dataset_section(params, name)
    reader = READERS[section["reader"]]
    if reader.encode is not None:
        return reader.encode(name, section, raw_dir, out_dir)
    raw = reader.read(name, section, raw_dir)
    if section["reader"] in RANKING_READERS:
        from mtlrec.ranking.data import encode_interactions

        return encode_interactions(name, section, raw, out_dir)
    for split, frame in raw.frames.items():
        if len(frame) == 0:
            raise MtlrecError(f"data: dataset '{name}': the {split} split is empty")
    tables, schema = encode_frames(raw.frames, raw.sparse, raw.dense, section["fit_encoders_on"])
    schema["dataset"] = name
    write_encoded(out_dir, tables, schema)
    return schema


def write_task_labels(params: dict[str, Any], name: str, task: str, raw_dir: Path,
                      out_dir: Path) -> dict[str, Any]:
    """One task's labels of dataset `name` -> out_dir/{train,test}.parquet (column `label`, in the
    encoded files' row order) + label.json (rule, rows, positive rate). A task the dataset does
    not declare, a label column that does not exist or a rule with one class on the training
    file is one line; nothing is written then."""
    from mtlrec.data.encode import write_labels
    from mtlrec.data.tasks import check_two_classes

    section = dataset_section(params, name)
    reader = READERS[section["reader"]]
    if reader.labels is not None:
        if task not in section["tasks"]:
            raise MtlrecError(f"data: dataset '{name}' declares no task '{task}' "
                              f"(declared: {list(section['tasks'])})")
        return reader.labels(name, section, task, raw_dir, out_dir)
    raw = reader.read(name, section, raw_dir)
    if task not in raw.tasks:
        raise MtlrecError(f"data: dataset '{name}' declares no task '{task}' "
                          f"(declared: {raw.tasks})")
    labels = raw.label_of(task)
    decl = task_declaration(section, task)
    check_two_classes(task, decl, labels["train"], f"data: dataset '{name}'")
    info = {
        "dataset": name, "task": task, "declaration": decl,
        "rows": {split: len(values) for split, values in labels.items()},
        "positive_rate": {split: round(float(values.mean()), 6)
                          for split, values in labels.items()},
    }
    write_labels(out_dir, labels, info)
    return info


def task_declaration(section: dict[str, Any], task: str) -> dict[str, Any]:
    """A task's declaration: `tasks.<task>` (census reader), or its 0/1 column (table reader)."""
    if "tasks" in section:
        return dict(section["tasks"][task])
    return {"column": section["labels"][task], "equals": 1}


def declared_tasks(section: dict[str, Any]) -> list[str]:
    return list(section["tasks"] if "tasks" in section else section.get("labels", {}))
