"""Streaming datasets (reader `stream`): delimited raw files of any size -> encoded parquet parts,
read back batch by batch with bounded memory. Ali-CCP and ByteRec are declarations of it.

    datasets:
      byterec:
        reader: stream
        files: {all: final_track2_train.txt}     # or {train: ..., val: ..., test: ...}
        split_fractions: {train: 0.8, val: 0.1, test: 0.1}   # only with `all`
        split_seed: 2023
        delimiter: "\\t"
        columns: [uid, user_city, ...]           # the header when the files have none
        sparse: [uid, user_city, ...]            # label-encoded, embedded
        dense: []                                # min-max scaled
        tasks: {finish: {column: finish, equals: 1}, like: {column: like, equals: 1}}
        fit_encoders_on: train                   # train | all (the rows the vocabularies see)
        min_count: 1                             # rarer values share the out-of-vocabulary code
        max_rows: {train: null, val: null, test: null}   # the first N rows of a split
        rows_per_part: 1000000

Layout: data/encoded/<name>/schema.json and one folder per split with parts
`part-00000.parquet` of `rows_per_part` rows (the last one shorter); a task's labels are
data/labels/<name>/<task>/<split>/part-*.parquet, the same rows in the same parts. The splits are
fixed by the data (files, or a hash of the row number and `split_seed`), not by the run's seed.

Encoding reads each raw file twice through pyarrow's streaming CSV reader: pass 1 counts the
values of every sparse field and the range of every dense field on the fitting rows, pass 2
encodes block by block and writes full parts. Memory holds one block, one part and the
vocabularies, whatever the number of rows. Codes follow mtlrec.data.encode: the index of the value
in the sorted vocabulary, `len(vocabulary)` for a value that is rarer than `min_count` or unseen.

`StreamedSplit` reads the parts back in a background thread (the next part decodes while the
current one trains) and serves batches of a fixed size across part boundaries; shuffling permutes
the order of the parts and the rows inside each part with the run's generator.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import torch

from mtlrec.data.batches import TensorSplit
from mtlrec.data.tasks import task_label
from mtlrec.data.tianchi import LABELS, tianchi_blocks
from mtlrec.errors import MtlrecError
from mtlrec.provenance import atomic_write, write_json_atomic

SPLITS = ("train", "val", "test")
# pyarrow CSV block: ~4 MiB of raw text per record batch. pyarrow's streaming reader keeps a
# fixed number of blocks read ahead, so its peak is about that number times the block size: on
# the 1.7 GiB synthetic Ali-CCP file (10M rows) a read with 16 MiB blocks peaked at 796 MiB RSS
# (343 MiB on the 1M-row file, which fits in the window), with 4 MiB blocks at 284 MiB (269 MiB
# at 1M rows), and no slower (19 s against 23 s on 2 cores). Outputs do not depend on it.
BLOCK_BYTES = 4 << 20
_MIX = np.uint64(0x9E3779B97F4A7C15)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A bijective 64-bit mix (splitmix64's finaliser): uniform bits from row numbers."""
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64) + _MIX
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def assign_splits(first_row: int, n: int, fractions: dict[str, float], seed: int) -> np.ndarray:
    """Split index (0 train, 1 val, 2 test) of rows first_row .. first_row + n - 1 of a single
    file: a uniform draw per row from a hash of (row number, seed), so the assignment of a row
    never depends on the rows around it or on how the file is read."""
    with np.errstate(over="ignore"):
        rows = np.arange(first_row, first_row + n, dtype=np.uint64)
        u = (_splitmix64(rows ^ _splitmix64(np.array([seed], np.uint64))) >> np.uint64(11))
    uniform = u.astype(np.float64) / float(1 << 53)  # [n] in [0, 1)
    edges = np.cumsum([fractions["train"], fractions["val"]])
    return np.searchsorted(edges, uniform, side="right").astype(np.int8)


# ---------------------------------------------------------------- reading raw files in blocks


def _raw_paths(name: str, section: dict[str, Any], raw_dir: Path) -> dict[str, Path]:
    """The fetched raw file of every `files` key (the Tianchi common-features files included)."""
    paths = {}
    for key in section["files"]:
        path = raw_dir / Path(section["files"][key]).name
        if not path.is_file():
            raise MtlrecError(f"stream: dataset '{name}': raw file {path} not found (source: "
                              f"datasets.{name}.files.{key}); run the fetch stage first")
        paths[key] = path
    return paths


