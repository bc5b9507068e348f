"""Interaction data for ranking: encode (dedup, optional k-core, contiguous ids) and the seeded
60/20/20 split with the index structures training and evaluation need.

Encoded layout (data/interactions/<dataset>/):
    interactions.parquet   user, item (0-based, contiguous), rating, in the raw file's order
    relations/<name>.parquet  a, b: links (entities of one side) or groups (entity, group)
    schema.json            users, items, interactions, relations {name: side, kind, rows, groups}
Rows of the embedding table: users 0..U-1, then items U..U+I-1.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from mtlrec.errors import MtlrecError
from mtlrec.provenance import atomic_write, write_json_atomic
from mtlrec.ranking.readers import InteractionTables


# ------------------------------------------------------------------------------- encoding
def k_core(frame: pd.DataFrame, k: int) -> pd.DataFrame:
    """Drop users and items with fewer than k interactions until none is left (k <= 1: as is)."""
    while k > 1:
        users = frame["user"].map(frame["user"].value_counts())
        items = frame["item"].map(frame["item"].value_counts())
        keep = (users >= k) & (items >= k)
        if keep.all():
            break
        frame = frame[keep]
    return frame


def _limit_users(frame: pd.DataFrame, max_users: int | None) -> pd.DataFrame:
    """The interactions of the `max_users` smallest raw user ids (a slice for tiny profiles)."""
    if max_users is None:
        return frame
    kept = np.sort(frame["user"].unique())[:max_users]
    return frame[frame["user"].isin(kept)]


def encode_interactions(name: str, section: dict[str, Any], tables: InteractionTables,
                        out_dir: Path) -> dict[str, Any]:
    """Deduplicate (user, item) pairs (first kept), apply the row limit and k-core, map ids to
    0-based contiguous ids (sorted raw ids), map the relations (pairs with an unknown endpoint,
    self-links and duplicates dropped) and write the encoded files."""
    inter = tables.interactions
    raw_rows = len(inter)
    inter = inter.drop_duplicates(["user", "item"], keep="first")
    inter = k_core(_limit_users(inter, section.get("max_users")), section["min_core"])
    if len(inter) == 0:
        raise MtlrecError(f"data: dataset '{name}': no interaction is left after the limits")
    users = np.sort(inter["user"].unique())
    items = np.sort(inter["item"].unique())
    encoded = pd.DataFrame({
        "user": np.searchsorted(users, inter["user"].to_numpy()).astype(np.int32),
        "item": np.searchsorted(items, inter["item"].to_numpy()).astype(np.int32),
        "rating": inter["rating"].to_numpy(np.float32),
    })
    schema: dict[str, Any] = {
        "dataset": name, "users": len(users), "items": len(items),
        "interactions": len(encoded), "raw_interactions": raw_rows,
        "duplicates_dropped": raw_rows - len(tables.interactions.drop_duplicates(
            ["user", "item"])),
        "relations": {},
    }
    relation_frames = {}
    for rel_name, rel in tables.relations.items():
        ids = users if rel.side == "user" else items
        a, b = rel.pairs["a"].to_numpy(), rel.pairs["b"].to_numpy()
        keep = np.isin(a, ids)
        if rel.kind == "links":
            keep &= np.isin(b, ids) & (a != b)
        frame = pd.DataFrame({"a": np.searchsorted(ids, a[keep]).astype(np.int32),
                              "b": b[keep]})
        if rel.kind == "links":
            frame["b"] = np.searchsorted(ids, frame["b"].to_numpy())
        else:  # group ids made contiguous too
            groups = np.sort(np.unique(frame["b"].to_numpy()))
            frame["b"] = np.searchsorted(groups, frame["b"].to_numpy())
        frame = frame.astype(np.int32).drop_duplicates().reset_index(drop=True)
        relation_frames[rel_name] = frame
        schema["relations"][rel_name] = {
            "side": rel.side, "kind": rel.kind, "rows": len(frame),
            **({"groups": int(frame["b"].max()) + 1 if len(frame) else 0}
               if rel.kind == "groups" else {}),
        }
    _write_parquet(out_dir / "interactions.parquet", encoded)
    for rel_name, frame in relation_frames.items():
        _write_parquet(out_dir / "relations" / f"{rel_name}.parquet", frame)
    write_json_atomic(out_dir / "schema.json", schema)
    return schema


def _write_parquet(path: Path, frame: pd.DataFrame) -> None:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))


# ------------------------------------------------------------------------------ the split
@dataclass
class CSR:
    """Rows -> sorted column lists: indptr [R+1], indices [nnz] (int64 tensors)."""

    indptr: torch.Tensor
    indices: torch.Tensor

    @classmethod
    def build(cls, rows: np.ndarray, cols: np.ndarray, num_rows: int) -> CSR:
        order = np.lexsort((cols, rows))
        counts = np.bincount(rows, minlength=num_rows)
        indptr = np.concatenate([[0], np.cumsum(counts)])
        return cls(torch.from_numpy(indptr.astype(np.int64)),
                   torch.from_numpy(cols[order].astype(np.int64)))

    def degree(self) -> torch.Tensor:
        return self.indptr[1:] - self.indptr[:-1]

    def sample(self, rows: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor,
                                                                                torch.Tensor]:
        """One uniformly drawn column per row [n] and whether the row has any [n]."""
        start, degree = self.indptr[rows], self.degree()[rows]
        pick = (torch.rand(rows.shape, generator=generator, dtype=torch.float64)
                * degree.clamp(min=1)).long()
        has = degree > 0
        cols = self.indices[(start + pick).clamp(max=max(len(self.indices) - 1, 0))] \
            if len(self.indices) else torch.zeros_like(rows)
        return torch.where(has, cols, torch.zeros_like(cols)), has


@dataclass
class RelationIndex:
    name: str
    side: str
    kind: str
    forward: CSR  # links: entity -> partners; groups: entity -> its groups
    members: CSR | None = None  # groups: group -> entities


@dataclass
class RankingData:
    users: int
    items: int
    train_user: torch.Tensor  # [n_train] int64
    train_item: torch.Tensor
    train_rating: torch.Tensor  # [n_train] float32
    train: CSR  # user -> training items (excluded from ranking; negatives avoid them)
    val: CSR  # user -> validation items
    test: CSR  # user -> test items
    train_keys: torch.Tensor  # sorted user * items + item of training pairs (membership)
    relations: dict[str, RelationIndex] = field(default_factory=dict)
    max_rating: float = 1.0
    schema: dict[str, Any] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return self.users + self.items

    def is_train_pair(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        keys = user * self.items + item
        pos = torch.searchsorted(self.train_keys, keys).clamp(max=len(self.train_keys) - 1)
        return self.train_keys[pos] == keys


def split_indices(n: int, fractions: tuple[float, float], seed: int) -> tuple[np.ndarray, ...]:
    """A seeded random split of n interactions into train/val/test (fractions of train, val)."""
    order = np.random.default_rng(seed).permutation(n)
    n_train = int(round(fractions[0] * n))
    n_val = int(round(fractions[1] * n))
    return order[:n_train], order[n_train:n_train + n_val], order[n_train + n_val:]


def load_ranking(data_dir: Path, split: dict[str, Any], seed: int,
                 relations: list[str]) -> RankingData:
    """The encoded dataset, split by `seed` (params `split.seed` null) or a fixed split seed,
    with the relations the run's tasks need."""
    schema_path = data_dir / "schema.json"
    if not schema_path.is_file():
        raise MtlrecError(f"data: {schema_path} not found; run the encode stage first")
    schema = json.loads(schema_path.read_text())
    frame = pq.read_table(data_dir / "interactions.parquet").to_pandas()
    users, items = schema["users"], schema["items"]
    split_seed = seed if split.get("seed") is None else split["seed"]
    parts = split_indices(len(frame), (split["train"], split["val"]), split_seed)
    u, i, r = (frame[c].to_numpy() for c in ("user", "item", "rating"))
    tr, va, te = parts
    train_keys = np.sort(u[tr].astype(np.int64) * items + i[tr])
    data = RankingData(
        users=users, items=items,
        train_user=torch.from_numpy(u[tr].astype(np.int64)),
        train_item=torch.from_numpy(i[tr].astype(np.int64)),
        train_rating=torch.from_numpy(r[tr].astype(np.float32)),
        train=CSR.build(u[tr], i[tr], users), val=CSR.build(u[va], i[va], users),
        test=CSR.build(u[te], i[te], users), train_keys=torch.from_numpy(train_keys),
        max_rating=float(max(r.max(), 1.0)), schema=schema)
    for name in relations:
        data.relations[name] = _relation_index(data_dir, schema, name, users, items)
    return data


def _relation_index(data_dir: Path, schema: dict[str, Any], name: str, users: int,
                    items: int) -> RelationIndex:
    if name not in schema["relations"]:
        raise MtlrecError(f"data: dataset '{schema['dataset']}' has no relation '{name}' "
                          f"(it has {sorted(schema['relations'])})")
    info = schema["relations"][name]
    frame = pq.read_table(data_dir / "relations" / f"{name}.parquet").to_pandas()
    a, b = frame["a"].to_numpy().astype(np.int64), frame["b"].to_numpy().astype(np.int64)
    entities = users if info["side"] == "user" else items
    if info["kind"] == "links":
        return RelationIndex(name, info["side"], "links", CSR.build(a, b, entities))
    return RelationIndex(name, info["side"], "groups", CSR.build(a, b, entities),
                         CSR.build(b, a, info["groups"]))
