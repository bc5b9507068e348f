"""One training run (an experiment, a model, a seed) from encoded data to a checkpoint and a
metrics file."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from mtlrec.config import dropped_inputs, experiment_section, run_model, run_tasks, section
from mtlrec.data.splits import default_labels_dir, label_files
from mtlrec.errors import MtlrecError
from mtlrec.evaluate.metrics import get_metric
from mtlrec.models import build_model
from mtlrec.models.layers import FeatureSpec
from mtlrec.provenance import check_writable, provenance, save_torch_atomic, write_json_atomic
from mtlrec.train.loop import TrainConfig, evaluate, fit
from mtlrec.train.objectives import get_objective
from mtlrec.train.pruning import load_masks
from mtlrec.train.resume import fingerprint
from mtlrec.train.setup import start_run

RESUME_FILE = "resume.pt"


def run_training(params: dict[str, Any], experiment: str, run_name: str, seed: int,
                 data_dir: Path, out_dir: Path, masks: Path | None = None,
                 labels_dir: Path | None = None, tuning: dict[str, Any] | None = None
                 ) -> dict[str, Any]:
    """Train the model or variant `run_name` of `experiment` with `seed`; write
    out_dir/{model.pt, metrics.json, timing.json}.

    `params` are the ones the run trains with: for a tuned experiment, a grid point's
    (mtlrec.train.tuning.tuned_params), whose record `tuning` (the point and its values) goes
    into metrics.json.

    Reads params sections `train`, `runtime`, `display`, `experiments.<experiment>`, the split of
    its dataset and `models.<model>` (plus `variants.<run_name>` for a variant) only. Models that
    train on subnetwork masks (Sparse Sharing, CSRec) read them from `masks` (masks.pt of
    `mtlrec masks`, made with the same seed). Returns the metrics dict (also written to
    metrics.json, byte-identical for identical inputs).
    """
    train_params = section(params, "train")
    runtime = section(params, "runtime")
    exp = experiment_section(params, experiment)
    split = params["datasets"][exp["dataset"]].get("split", {})  # none: fixed streamed splits
    objective, metric = get_objective(exp["objective"]), get_metric(exp["metric"])
    model_name, hparams = run_model(params, run_name)
    tasks = run_tasks(params, experiment, run_name)
    labels_dir = labels_dir or default_labels_dir(data_dir)
    check_writable(out_dir)  # a read-only or full output folder fails now, not after an epoch
    started = time.perf_counter()
    splits, device = start_run(runtime, seed, data_dir, tasks, split,
                               dropped_inputs(params, experiment), labels_dir)
    model = build_model(model_name, FeatureSpec.from_schema(splits.schema), len(splits.tasks),
                        hparams).to(device)
    if model.needs_masks:
        if masks is None:
            raise MtlrecError(f"{run_name} trains on subnetwork masks: pass --masks (masks.pt)")
        model.load_masks([m.to(device) for m in load_masks(masks, splits.tasks)])
    cfg = TrainConfig.from_params(train_params, params.get("display"))
    key = resume_key(params, experiment, run_name, model_name, seed, data_dir, masks,
                     label_files(labels_dir, tasks))
    state = fit(model, splits, cfg, seed, objective, metric, resume_path=out_dir / RESUME_FILE,
                label=f"{run_name} seed={seed}", resume_key=key)
    test_scores = evaluate(model, splits.test, cfg.eval_batch_size, objective, metric)
    best = state.history[state.best_epoch - 1]

    metrics = {
        "model": run_name,
        "experiment": experiment,
        "dataset": splits.schema.get("dataset", "unknown"),
        "seed": seed,
        "tasks": splits.tasks,
        "objective": objective.name,
        "metric": metric.name,
        f"test_{metric.name}": dict(zip(splits.tasks, test_scores, strict=True)),
        f"val_{metric.name}": dict(zip(splits.tasks, best[f"val_{metric.name}"], strict=True)),
        "best_epoch": state.best_epoch,
        "epochs_run": state.epoch,
        "stopped_early": state.stopped_early,
        "num_params": sum(p.numel() for p in model.parameters()),
        "rows": {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)},
        "curves": state.history,
        "params": {"train": train_params, "runtime": runtime,
                   f"experiments.{experiment}": exp,
                   f"datasets.{exp['dataset']}.split": split,
                   f"models.{model_name}": hparams},
        "provenance": provenance(device, runtime["num_threads"]),
    }
    if tuning is not None:
        metrics["tuning"] = tuning
    if splits.schema["dropped_inputs"]:
        metrics["dropped_inputs"] = splits.schema["dropped_inputs"]
    if run_name.removeprefix("full-") != model_name:
        metrics["variant_of"] = model_name
    if model.needs_masks:
        metrics["mask_prune_rate"] = dict(zip(splits.tasks, model.prune_rates(), strict=True))
    wall = time.perf_counter() - started + state.carried_seconds  # + interrupted processes
    save_torch_atomic(out_dir / "model.pt", model.state_dict())
    write_json_atomic(out_dir / "timing.json", {
        "wall_time_s": round(wall, 3),
        "train_samples_per_s": round(state.epoch * len(splits.train) / wall, 1),
    })
    write_json_atomic(out_dir / "metrics.json", metrics)
    (out_dir / RESUME_FILE).unlink(missing_ok=True)
    return metrics



def resume_key(params: dict[str, Any], experiment: str, run_name: str, model_name: str,
               seed: int, data_dir: Path, masks: Path | None, labels: list[Path]) -> str:
    """A fingerprint of everything that decides a training run: the params its stage tracks, the
    seed, the encoded files, its tasks' labels, the masks and the source files of its code."""
    from mtlrec.workflow import run_keys

    files = [*sorted(data_dir.glob("*.parquet")), data_dir / "schema.json", *labels]
    files += [masks] if masks is not None else []
    return fingerprint(params, run_keys(params, experiment, run_name), files, "train",
                       (model_name,), run=run_name, seed=seed, experiment=experiment)