def _sample_files(name: str, section: dict[str, Any], raw_dir: Path) -> dict[str, Path]:
    """The files whose rows are samples, by key (all, train, val, test)."""
    paths = _raw_paths(name, section, raw_dir)
    if section.get("format", "delimited") == "tianchi":
        for key in [k for k in paths if not k.endswith("_common")]:
            if f"{key}_common" not in paths:
                raise MtlrecError(f"stream: datasets.{name}.files.{key}_common is missing: the "
                                  f"Tianchi format joins each sample_skeleton file with its "
                                  f"common_features file")
        unknown = set(section["tasks"][t]["column"] for t in section["tasks"]) - set(LABELS)
        if unknown or section["dense"]:
            raise MtlrecError(f"stream: dataset '{name}' (format tianchi): label columns are "
                              f"{list(LABELS)} and dense is [] (got {sorted(unknown)}, "
                              f"{section['dense']})")
    return {k: p for k, p in paths.items() if not k.endswith("_common")}


def _used_columns(section: dict[str, Any]) -> list[str]:
    label_columns = [decl["column"] for decl in section["tasks"].values()]
    return list(dict.fromkeys([*section["sparse"], *section["dense"], *label_columns]))


def _blocks(name: str, section: dict[str, Any], path: Path) -> Iterator[pa.RecordBatch]:
    """The used columns of one raw file, block by block (sparse and label columns as strings,
    dense as float64)."""
    if section.get("format", "delimited") == "tianchi":
        key = next(k for k, f in section["files"].items() if Path(f).name == path.name)
        common = path.parent / Path(section["files"][f"{key}_common"]).name
        yield from tianchi_blocks(name, path, common, list(section["sparse"]), BLOCK_BYTES)
        return
    used = _used_columns(section)
    types = {c: pa.string() for c in used}
    types.update({c: pa.float64() for c in section["dense"]})
    read = pacsv.ReadOptions(block_size=BLOCK_BYTES, column_names=section.get("columns"))
    parse = pacsv.ParseOptions(delimiter=section.get("delimiter", ","))
    convert = pacsv.ConvertOptions(column_types=types, include_columns=used,
                                   strings_can_be_null=False, quoted_strings_can_be_null=False)
    try:
        reader = pacsv.open_csv(pa.input_stream(str(path)), read_options=read,
                                parse_options=parse, convert_options=convert)
        yield from reader
    except (pa.ArrowInvalid, pa.ArrowKeyError) as exc:
        raise MtlrecError(f"stream: dataset '{name}': cannot read {path.name}: "
                          f"{str(exc).splitlines()[0]}") from exc


def _split_blocks(name: str, section: dict[str, Any], raw_dir: Path
                  ) -> Iterator[tuple[str, pa.RecordBatch]]:
    """(split, block) over the raw files, with `max_rows` applied per split."""
    caps = {s: (section.get("max_rows") or {}).get(s) for s in SPLITS}
    taken = dict.fromkeys(SPLITS, 0)

    def capped(split: str, block: pa.RecordBatch) -> pa.RecordBatch | None:
        room = None if caps[split] is None else caps[split] - taken[split]
        if room is not None and room <= 0:
            return None
        block = block if room is None else block.slice(0, room)
        taken[split] += block.num_rows
        return block

    files = _sample_files(name, section, raw_dir)
    hashed = "all" if "all" in files else ("train" if "val" not in files else None)
    if hashed is not None:
        _check_fractions(name, section, with_test=hashed == "all")
    for key, path in files.items():
        first_row = 0
        for block in _blocks(name, section, path):
            if key != hashed:
                out = capped(key, block)
                if out is not None and out.num_rows:
                    yield key, out
                elif caps[key] is not None:
                    break  # the cap of a split file is reached: read no further
                continue
            which = assign_splits(first_row, block.num_rows, section["split_fractions"],
                                  section.get("split_seed", 0))
            first_row += block.num_rows
            for index, split in enumerate(SPLITS):
                rows = np.flatnonzero(which == index)
                out = capped(split, block.take(pa.array(rows))) if len(rows) else None
                if out is not None and out.num_rows:
                    yield split, out
            if all(caps[s] is not None and taken[s] >= caps[s] for s in SPLITS):
                break


def _check_fractions(name: str, section: dict[str, Any], with_test: bool) -> None:
    """`split_fractions` of the file that is split by row hash: train/val/test for `all`,
    train/val for a `train` file without a `val` file; they sum to 1."""
    need = ("train", "val", "test") if with_test else ("train", "val")
    fractions = section.get("split_fractions") or {}
    source = "all" if with_test else "train (no val file)"
    if set(fractions) != set(need) or abs(sum(fractions.values()) - 1.0) > 1e-9:
        raise MtlrecError(f"stream: datasets.{name}.files.{source} needs split_fractions over "
                          f"{list(need)} summing to 1 (got {fractions or 'none'})")


