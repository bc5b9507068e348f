"""Ali-CCP in the raw Tianchi release format (dataset 408; the format ESMM and the official MPT-Rec
preprocessing `AliCCP_process.py` read), as record batches for the `stream` reader
(`format: tianchi`).

Two kinds of comma-separated files, without a header:

    sample_skeleton_{train,test}.csv   sample_id, click, conversion, common_feature_index,
                                       feature_num, feature_list
    common_features_{train,test}.csv   common_feature_index, feature_num, feature_list

A feature list is `field \\x02 feature_id \\x03 value` items joined by `\\x01`. The skeleton holds
the item and context fields (205, 206, 207, 210, 216, 301, 508, 509, 702, 853), the common file the
user fields (101, 121-129, the `_14` histories) shared by the samples that name its index.

Each skeleton row becomes one row with `click`, `purchase` (the conversion label) and one string
column per declared sparse field: the field's feature id from the skeleton, else from the row's
common features, else "0" (the official script's missing value). Where a field occurs more than
once in a list the last occurrence wins (the official `dict(zip(keys, values))`). Rows with
click = 0 and conversion = 1 are dropped, as ESMM and the official code drop them.

Memory: the common features are held for the declared fields only, one row per common index
(about 0.7M indexes in the train release, whatever the number of samples); the skeleton is read in
blocks of pyarrow's streaming CSV reader.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from mtlrec.errors import MtlrecError

SKELETON_COLUMNS = ["sample_id", "click", "conversion", "common_index", "feature_num",
                    "features"]
COMMON_COLUMNS = ["common_index", "feature_num", "features"]
LABELS = ("click", "purchase")


def _csv_blocks(name: str, path: Path, columns: list[str], block_bytes: int
                ) -> Iterator[pa.RecordBatch]:
    read = pacsv.ReadOptions(block_size=block_bytes, column_names=columns)
    convert = pacsv.ConvertOptions(column_types=dict.fromkeys(columns, pa.string()),
                                   strings_can_be_null=False)
    try:
        yield from pacsv.open_csv(pa.input_stream(str(path)), read_options=read,
                                  convert_options=convert)
    except (pa.ArrowInvalid, pa.ArrowKeyError) as exc:
        raise MtlrecError(f"stream: dataset '{name}': cannot read {path.name} as a Tianchi "
                          f"Ali-CCP file: {str(exc).splitlines()[0]}") from exc


def parse_features(features: pa.Array, fields: list[str]) -> dict[str, pa.Array]:
    """Feature lists [n] -> {field: feature ids [n] (string, null where the row lacks it)}."""
    lists = pc.split_pattern(features, "\x01")
    items = pc.list_flatten(lists)                              # [m] "field\x02id\x03value"
    parent = pc.list_parent_indices(lists).to_numpy()           # [m] row of each item
    field_rest = pc.split_pattern(items, "\x02", max_splits=1)
    field = pc.list_element(field_rest, 0).to_numpy(zero_copy_only=False)
    rest = pc.list_element(field_rest, 1)
    feature_id = pc.list_element(pc.split_pattern(rest, "\x03", max_splits=1), 0)
    n = len(features)
    parsed = {}
    for name in fields:
        where = np.flatnonzero(field == name)
        if not len(where):
            parsed[name] = pa.nulls(n, pa.string())
            continue
        rows = parent[where]
        # the last occurrence per row: unique over the reversed items
        rows_rev, first_rev = np.unique(rows[::-1], return_index=True)
        chosen = where[::-1][first_rev]
        slot = np.full(n, -1, dtype=np.int64)
        slot[rows_rev] = np.arange(len(rows_rev))
        values = feature_id.take(pa.array(chosen))
        parsed[name] = values.take(pa.array(slot, mask=slot < 0))
    return parsed


def load_common(name: str, path: Path, fields: list[str], block_bytes: int
                ) -> tuple[pd.Index, pa.Table]:
    """The common features file -> (index of common_feature_index, table [k, fields])."""
    keys, tables = [], []
    for block in _csv_blocks(name, path, COMMON_COLUMNS, block_bytes):
        keys.append(block.column("common_index"))
        tables.append(pa.table(parse_features(block.column("features"), fields)))
    if not tables:
        return pd.Index([], dtype=object), pa.table({f: pa.array([], pa.string())
                                                      for f in fields})
    index = pd.Index(pa.chunked_array(keys).to_numpy(zero_copy_only=False), dtype=object)
    if not index.is_unique:
        raise MtlrecError(f"stream: dataset '{name}': {path.name} names a common_feature_index "
                          "more than once")
    return index, pa.concat_tables(tables).combine_chunks()


def tianchi_blocks(name: str, skeleton: Path, common: Path, fields: list[str],
                   block_bytes: int) -> Iterator[pa.RecordBatch]:
    """Joined samples of one skeleton file, block by block: click, purchase and `fields`."""
    index, common_table = load_common(name, common, fields, block_bytes)
    for block in _csv_blocks(name, skeleton, SKELETON_COLUMNS, block_bytes):
        click, purchase = block.column("click"), block.column("conversion")
        keep = pc.invert(pc.and_(pc.equal(click, "0"), pc.equal(purchase, "1")))
        block = block.filter(keep)
        own = parse_features(block.column("features"), fields)
        slot = index.get_indexer(block.column("common_index").to_numpy(zero_copy_only=False))
        shared = common_table.take(pa.array(slot, mask=slot < 0))
        columns = {"click": block.column("click"), "purchase": block.column("conversion")}
        for field in fields:
            merged = pc.coalesce(own[field], shared.column(field).combine_chunks())
            columns[field] = pc.fill_null(merged, "0")
        yield pa.RecordBatch.from_pydict(columns)
