"""A user's own table as a dataset (reader `table`): CSV or parquet, named sparse and dense columns,
binary label columns.

    datasets:
      my_table:
        reader: table
        files: {train: path/to/train.csv}        # + test: path/to/test.csv, or test_fraction
        test_fraction: 0.3                       # the held-out share when there is no test file
        split_seed: 0                            # which rows are held out (fixed per dataset)
        sha256: {train: <64 hex>}                # optional: checked before anything is read
        sparse: [colour, city]                   # categorical columns
        dense: [age, price]                      # numeric columns
        labels: {clicked: click, bought: buy}    # task name -> a column of 0/1 values
        fit_encoders_on: train
        max_train_rows: null
        max_test_rows: null
        split: {val_fraction: 0.5}

The fetch stage copies the files (verified when `sha256` is given) into data/raw/<name>/ as
train.<ext> / test.<ext>. A missing column, a label column that is not 0/1, a dense column that
is not numeric, or an empty split (checked by `encode_dataset` for every reader) stops with
one line naming it.
"""

from __future__ import annotations

import shutil
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mtlrec.data.datasets import RawTables
from mtlrec.data.sources import REPO_ROOT, sha256_decompressed
from mtlrec.errors import MtlrecError
from mtlrec.provenance import atomic_write

SUFFIXES = (".csv", ".csv.gz", ".parquet")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return suffix
    raise MtlrecError(f"table: {path} is neither CSV (.csv, .csv.gz) nor parquet (.parquet)")


def _check_sha256(name: str, section: dict[str, Any], split: str, path: Path) -> None:
    """The file of `split` against its declared sha256 (decompressed content), if one is given."""
    expected = section.get("sha256", {}).get(split)
    if expected is not None and sha256_decompressed(path) != expected:
        raise MtlrecError(f"{section['reader']}: checksum mismatch for {path} "
                          f"(datasets.{name}.sha256.{split}); the file changed")


def _place_files(name: str, section: dict[str, Any], out_dir: Path,
                 dest_name: Callable[[str, Path], str]) -> list[Path]:
    """Copy each declared file (`files.<key>`, a path absolute or relative to the repository)
    into `out_dir` as `dest_name(key, source)`, verified by `sha256.<key>` when given. A missing
    file is one line naming the path and where the data come from (`source_hint`)."""
    placed = []
    for key, file_name in section["files"].items():
        source = Path(file_name)
        if not source.is_absolute():
            source = REPO_ROOT / source
        if not source.is_file():
            hint = section.get("source_hint", "")
            raise MtlrecError(f"{section['reader']}: datasets.{name}.files.{key}: {source} not "
                              f"found" + (f" (source: {hint})" if hint else ""))
        _check_sha256(name, section, key, source)
        dest = out_dir / dest_name(key, source)
        atomic_write(dest, lambda tmp, src=source: shutil.copyfile(src, tmp))
        placed.append(dest)
    return placed


def fetch_table(name: str, section: dict[str, Any], out_dir: Path) -> list[Path]:
    """Copy the declared files into `out_dir` as train.<ext> (and test.<ext>), verified."""
    return _place_files(name, section, out_dir, lambda split, src: f"{split}{_suffix(src)}")


def fetch_files(name: str, section: dict[str, Any], out_dir: Path) -> list[Path]:
    """Copy the declared files into `out_dir` under their own names, verified."""
    return _place_files(name, section, out_dir, lambda key, src: src.name)


def _read_file(path: Path) -> pd.DataFrame:
    try:
        if _suffix(path) == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path, keep_default_na=False, dtype=str)
    except (OSError, EOFError, zlib.error, ValueError, pd.errors.ParserError) as exc:
        raise MtlrecError(f"table: cannot read {path.name}: {str(exc).splitlines()[0]}") from exc


def _raw_file(raw_dir: Path, split: str) -> Path | None:
    return next((raw_dir / f"{split}{s}" for s in SUFFIXES if (raw_dir / f"{split}{s}").is_file()),
                None)


def _typed(frame: pd.DataFrame, name: str, split: str, section: dict[str, Any]) -> pd.DataFrame:
    """Check the declared columns; sparse as strings, dense as floats."""
    wanted = [*section["sparse"], *section["dense"], *section["labels"].values()]
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise MtlrecError(f"table: dataset '{name}' {split} file lacks column(s) {missing} "
                          f"(it has {list(frame.columns)[:12]})")
    out = pd.DataFrame(index=frame.index)
    for column in section["sparse"]:
        out[column] = frame[column].astype(str)
    for column in section["dense"]:
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = values.isna() & (frame[column].astype(str).str.strip() != "")
        if bad.any():
            first = frame[column][bad].iloc[0]
            raise MtlrecError(f"table: dataset '{name}' {split}: dense column '{column}' has a "
                              f"non-numeric value {first!r} (row {int(np.flatnonzero(bad)[0])})")
        out[column] = values.fillna(0.0).astype(np.float64)
    return out


def _labels(frame: pd.DataFrame, name: str, split: str, section: dict[str, Any], task: str
            ) -> np.ndarray:
    """The 0/1 column of `task` (declared in `labels`), checked to be binary."""
    column = section["labels"][task]
    values = pd.to_numeric(frame[column], errors="coerce")
    if values.isna().any() or not values.isin([0, 1]).all():
        odd = sorted(set(frame[column][values.isna() | ~values.isin([0, 1])].astype(str)))
        raise MtlrecError(f"table: dataset '{name}' {split}: label column '{column}' (task "
                          f"{task}) is not binary 0/1: found {odd[:3]}")
    return values.astype("int8").to_numpy()


def read_table(name: str, section: dict[str, Any], raw_dir: Path) -> RawTables:
    train_path = _raw_file(raw_dir, "train")
    if train_path is None:
        raise MtlrecError(f"table: no train file in {raw_dir}; run the fetch stage first")
    test_path = _raw_file(raw_dir, "test")
    for split, path in (("train", train_path), ("test", test_path)):  # edited since the fetch?
        if path is not None:
            _check_sha256(name, section, split, path)
    train = _read_file(train_path)
    if test_path is not None:
        test = _read_file(test_path)
    else:
        if "test_fraction" not in section:
            raise MtlrecError(f"table: datasets.{name} has no files.test: set test_fraction")
        rng = np.random.default_rng(section.get("split_seed", 0))
        held_out = np.zeros(len(train), dtype=bool)
        held_out[rng.permutation(len(train))[:round(section["test_fraction"] * len(train))]] = True
        test = train[held_out].reset_index(drop=True)
        train = train[~held_out].reset_index(drop=True)
    limits = {"train": section["max_train_rows"], "test": section["max_test_rows"]}
    raw, frames = {}, {}
    for split, frame in (("train", train), ("test", test)):
        if limits[split] is not None:
            frame = frame.head(limits[split])
        raw[split] = frame
        frames[split] = _typed(frame, name, split, section)

    def label_of(task: str) -> dict[str, np.ndarray]:
        return {split: _labels(frame, name, split, section, task) for split, frame in raw.items()}

    return RawTables(frames, label_of, list(section["labels"]), list(section["sparse"]),
                     list(section["dense"]))
