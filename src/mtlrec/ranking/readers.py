"""Raw interaction datasets (PMTRec): user-item interactions plus side relations.

A ranking dataset is `datasets.<name>` with one of these readers; each gives an `InteractionTables`:
the interactions (raw user id, raw item id, rating) and named relations, each on the user side or
the item side, either `links` (entity -> entity pairs: trust, co-view, co-buy) or `groups`
(entity -> group: category, genre). The encode stage (mtlrec.ranking.data) re-indexes them.

- `tang`: Tang, Gao and Liu's Epinions / Ciao (`rating.mat` [user, item, category, rating, ...],
  `trustnetwork.mat` [truster, trustee]): relations `trust` (user links) and `category` (item
  groups). Raw files verified by sha256 (mtlrec.data.sources), fetched from a mirror or the URL.
- `recbole`: MovieLens-100K in RecBole's atomic files (`ml-100k.inter`, `ml-100k.item`):
  relation `genre` (item groups, multi-label).
- `interactions`: a user's own files (the Amazon Video Games / Office sets of the paper, which
  cannot be fetched here), given by path; the schema is in docs/datasets.md:
      files: {interactions: inter.csv, also_viewed: coview.csv, ...}
      interactions: CSV/TSV with columns user, item[, rating]
      relations: {also_viewed: {side: item, kind: links}, ...}: CSV with columns a, b
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mtlrec.errors import MtlrecError
from mtlrec.provenance import atomic_write

SIDES = ("user", "item")
KINDS = ("links", "groups")


@dataclass
class Relation:
    side: str  # user | item
    kind: str  # links (a, b entities of the side) | groups (a entity, b group id)
    pairs: pd.DataFrame  # columns a, b (raw ids)


@dataclass
class InteractionTables:
    interactions: pd.DataFrame  # columns user, item, rating (raw ids, file order)
    relations: dict[str, Relation]


def _need(path: Path, where: str) -> Path:
    if not path.is_file():
        raise MtlrecError(f"{where}: raw file {path} not found; run the fetch stage first")
    return path


def _load_mat(path: Path, variable: str) -> np.ndarray:
    import scipy.io

    try:
        return np.asarray(scipy.io.loadmat(path)[variable]).astype(np.int64)
    except KeyError:
        raise MtlrecError(f"data: {path} holds no variable '{variable}'") from None
    except (ValueError, OSError) as exc:
        raise MtlrecError(f"data: cannot read {path} as a MAT file: {exc}") from exc


def read_tang(name: str, section: dict[str, Any], raw_dir: Path) -> InteractionTables:
    from mtlrec.data.sources import verify_placed

    verify_placed(section["source"], raw_dir)
    rating = _load_mat(_need(raw_dir / "rating.mat", name), "rating")  # [n, 4 or 5]
    if rating.ndim != 2 or rating.shape[1] < 4:
        raise MtlrecError(f"data: {raw_dir / 'rating.mat'}: expected [user, item, category, "
                          f"rating, ...] columns, got shape {rating.shape}")
    trust = _load_mat(_need(raw_dir / "trustnetwork.mat", name), "trustnetwork")  # [m, 2]
    interactions = pd.DataFrame({"user": rating[:, 0], "item": rating[:, 1],
                                 "rating": rating[:, 3].astype(np.float32)})
    return InteractionTables(interactions, {
        "trust": Relation("user", "links", pd.DataFrame({"a": trust[:, 0], "b": trust[:, 1]})),
        "category": Relation("item", "groups",
                             pd.DataFrame({"a": rating[:, 1], "b": rating[:, 2]})),
    })


def _atomic_tsv(path: Path, where: str) -> pd.DataFrame:
    frame = pd.read_csv(_need(path, where), sep="\t", dtype=str, keep_default_na=False)
    frame.columns = [c.split(":")[0] for c in frame.columns]  # RecBole's name:type headers
    return frame


def read_recbole(name: str, section: dict[str, Any], raw_dir: Path) -> InteractionTables:
    from mtlrec.data.sources import verify_placed

    verify_placed(section["source"], raw_dir)
    stem = section["source"].replace("movielens-", "ml-")
    inter = _atomic_tsv(raw_dir / f"{stem}.inter", name)
    items = _atomic_tsv(raw_dir / f"{stem}.item", name)
    for frame, cols, file in ((inter, ("user_id", "item_id", "rating"), "inter"),
                              (items, ("item_id", "class"), "item")):
        missing = [c for c in cols if c not in frame.columns]
        if missing:
            raise MtlrecError(f"data: {stem}.{file} has no column(s) {missing}")
    interactions = pd.DataFrame({"user": inter["user_id"].astype(np.int64),
                                 "item": inter["item_id"].astype(np.int64),
                                 "rating": inter["rating"].astype(np.float32)})
    genres = items.assign(genre=items["class"].str.split(" ")).explode("genre")
    genres = genres[genres["genre"] != ""]
    codes = {g: k for k, g in enumerate(sorted(genres["genre"].unique()))}
    pairs = pd.DataFrame({"a": genres["item_id"].astype(np.int64),
                          "b": genres["genre"].map(codes).astype(np.int64)})
    return InteractionTables(interactions, {"genre": Relation("item", "groups", pairs)})


# ------------------------------------------------------------------- a user's own files
def fetch_user_files(name: str, section: dict[str, Any], out_dir: Path) -> list[Path]:
    """Copy the declared files into `out_dir` (verified when `sha256` names them). A missing file
    is one line naming the path and where such data comes from."""
    from mtlrec.data.sources import sha256_decompressed

    placed = []
    for key, given in section["files"].items():
        path = Path(given).expanduser()
        if not path.is_file():
            raise MtlrecError(
                f"data: datasets.{name}.files.{key}: {path} not found. "
                f"{section.get('source_hint') or 'Give the path of your copy (docs/datasets.md)'}")
        expected = section.get("sha256", {}).get(key)
        if expected is not None and sha256_decompressed(path) != expected:
            raise MtlrecError(f"data: checksum mismatch for {path} (datasets.{name}.sha256.{key})")
        dest = out_dir / f"{key}.csv"
        atomic_write(dest, lambda tmp, src=path: shutil.copyfile(src, tmp))
        placed.append(dest)
    return placed


def _read_pairs(path: Path, columns: tuple[str, ...], where: str) -> pd.DataFrame:
    try:
        frame = pd.read_csv(_need(path, where), sep=None, engine="python")
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise MtlrecError(f"data: {path} is not a readable CSV/TSV file: {exc}") from exc
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise MtlrecError(f"data: {path} has no column(s) {missing} (it has "
                          f"{list(frame.columns)}; schema: docs/datasets.md)")
    for col in columns:
        if not pd.api.types.is_integer_dtype(frame[col]):
            raise MtlrecError(f"data: {path}: column '{col}' must hold integer ids")
    return frame


def read_user_files(name: str, section: dict[str, Any], raw_dir: Path) -> InteractionTables:
    frame = _read_pairs(raw_dir / "interactions.csv", ("user", "item"), name)
    rating = (frame["rating"].astype(np.float32) if "rating" in frame.columns
              else pd.Series(np.ones(len(frame), np.float32)))
    interactions = pd.DataFrame({"user": frame["user"].astype(np.int64),
                                 "item": frame["item"].astype(np.int64),
                                 "rating": rating.to_numpy()})
    relations = {}
    for rel, decl in section.get("relations", {}).items():
        pairs = _read_pairs(raw_dir / f"{rel}.csv", ("a", "b"), name)
        relations[rel] = Relation(decl["side"], decl["kind"],
                                  pairs[["a", "b"]].astype(np.int64).reset_index(drop=True))
    return InteractionTables(interactions, relations)