# ---------------------------------------------------------------- pass 1: vocabularies, ranges


class ValueCounts:
    """The counts of one string field's values over many blocks, in bounded memory: each block's
    counts are kept as arrow columns and merged (an arrow group-by) every `merge_every` blocks,
    so what is held is at most one merged table plus `merge_every` block tables (a pandas
    Series.add per block re-aligned the whole running index each time: half of pass 1)."""

    def __init__(self, merge_every: int = 32) -> None:
        self.merge_every = merge_every
        self.tables: list[pa.Table] = []

    def add(self, column: pa.Array | pa.ChunkedArray) -> None:
        counted = pc.value_counts(column)  # struct array: values, counts
        self.tables.append(pa.table({"value": counted.field("values"),
                                     "count": counted.field("counts")}))
        if len(self.tables) >= self.merge_every:
            self._merge()

    def _merge(self) -> None:
        if len(self.tables) > 1:
            merged = pa.concat_tables(self.tables).group_by("value").aggregate(
                [("count", "sum")])
            self.tables = [pa.table({"value": merged["value"], "count": merged["count_sum"]})]

    def at_least(self, min_count: int) -> list[str]:
        """The values counted at least `min_count` times, sorted (as Python strings sort)."""
        self._merge()
        if not self.tables:
            return []
        table = self.tables[0]
        kept = table.filter(pc.greater_equal(table["count"], min_count))["value"]
        return sorted(str(v) for v in kept.to_pylist())


def _fit(name: str, section: dict[str, Any], raw_dir: Path
         ) -> tuple[dict[str, list[str]], dict[str, tuple[float, float]]]:
    fit_on = section.get("fit_encoders_on", "train")
    counts = {f: ValueCounts() for f in section["sparse"]}
    low = dict.fromkeys(section["dense"], np.inf)
    high = dict.fromkeys(section["dense"], -np.inf)
    for split, block in _split_blocks(name, section, raw_dir):
        if fit_on == "train" and split != "train":
            continue
        for field in section["sparse"]:
            counts[field].add(block.column(field))
        for field in section["dense"]:
            column = block.column(field).to_numpy(zero_copy_only=False)
            if len(column):
                low[field] = min(low[field], float(np.nanmin(column)))
                high[field] = max(high[field], float(np.nanmax(column)))
    min_count = section.get("min_count", 1)
    vocabularies = {f: c.at_least(min_count) for f, c in counts.items()}
    ranges = {f: (float(low[f]), float(high[f])) if np.isfinite(low[f]) else (0.0, 1.0)
              for f in section["dense"]}
    return vocabularies, ranges


# ---------------------------------------------------------------- pass 2: encoded parts


class PartWriter:
    """Rows in, parquet parts of exactly `rows_per_part` rows out (the last one shorter), each
    written atomically as out_dir/part-NNNNN.parquet."""

    def __init__(self, out_dir: Path, rows_per_part: int) -> None:
        self.out_dir, self.rows_per_part = out_dir, rows_per_part
        self.pending: list[pa.Table] = []
        self.pending_rows = self.rows = self.parts = 0
        out_dir.mkdir(parents=True, exist_ok=True)
        for old in out_dir.glob("part-*.parquet"):  # a rerun replaces every part
            old.unlink()

    def add(self, table: pa.Table) -> None:
        self.pending.append(table)
        self.pending_rows += table.num_rows
        while self.pending_rows >= self.rows_per_part:
            whole = pa.concat_tables(self.pending)
            self._write(whole.slice(0, self.rows_per_part))
            rest = whole.slice(self.rows_per_part)
            self.pending, self.pending_rows = [rest], rest.num_rows

    def close(self) -> int:
        if self.pending_rows or self.parts == 0:
            self._write(pa.concat_tables(self.pending) if self.pending else None)
        return self.rows

    def _write(self, table: pa.Table | None) -> None:
        if table is None:
            return
        path = self.out_dir / f"part-{self.parts:05d}.parquet"
        atomic_write(path, lambda tmp: pq.write_table(table.combine_chunks(), tmp))
        self.parts += 1
        self.rows += table.num_rows


