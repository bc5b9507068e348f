"""Where each raw file comes from, and a verified fetch: bundled copy, local mirror, or URL.

Every file is checked against the sha256 of its *decompressed* content, so the original UCI gzip and
the recompressed copy bundled in `resources/` verify against the same hash.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

from mtlrec.errors import MtlrecError
from mtlrec.provenance import atomic_write

REPO_ROOT = Path(__file__).resolve().parents[3]
BUNDLED = REPO_ROOT / "resources"
MIRROR_ENV = "MTLREC_DATA_MIRROR"


@dataclass(frozen=True)
class RawFile:
    name: str
    url: str
    sha256_decompressed: str
    licence: str


UCI = "https://archive.ics.uci.edu/ml/machine-learning-databases/census-income-mld"
SOURCES: dict[str, dict[str, object]] = {
    "census": {
        "bundled_dir": "census-income-kdd",
        "files": [
            RawFile(
                "census-income.data.gz",
                f"{UCI}/census-income.data.gz",
                "3676a81db7d3528f3f8b9f3c699d0f0aa28db45e6e994fa0b8ed38327539ee86",
                "CC BY 4.0 (UCI ML Repository, Lane and Kohavi)",
            ),
            RawFile(
                "census-income.test.gz",
                f"{UCI}/census-income.test.gz",
                "98402b1ab879573d0a7f38a699a40258080e25e33d3401e7bf9c96d3fa0fab8c",
                "CC BY 4.0 (UCI ML Repository, Lane and Kohavi)",
            ),
        ],
    },
}


def sha256_decompressed(path: Path) -> str:
    """sha256 of the file's content after gunzip (plain files are hashed as they are)."""
    digest = hashlib.sha256()
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except (OSError, EOFError, zlib.error) as exc:
        raise MtlrecError(f"data: cannot read {path}: {exc} (corrupt or truncated; delete it "
                          "and fetch again)") from exc
    return digest.hexdigest()


def verify(path: Path, expected: str) -> None:
    actual = sha256_decompressed(path)
    if actual != expected:
        raise MtlrecError(
            f"data: checksum mismatch for {path.name}: sha256 {actual[:16]}… but expected "
            f"{expected[:16]}… (corrupt or wrong file; delete it and fetch again)"
        )


def _candidates(dataset: str, mirror: str | None) -> list[Path]:
    folders = []
    for folder, where in ((mirror, f"datasets.{dataset}.mirror"),
                          (os.environ.get(MIRROR_ENV), f"${MIRROR_ENV}")):
        if folder and not Path(folder).is_dir():
            raise MtlrecError(f"data: {where} is '{folder}', which is not a folder")
        if folder:
            folders += [Path(folder) / str(SOURCES[dataset]["bundled_dir"]), Path(folder)]
    folders.append(BUNDLED / str(SOURCES[dataset]["bundled_dir"]))
    return folders


def _download(url: str, dest: Path) -> None:
    def write(tmp: Path) -> None:
        with urllib.request.urlopen(url, timeout=60) as response, tmp.open("wb") as out:
            shutil.copyfileobj(response, out)

    try:
        atomic_write(dest, write)
    except OSError as exc:
        raise MtlrecError(f"data: download of {url} failed: {exc}") from exc


def fetch(dataset: str, out_dir: Path, mirror: str | None = None) -> list[Path]:
    """Place every raw file of `dataset` in `out_dir`, verified. Returns the file paths.

    Order of sources per file: a verified file already in `out_dir` (kept), the `mirror` folder,
    the folder in $MTLREC_DATA_MIRROR, the copy bundled with the project, then the original URL.
    """
    if dataset not in SOURCES:
        raise MtlrecError(f"data: unknown dataset '{dataset}' (known: {sorted(SOURCES)})")
    out_dir.mkdir(parents=True, exist_ok=True)
    placed = []
    for raw in SOURCES[dataset]["files"]:  # type: ignore[union-attr]
        dest = out_dir / raw.name
        if dest.exists():
            verify(dest, raw.sha256_decompressed)
        else:
            local = next((d / raw.name for d in _candidates(dataset, mirror)
                          if (d / raw.name).is_file()), None)
            if local is not None:
                verify(local, raw.sha256_decompressed)
                atomic_write(dest, lambda tmp, src=local: shutil.copyfile(src, tmp))
            else:
                _download(raw.url, dest)
                try:
                    verify(dest, raw.sha256_decompressed)
                except MtlrecError:
                    dest.unlink()
                    raise
        placed.append(dest)
    return placed


def verify_placed(dataset: str, raw_dir: Path) -> None:
    """Check the raw files already in `raw_dir` against their hashes again (the encode stage
    runs this: a file edited or truncated after the fetch is caught before it is read)."""
    for raw in SOURCES[dataset]["files"]:  # type: ignore[union-attr]
        path = raw_dir / raw.name
        if path.is_file():
            verify(path, raw.sha256_decompressed)
