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
# Tang, Gao and Liu's Epinions and Ciao (.mat, 2012), byte-identical to the copies that the first
# PMTRec author's ConsisRec repository redistributes at this commit (no licence file there; the
# original page asks for a citation: research use, so they are not bundled here).
CONSISREC = ("https://raw.githubusercontent.com/YangLiangwei/ConsisRec/"
             "d1fba6e6a96cdfdab3f505270b0deb5b50c15d45/data")
TANG_TERMS = "research use; cite Tang, Gao and Liu (WSDM 2012); not redistributed here"
# MovieLens-100K in RecBole's atomic-file layout, from the `recbole==1.2.1` wheel on the package
# index (GroupLens terms: research use, no redistribution, so not bundled): a `pip:` URL is
# fetched with `pip download` and the member is read from the wheel.
RECBOLE_WHEEL = "pip:recbole==1.2.1:recbole/dataset_example/ml-100k"
GROUPLENS_TERMS = "GroupLens MovieLens terms: research use, cite Harper and Konstan 2015"
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
    "epinions": {
        "bundled_dir": "epinions",
        "files": [
            RawFile("rating.mat", f"{CONSISREC}/epinions/rating.mat",
                    "4fe1dd12896dbfc3d2b3e696c749947382d9725add4545cb6c44ee11c8e22159", TANG_TERMS),
            RawFile("trustnetwork.mat", f"{CONSISREC}/epinions/trustnetwork.mat",
                    "9cd648ab98c2e02799bfed0ae186dbc8736e97178d18bf471cc168770f39cf0a", TANG_TERMS),
            RawFile("category.txt", f"{CONSISREC}/epinions/category.txt",
                    "45c8d398a53e6d8eff36aaf237e717b37a1b61cae8ab8c484c9b7c0fb7bfeaaa", TANG_TERMS),
        ],
    },
    "ciao": {
        "bundled_dir": "ciao",
        "files": [
            RawFile("rating.mat", f"{CONSISREC}/ciao/rating.mat",
                    "aa793568686285a93286ba9e56954fcce347370ad2e58c785760362ab12d2c2c", TANG_TERMS),
            RawFile("trustnetwork.mat", f"{CONSISREC}/ciao/trustnetwork.mat",
                    "0a8963ed22e6b534ce8d14e478f54ce0af6f5a3440a67ed5a35e62486580ce3a", TANG_TERMS),
            RawFile("category.txt", f"{CONSISREC}/ciao/category.txt",
                    "6a1ee8366ac861c73046ec3f670012436bdf0d08f61015baffc833af74811393", TANG_TERMS),
        ],
    },
    "movielens-100k": {
        "bundled_dir": "movielens-100k",
        "files": [
            RawFile("ml-100k.inter", f"{RECBOLE_WHEEL}/ml-100k.inter",
                    "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
                    GROUPLENS_TERMS),
            RawFile("ml-100k.item", f"{RECBOLE_WHEEL}/ml-100k.item",
                    "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
                    GROUPLENS_TERMS),
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


def _from_wheel(url: str, dest: Path) -> None:
    """`pip:<requirement>:<folder in the wheel>/<file>`: the file out of that wheel, downloaded
    with the ordinary pip client (its configured index)."""
    import subprocess
    import sys
    import tempfile
    import zipfile

    _, requirement, member = url.split(":", 2)
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                               "--only-binary=:all:", "-d", tmp, requirement],
                              capture_output=True, text=True)
        wheels = sorted(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            raise MtlrecError(f"data: pip download {requirement} failed (for {dest.name}): "
                              f"{(done.stderr.strip().splitlines() or ['no wheel'])[-1]}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            try:
                data = wheel.read(member)
            except KeyError:
                raise MtlrecError(f"data: {wheels[0].name} has no {member}") from None
    atomic_write(dest, lambda tmp_path: tmp_path.write_bytes(data))


def _download(url: str, dest: Path) -> None:
    if url.startswith("pip:"):
        _from_wheel(url, dest)
        return

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