def _encode_block(block: pa.RecordBatch, vocabularies: dict[str, pd.Index],
                  ranges: dict[str, tuple[float, float]], first_row_id: int) -> pa.Table:
    """Dense fields min-max scaled to float32; a sparse value's code is its position in the
    sorted vocabulary, len(vocabulary) for one outside it; row ids from `first_row_id`. Only a
    block's distinct values are looked up (the index keeps its hash table between blocks)."""
    columns: dict[str, np.ndarray] = {}
    for field, (low, high) in ranges.items():
        span = high - low if high > low else 1.0
        values = block.column(field).to_numpy(zero_copy_only=False)
        columns[field] = ((np.nan_to_num(values, nan=low) - low) / span).astype(np.float32)
    for field, vocabulary in vocabularies.items():
        distinct = pc.dictionary_encode(block.column(field), null_encoding="encode")  # nulls: one
        codes = vocabulary.get_indexer(distinct.dictionary.to_numpy(zero_copy_only=False))
        codes = np.where(codes < 0, len(vocabulary), codes).astype(np.int32)
        columns[field] = codes[distinct.indices.to_numpy(zero_copy_only=False)]
    columns["row_id"] = np.arange(first_row_id, first_row_id + block.num_rows, dtype=np.int64)
    return pa.table(columns)


