"""Label encoding of sparse fields and min-max scaling of dense fields, written as parquet + schema.

Two fitting modes (params `data.<dataset>.fit_encoders_on`):
- `train` (default): codes and ranges are learnt on the training file and applied to the test file.
  Values unseen in training map to a reserved out-of-vocabulary code (the last index), dense values
  outside the training range are left unclipped.
- `per_file`: the official MPT-Rec code fits LabelEncoder/MinMaxScaler separately on each file, so
  the same category can get different codes in train and test (on Census `det_hh_fam_stat` has 38
  values in train and 37 in test, and every test code after the missing one is shifted). Offered to
  mirror the paper's numbers; see docs/datasets.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mtlrec.errors import MtlrecError
from mtlrec.provenance import atomic_write, write_json_atomic

FIT_MODES = ("train", "per_file")


@dataclass
class Encoders:
    vocabularies: dict[str, list[str]]  # field -> sorted known values; code = index
    ranges: dict[str, tuple[float, float]]  # field -> (min, max)

    @classmethod
    def fit(cls, frame: pd.DataFrame, sparse: list[str], dense: list[str]) -> Encoders:
        vocab = {f: sorted(frame[f].astype(str).unique().tolist()) for f in sparse}
        ranges = {f: (float(frame[f].min()), float(frame[f].max())) for f in dense}
        return cls(vocab, ranges)

    def vocab_size(self, field: str) -> int:
        return len(self.vocabularies[field]) + 1  # + 1 out-of-vocabulary code

    def transform(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        columns: dict[str, np.ndarray] = {}
        for field, values in self.ranges.items():
            low, high = values
            span = high - low if high > low else 1.0
            columns[field] = ((frame[field].to_numpy(np.float64) - low) / span).astype(np.float32)
        for field, vocab in self.vocabularies.items():
            codes = pd.Index(vocab).get_indexer(frame[field].astype(str))
            codes = np.where(codes < 0, len(vocab), codes)  # unseen -> OOV code
            columns[field] = codes.astype(np.int32)
        return columns


def encode_frames(
    frames: dict[str, pd.DataFrame],
    sparse: list[str],
    dense: list[str],
    fit_on: str,
) -> tuple[dict[str, pa.Table], dict[str, Any]]:
    """Encode each split's input fields; return arrow tables and the schema (vocab size = max
    over splits). Labels are the labels stage's (`write_labels`), one folder per task."""
    if fit_on not in FIT_MODES:
        raise MtlrecError(f"encode: fit_encoders_on must be one of {FIT_MODES}, got '{fit_on}'")
    fitted = {
        split: Encoders.fit(frames["train" if fit_on == "train" else split], sparse, dense)
        for split in frames
    }
    tables = {}
    for split, frame in frames.items():
        columns = fitted[split].transform(frame)
        columns["row_id"] = np.arange(len(frame), dtype=np.int64)
        tables[split] = pa.table(columns)
    vocab_sizes = {f: max(enc.vocab_size(f) for enc in fitted.values()) for f in sparse}
    schema = {
        "dense": list(dense),
        "sparse": [{"name": f, "vocab_size": vocab_sizes[f]} for f in sparse],
        "rows": {split: len(frame) for split, frame in frames.items()},
        "fit_encoders_on": fit_on,
    }
    return tables, schema


def write_encoded(out_dir: Path, tables: dict[str, pa.Table], schema: dict[str, Any]) -> None:
    """Write `<split>.parquet` files and `schema.json` atomically."""
    for split, table in tables.items():
        atomic_write(out_dir / f"{split}.parquet", lambda tmp, t=table: pq.write_table(t, tmp))
    write_json_atomic(out_dir / "schema.json", schema)


def write_labels(out_dir: Path, labels: dict[str, np.ndarray], info: dict[str, Any]) -> None:
    """One task's labels: `<split>.parquet` (int8 column `label`) and `label.json`, atomically."""
    for split, values in labels.items():
        table = pa.table({"label": values.astype(np.int8)})
        atomic_write(out_dir / f"{split}.parquet", lambda tmp, t=table: pq.write_table(t, tmp))
    write_json_atomic(out_dir / "label.json", info)


def read_schema(encoded_dir: Path) -> dict[str, Any]:
    path = encoded_dir / "schema.json"
    if not path.is_file():
        raise MtlrecError(f"data: {path} not found; run the encode stage first")
    return json.loads(path.read_text())
