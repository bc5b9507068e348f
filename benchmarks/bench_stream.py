"""Out-of-core data at scale (#16): encoding and one training epoch on synthetic raw files of the
real Ali-CCP schema, peak RSS and rows/s, with ratios measured in the same run.

1. `make`: a synthetic file in torch-rechub's flattened Ali-CCP layout (the 33 columns of
   resources/ali-ccp/, ids drawn from Zipf laws of the official vocabulary sizes), written in
   chunks.
2. `encode`: mtlrec.data.stream.encode_stream (two passes, parts of `--rows-per-part` rows),
   and as the reference a plain pandas `read_csv` of the whole file + sklearn `LabelEncoder`
   per field.
3. `train`: MMOE over the streamed training split (batches from disk, prefetched), whole epochs
   until at least `--min-train-rows` rows (default 5M: one epoch at 10M rows, six at 1M).

Each measurement runs in a fresh child process so its peak RSS is its own. For every size it
prints rows/s and peak RSS; then the ratios: the stream's throughput at the largest size over the
smallest (target >= 0.9), its peak RSS at the largest size over the smallest (target ~1), and the
stream's encoding rows/s over pandas'.

    python benchmarks/bench_stream.py --rows 1000000 10000000 [--ids saturated]
        [--workdir /tmp/bench_stream]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HEADER = ["click", "purchase", "101", "121", "122", "124", "125", "126", "127", "128", "129",
          "205", "206", "207", "210", "216", "508", "509", "702", "853", "301", "109_14",
          "110_14", "127_14", "150_14", "D109_14", "D110_14", "D127_14", "D150_14", "D508",
          "D509", "D702", "D853"]
SPARSE = ["101", "121", "122", "124", "125", "126", "127", "128", "129", "205", "206", "207",
          "216", "508", "509", "702", "853", "301"]
# vocabulary sizes of the official config (spec section 6) where given, small ones otherwise
CARDINALITY = {"101": 238_635, "205": 467_298, "206": 6_929, "207": 263_942, "216": 80_232,
               "508": 5_000, "509": 300_000, "702": 100_000, "853": 50_000, "301": 3,
               "121": 98, "122": 14, "124": 3, "125": 8, "126": 4, "127": 4, "128": 3,
               "129": 5, "210": 100_000, "109_14": 10_000, "110_14": 100_000,
               "127_14": 50_000, "150_14": 20_000}
CHUNK = 500_000


SATURATED = 10_000  # --ids saturated: at most this many ids per field, drawn uniformly, so the
# smallest size already sees every id and the vocabularies (and embeddings) are the same at both


def make(path: Path, rows: int, ids: str = "zipf", seed: int = 0) -> None:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with pacsv.CSVWriter(str(path), pa.schema([(c, pa.string() if not c.startswith("D")
                                                 and c not in ("click", "purchase")
                                                 else (pa.float32() if c.startswith("D")
                                                       else pa.int8())) for c in HEADER]),
                         write_options=pacsv.WriteOptions(quoting_style="none")) as writer:
        for start in range(0, rows, CHUNK):
            n = min(CHUNK, rows - start)
            click = (rng.random(n) < 0.04).astype(np.int8)
            columns = {"click": click,
                       "purchase": (click & (rng.random(n) < 0.05)).astype(np.int8)}
            for c in HEADER[2:]:
                if c.startswith("D"):
                    columns[c] = rng.random(n).astype(np.float32)
                else:
                    if ids == "saturated":
                        drawn = rng.integers(0, min(CARDINALITY[c], SATURATED), n)
                    else:
                        drawn = (rng.zipf(1.2, n) - 1) % CARDINALITY[c]
                    columns[c] = pa.array(drawn).cast(pa.string())
            writer.write_table(pa.table(columns))


def _section(path: Path, rows_per_part: int) -> dict:
    return {"reader": "stream", "files": {"all": str(path)},
            "split_fractions": {"train": 0.9, "val": 0.05, "test": 0.05}, "split_seed": 2020,
            "sparse": SPARSE, "dense": [], "fit_encoders_on": "train", "min_count": 1,
            "tasks": {"click": {"column": "click", "equals": 1},
                      "purchase": {"column": "purchase", "equals": 1}},
            "max_rows": {}, "rows_per_part": rows_per_part}


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def phase_encode(path: Path, out: Path, rows_per_part: int) -> dict:
    from mtlrec.data.stream import encode_stream, write_stream_labels

    section = _section(path, rows_per_part)
    start = time.perf_counter()
    schema = encode_stream("synthetic", section, path.parent, out / "encoded")
    for task in section["tasks"]:
        write_stream_labels("synthetic", section, task, path.parent, out / "labels" / task)
    wall = time.perf_counter() - start
    rows = sum(schema["rows"].values())
    return {"rows": rows, "wall_s": wall, "rows_per_s": rows / wall, "peak_mib": _peak_mib()}


def phase_pandas(path: Path) -> dict:
    import pandas as pd
    from sklearn.preprocessing import LabelEncoder

    start = time.perf_counter()
    frame = pd.read_csv(path, dtype={c: str for c in SPARSE})
    for c in SPARSE:
        frame[c] = LabelEncoder().fit_transform(frame[c])
    wall = time.perf_counter() - start
    return {"rows": len(frame), "wall_s": wall, "rows_per_s": len(frame) / wall,
            "peak_mib": _peak_mib()}


def phase_train(out: Path, batch_size: int, min_rows: int) -> dict:
    import torch

    from mtlrec.data.splits import load_splits
    from mtlrec.models.layers import FeatureSpec
    from mtlrec.models.mmoe import MMOE

    torch.manual_seed(0)
    splits = load_splits(out / "encoded", ["click", "purchase"], 1, {},
                         labels_dir=out / "labels")
    model = MMOE(FeatureSpec.from_schema(splits.schema), 2, embed_dim=5, num_experts=8,
                 expert_hidden=[64], tower_hidden=[32], reg_emb=0.0, reg_dnn=0.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    rows = epochs = 0
    while epochs == 0 or rows < min_rows:  # whole epochs, at least min_rows rows in all
        for batch in splits.train.batches(batch_size, True, generator):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                model(batch.dense, batch.sparse), batch.labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            rows += len(batch)
        epochs += 1
    wall = time.perf_counter() - start
    return {"rows": rows, "epochs": epochs, "wall_s": wall, "rows_per_s": rows / wall,
            "peak_mib": _peak_mib()}


def _child(*args: str) -> dict:
    done = subprocess.run([sys.executable, __file__, "--phase", *args], capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench_stream"))
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--rows-per-part", type=int, default=200_000,
                        help="small enough that the smallest size has several parts: memory is "
                             "bounded by the parts held at once (prefetch queue, part in use)")
    parser.add_argument("--ids", choices=["zipf", "saturated"], default="zipf",
                        help="zipf: ids from Zipf laws over the official vocabulary sizes (the "
                             "vocabularies keep growing with the rows); saturated: uniform over at "
                             f"most {SATURATED:,} ids per field (the same vocabularies at every "
                             "size, so only the streaming itself can make memory grow)")
    parser.add_argument("--min-train-rows", type=int, default=5_000_000,
                        help="the train phase runs whole epochs until it has trained this many "
                             "rows, so that a small size is timed over seconds, not a warm-up")
    parser.add_argument("--no-pandas", action="store_true", help="skip the pandas reference")
    parser.add_argument("--phase", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        kind, *rest = args.phase
        result = {"make": lambda: (make(Path(rest[0]), int(rest[1]), rest[2]), {})[1],
                  "encode": lambda: phase_encode(Path(rest[0]), Path(rest[1]), int(rest[2])),
                  "pandas": lambda: phase_pandas(Path(rest[0])),
                  "train": lambda: phase_train(Path(rest[0]), int(rest[1]), int(rest[2]))}[kind]()
        print(json.dumps(result))
        return
    results = {}
    for rows in args.rows:
        folder = args.workdir / f"rows={rows}" / args.ids
        raw = folder / "raw" / "ali_ccp_synthetic.csv"
        if not raw.is_file():
            _child("make", str(raw), str(rows), args.ids)
        entry = {"encode": _child("encode", str(raw), str(folder), str(args.rows_per_part)),
                 "train": _child("train", str(folder), str(args.batch_size),
                                  str(args.min_train_rows))}
        if not args.no_pandas:
            entry["pandas"] = _child("pandas", str(raw))
        results[rows] = entry
        for name, r in entry.items():
            print(f"{rows:>11,} rows  {name:<7} {r['rows_per_s']:>11,.0f} rows/s  "
                  f"peak RSS {r['peak_mib']:>8,.0f} MiB  ({r['wall_s']:.1f} s"
                  + (f", {r['epochs']} epoch(s))" if "epochs" in r else ")"), flush=True)
    small, large = results[min(results)], results[max(results)]
    print("\nratios (same run):")
    for name in ("encode", "train"):
        print(f"  {name}: rows/s at {max(results):,} over {min(results):,} rows = "
              f"{large[name]['rows_per_s'] / small[name]['rows_per_s']:.2f} (target >= 0.9); "
              f"peak RSS ratio = {large[name]['peak_mib'] / small[name]['peak_mib']:.2f}")
    if not args.no_pandas:
        for rows, entry in results.items():
            print(f"  encode at {rows:,} rows: stream / pandas+LabelEncoder rows/s = "
                  f"{entry['encode']['rows_per_s'] / entry['pandas']['rows_per_s']:.2f}, "
                  f"peak RSS stream / pandas = "
                  f"{entry['encode']['peak_mib'] / entry['pandas']['peak_mib']:.2f}")


if __name__ == "__main__":
    main()
