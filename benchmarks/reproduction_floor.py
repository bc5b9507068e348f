"""How fast could the committed Census reproduction be? Its FLOPs against the machine's ceiling.

For every committed run (runs/<dataset>/<run>/seed=<s>/metrics.json) this counts the FLOPs it did:
epochs run x (training rows x FLOPs of one training sample, forward + backward of the model's own
`train_step`, counted with torch.utils.flop_counter) + the per-epoch validation forward. IMP mask
runs (masks.json) count their warm-up and every pruning iteration. MPT-Rec's E-step passes and the
t-SNE are left out (a few %). The floor is the time these FLOPs take at the fp32 matmul ceiling
measured in this run (the higher of torch.mm's MKL and oneDNN), one thread per job, `--jobs` jobs
side by side (as `snakemake --cores all` runs them); the ratio is the runs' summed wall time
(timing.json) over that floor.

Usage: python benchmarks/reproduction_floor.py [--runs runs] [--dataset census] [--jobs 2]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from bench_throughput import counted_flops, fp32_ceiling  # the throughput bench's measures

from mtlrec.config import load_params, resolve_model
from mtlrec.data.batches import TensorSplit
from mtlrec.data.splits import load_splits
from mtlrec.models import build_model
from mtlrec.models.layers import Batch, FeatureSpec, StepInfo
from mtlrec.train.loop import prepare_training, train_step
from mtlrec.train.objectives import BinaryCrossEntropy

REPO = Path(__file__).resolve().parents[1]
BATCH = 256


def per_sample_flops(model, data: TensorSplit) -> tuple[float, float]:
    """(FLOPs of one training sample through train_step, FLOPs of one inference sample)."""
    prepare_training(model, len(data))
    idx = slice(0, BATCH)
    piece = Batch(data.dense[idx], data.sparse[idx], data.labels[idx], data.row_id[idx])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    train = counted_flops(lambda: train_step(model, piece, StepInfo(1, 0, 1, 1, BATCH),
                                             BinaryCrossEntropy(), optimizer))
    with torch.no_grad():
        infer = counted_flops(lambda: model(piece.dense, piece.sparse))
    return train / BATCH, infer / BATCH


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=REPO / "runs")
    parser.add_argument("--data", type=Path, default=REPO / "data" / "encoded" / "census")
    parser.add_argument("--dataset", default="census")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    params = load_params([REPO / "params.yaml"])
    experiment = params["experiments"][args.dataset]
    splits = load_splits(args.data, experiment["tasks"], 1,
                         params["datasets"][experiment["dataset"]]["split"])
    features = FeatureSpec.from_schema(splits.schema)
    n_tasks = len(splits.tasks)

    rows, total_flops, total_wall = [], 0.0, 0.0
    for run_dir in sorted(p for p in (args.runs / args.dataset).iterdir() if p.is_dir()):
        seeds = sorted(run_dir.glob("seed=*"))
        if run_dir.name == "masks":
            model = build_model("sparse_sharing", features, n_tasks,
                                {**params["pruning"]["network"], "masked_update": "exact"})
            model.active_tasks = (0,)
            one_task, infer = per_sample_flops(model, splits.train)
            warm = build_model("shared_bottom", features, n_tasks, params["pruning"]["network"])
            warm_train, _ = per_sample_flops(warm, splits.train)
            flops = wall = 0.0
            for seed in seeds:
                report = json.loads((seed / "masks.json").read_text())
                pruning = report["params"]["pruning"]
                iterations = sum(len(h) for h in report["history"].values())
                flops += (pruning["warmup_epochs"] * len(splits.train) * warm_train
                          + iterations * (pruning["epochs_per_iteration"] * len(splits.train)
                                          * one_task + len(splits.val) * infer))
                wall += json.loads((seed / "timing.json").read_text())["wall_time_s"]
        else:
            model_name, hparams = resolve_model(params, run_dir.name)
            model = build_model(model_name, features, n_tasks, hparams)
            train, infer = per_sample_flops(model, splits.train)
            flops = wall = 0.0
            for seed in seeds:
                metrics = json.loads((seed / "metrics.json").read_text())
                epochs, n = metrics["epochs_run"], metrics["rows"]
                flops += epochs * (n["train"] * train + n["val"] * infer) + n["test"] * infer
                wall += json.loads((seed / "timing.json").read_text())["wall_time_s"]
        rows.append((run_dir.name, len(seeds), flops, wall))
        total_flops += flops
        total_wall += wall

    gflops, by_kernel = fp32_ceiling(repeats=3)
    print(f"fp32 matmul ceiling, 1 thread: {gflops:.1f} GFLOP/s ("
          + ", ".join(f"{k} {v:.1f}" for k, v in by_kernel.items())
          + f"); {args.jobs} jobs side by side")
    print(f"{'run':18} {'seeds':>5} {'TFLOP':>8} {'floor s':>8} {'wall s':>8} {'wall/floor':>10}")
    for name, n_seeds, flops, wall in rows:
        floor = flops / (gflops * 1e9)
        print(f"{name:18} {n_seeds:5d} {flops / 1e12:8.2f} {floor:8.0f} {wall:8.0f} "
              f"{wall / floor:10.2f}")
    floor = total_flops / (gflops * 1e9)
    print(f"{'all':18} {'':5} {total_flops / 1e12:8.2f} {floor:8.0f} {total_wall:8.0f} "
          f"{total_wall / floor:10.2f}")
    print(f"with {args.jobs} jobs side by side: floor {floor / args.jobs / 60:.1f} min of wall "
          f"time at 100 % of the ceiling; the runs' own time {total_wall / args.jobs / 60:.1f} min")


if __name__ == "__main__":
    main()