def encode_stream(name: str, section: dict[str, Any], raw_dir: Path, out_dir: Path,
                  progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Raw files -> out_dir/<split>/part-*.parquet + schema.json (two passes, bounded memory)."""
    vocabularies, ranges = _fit(name, section, raw_dir)
    indexes = {f: pd.Index(v, dtype=object) for f, v in vocabularies.items()}
    writers = {s: PartWriter(out_dir / s, section["rows_per_part"]) for s in SPLITS}
    for split, block in _split_blocks(name, section, raw_dir):
        writers[split].add(_encode_block(block, indexes, ranges, writers[split].rows
                                         + writers[split].pending_rows))
        if progress:
            progress(split)
    rows = {s: w.close() for s, w in writers.items()}
    for split, n in rows.items():
        if n == 0:
            raise MtlrecError(f"data: dataset '{name}': the {split} split is empty")
    schema = {
        "dataset": name,
        "layout": "parts",
        "dense": list(section["dense"]),
        "sparse": [{"name": f, "vocab_size": len(v) + 1} for f, v in vocabularies.items()],
        "rows": rows,
        "fit_encoders_on": section.get("fit_encoders_on", "train"),
        "min_count": section.get("min_count", 1),
        "rows_per_part": section["rows_per_part"],
    }
    write_json_atomic(out_dir / "schema.json", schema)
    return schema


def write_stream_labels(name: str, section: dict[str, Any], task: str, raw_dir: Path,
                        out_dir: Path) -> dict[str, Any]:
    """One task's labels in the parts of the encoded splits: out_dir/<split>/part-*.parquet and
    label.json (rule, rows, positive rate)."""
    decl = dict(section["tasks"][task])
    writers = {s: PartWriter(out_dir / s, section["rows_per_part"]) for s in SPLITS}
    positives = dict.fromkeys(SPLITS, 0)
    for split, block in _split_blocks(name, section, raw_dir):
        frame = pd.DataFrame({decl["column"]: block.column(decl["column"]).to_numpy(
            zero_copy_only=False)})
        labels = task_label(frame, task, decl, f"data: dataset '{name}'")
        positives[split] += int(labels.sum())
        writers[split].add(pa.table({"label": labels}))
    rows = {s: w.close() for s, w in writers.items()}
    if positives["train"] in (0, rows["train"]):
        from mtlrec.data.tasks import check_two_classes

        check_two_classes(task, decl, np.full(rows["train"], positives["train"] > 0),
                          f"data: dataset '{name}'")
    info = {"dataset": name, "task": task, "declaration": decl, "rows": rows,
            "positive_rate": {s: round(positives[s] / rows[s], 6) if rows[s] else None
                              for s in SPLITS}}
    write_json_atomic(out_dir / "label.json", info)
    return info


# ---------------------------------------------------------------- reading parts back


def is_streamed(encoded_dir: Path) -> bool:
    path = encoded_dir / "schema.json"
    return path.is_file() and json.loads(path.read_text()).get("layout") == "parts"


class StreamedSplit:
    """One encoded split on disk (parts), read batch by batch; a BatchSource like TensorSplit.

    `prefetch` parts are decoded ahead in a thread; batches move to `device` (pinned and
    non-blocking on CUDA)."""

    def __init__(self, part_dir: Path, schema: dict[str, Any], label_dirs: list[Path],
                 device: torch.device | str = "cpu", prefetch: int = 2) -> None:
        self.parts = sorted(part_dir.glob("part-*.parquet"))
        if not self.parts:
            raise MtlrecError(f"data: {part_dir} holds no parts; run the encode stage first")
        self.label_parts = [sorted(d.glob("part-*.parquet")) for d in label_dirs]
        for task_dir, parts in zip(label_dirs, self.label_parts, strict=True):
            if len(parts) != len(self.parts):
                raise MtlrecError(f"data: {task_dir} has {len(parts)} parts, {part_dir} "
                                  f"{len(self.parts)}: made from other raw rows; rerun its stages")
        self.schema = schema
        self.rows = sum(pq.ParquetFile(p).metadata.num_rows for p in self.parts)
        self._device = torch.device(device)
        self.prefetch = prefetch

    def __len__(self) -> int:
        return self.rows

    @property
    def device(self) -> torch.device:
        return self._device

    def to(self, device: torch.device) -> StreamedSplit:
        self._device = torch.device(device)
        return self

    def _read_part(self, index: int) -> TensorSplit:
        table = pq.read_table(self.parts[index])
        n = table.num_rows

        def stack(columns: list[str], dtype: type) -> np.ndarray:
            if not columns:
                return np.zeros((n, 0), dtype=dtype)
            return np.stack([table.column(c).to_numpy().astype(dtype) for c in columns], axis=1)

        labels = [pq.read_table(parts[index]).column("label").to_numpy().astype(np.float32)
                  for parts in self.label_parts]
        for column in labels:
            if len(column) != n:
                raise MtlrecError(f"data: label part {index} has {len(column)} rows, "
                                  f"{self.parts[index]} {n}; rerun the labels stage")
        return TensorSplit(
            dense=torch.from_numpy(stack(self.schema["dense"], np.float32)),
            sparse=torch.from_numpy(stack([f["name"] for f in self.schema["sparse"]], np.int64)),
            labels=torch.from_numpy(np.stack(labels, axis=1) if labels
                                    else np.zeros((n, 0), np.float32)),
            row_id=torch.from_numpy(table.column("row_id").to_numpy().astype(np.int64)),
        )

    def _parts_ahead(self, order: list[int]) -> Iterator[TensorSplit]:
        """Decoded parts in `order`, `prefetch` of them read ahead by a worker thread."""
        ready: queue.Queue[TensorSplit | BaseException | None] = queue.Queue(self.prefetch)
        stop = threading.Event()

        def work() -> None:
            try:
                for index in order:
                    if stop.is_set():
                        return
                    ready.put(self._read_part(index))
                ready.put(None)
            except BaseException as exc:  # handed to the consumer, raised there
                ready.put(exc)

        worker = threading.Thread(target=work, daemon=True)
        worker.start()
        try:
            while (item := ready.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while worker.is_alive():  # unblock a worker waiting on a full queue
                try:
                    ready.get_nowait()
                except queue.Empty:
                    worker.join(0.05)

    def batches(self, batch_size: int, shuffle: bool = False,
                generator: torch.Generator | None = None) -> Iterator[TensorSplit]:
        order = list(range(len(self.parts)))
        if shuffle:
            order = torch.randperm(len(order), generator=generator).tolist()
        pinned = self._device.type == "cuda"
        carry: TensorSplit | None = None
        for part in self._parts_ahead(order):
            if shuffle:
                part = part.take(torch.randperm(len(part), generator=generator))
            if carry is not None:
                part = _concat(carry, part)
            full = len(part) - len(part) % batch_size
            for start in range(0, full, batch_size):
                yield _moved(part.take(slice(start, start + batch_size)), self._device, pinned)
            carry = part.take(slice(full, len(part))) if full < len(part) else None
        if carry is not None:
            yield _moved(carry, self._device, pinned)

    def head(self, n: int) -> TensorSplit:
        """The first `n` rows in memory (e.g. the t-SNE sample)."""
        taken, rows = [], 0
        for batch in self.batches(min(n, 65536)):
            taken.append(batch)
            rows += len(batch)
            if rows >= n:
                break
        return _concat(*taken).take(slice(0, n))


def _concat(*splits: TensorSplit) -> TensorSplit:
    return TensorSplit(*(torch.cat([getattr(s, f) for s in splits])
                         for f in ("dense", "sparse", "labels", "row_id")))


def _moved(batch: TensorSplit, device: torch.device, pinned: bool) -> TensorSplit:
    if device.type == "cpu":
        return batch
    tensors = (batch.dense, batch.sparse, batch.labels, batch.row_id)
    if pinned:
        tensors = tuple(t.pin_memory() for t in tensors)
    return TensorSplit(*(t.to(device, non_blocking=pinned) for t in tensors))
