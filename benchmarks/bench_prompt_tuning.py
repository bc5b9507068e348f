"""Prompt tuning against full retraining: the wall time of learning a new task two ways, measured
in one run on the same machine and data (MPT-Rec paper section 4.3.2; issue target: >= 20x).

- full: MPT-Rec trained on all three tasks (T1, T2 and the new task), as `full-mptrec` runs;
- prompt: the NewTask head on the frozen two-task MPT-Rec, as `newtask-prompt` runs: the frozen
  backbone's features computed once (timed), then the head's epochs on them.

Both go through the pipeline's own training loop (`fit`: batches, Adam, validation each epoch)
for `--epochs` epochs without early stopping, one thread. Printed: seconds per epoch of each, the
one-off feature cache, and the ratios full / prompt (i) per epoch, (ii) for the same number of
epochs, and (iii) for the epochs the committed runs took to converge (their metrics.json, when
present): the wall time a user saves.

Usage: python benchmarks/bench_prompt_tuning.py [--epochs 2] [--experiment census_education]
       (needs data/encoded/<dataset> and data/labels/<dataset>: `snakemake --cores all
       data/encoded/census/schema.json` and the labels stages, or one pipeline run)
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from mtlrec.config import dropped_inputs, load_params, resolve_model
from mtlrec.data.splits import load_splits
from mtlrec.evaluate.metrics import get_metric
from mtlrec.kernels import cpu_linear, set_cpu_linear
from mtlrec.models import build_model
from mtlrec.models.layers import FeatureSpec
from mtlrec.newtask import NewTaskModel, cache_features
from mtlrec.newtask.prompt import PromptHead
from mtlrec.provenance import set_seed
from mtlrec.train.loop import TrainConfig, fit
from mtlrec.train.objectives import get_objective

REPO = Path(__file__).resolve().parents[1]


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def converged_epochs(runs: Path, experiment: str, run: str) -> float | None:
    """Mean epochs the committed runs of `run` took (early stopping included), if present."""
    files = sorted((runs / experiment / run).glob("seed=*/metrics.json"))
    if not files:
        return None
    return statistics.fmean(json.loads(f.read_text())["epochs_run"] for f in files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="census_education")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--runs", type=Path, default=REPO / "runs")
    parser.add_argument("--kernels", default=None, help="runtime.cpu_linear (default: params')")
    args = parser.parse_args()
    params = load_params([REPO / "params.yaml"])
    torch.set_num_threads(params["runtime"]["num_threads"])
    set_cpu_linear(args.kernels or params["runtime"]["cpu_linear"])
    exp = params["experiments"][args.experiment]
    data = REPO / "data" / "encoded" / exp["dataset"]
    tasks = [*exp["tasks"], exp["new_task"]]
    seed = params["train"]["seeds"][0]
    splits = load_splits(data, tasks, seed, params["datasets"][exp["dataset"]]["split"],
                         dropped_inputs(params, args.experiment))
    features = FeatureSpec.from_schema(splits.schema)
    cfg = TrainConfig.from_params({**params["train"], "epochs": args.epochs,
                                   "patience": args.epochs}, {"progress": False})
    objective, metric = get_objective(exp["objective"]), get_metric(exp["metric"])
    _, hparams = resolve_model(params, "mptrec")

    set_seed(seed)
    full = build_model("mptrec", features, len(tasks), hparams)
    full_s = timed(lambda: fit(full, splits, cfg, seed, objective, metric)) / args.epochs

    set_seed(seed)
    backbone = build_model("mptrec", features, len(exp["tasks"]), hparams).eval()
    checkpoint = args.runs / args.experiment / "mptrec" / f"seed={seed}" / "model.pt"
    if checkpoint.is_file():  # the pipeline's backbone when present (timing is the same)
        backbone.load_state_dict(torch.load(checkpoint, weights_only=True))
    backbone.requires_grad_(False)
    holder = {}
    cache_s = timed(lambda: holder.update(cached=cache_features(
        PromptHead, backbone, splits, len(exp["tasks"]), cfg.batch_size, cfg.eval_batch_size)))
    head = PromptHead(backbone, hparams["tower_hidden"], hparams["reg_dnn"],
                      **params["new_task"]["prompt"])
    prompt_s = timed(lambda: fit(NewTaskModel(head), holder["cached"], cfg, seed, objective,
                                 metric)) / args.epochs

    e = args.epochs
    print(f"train rows {len(splits.train)}, threads {torch.get_num_threads()}, "
          f"kernels {cpu_linear()}, {e} epoch(s) each")
    print(f"full 3-task MPT-Rec:  {full_s:7.2f} s/epoch")
    print(f"prompt tuning:        {prompt_s:7.2f} s/epoch + {cache_s:.2f} s feature cache (once)")
    print(f"ratio per epoch:                 {full_s / prompt_s:6.1f}x")
    print(f"ratio for {e} epoch(s) each:       {full_s * e / (cache_s + prompt_s * e):6.1f}x")
    full_epochs = converged_epochs(args.runs, args.experiment, "full-mptrec")
    prompt_epochs = converged_epochs(args.runs, args.experiment, "newtask-prompt")
    if full_epochs and prompt_epochs:
        ratio = full_s * full_epochs / (cache_s + prompt_s * prompt_epochs)
        print(f"ratio at the committed runs' epochs (full {full_epochs:.1f}, prompt "
              f"{prompt_epochs:.1f}): {ratio:6.1f}x   (target >= 20x)")
    else:
        print("(no committed runs of full-mptrec / newtask-prompt: converged ratio not shown)")


if __name__ == "__main__":
    main()
