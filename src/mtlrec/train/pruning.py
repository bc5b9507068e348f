"""Per-task subnetwork masks by iterative magnitude pruning (IMP), for Sparse Sharing and CSRec.

The procedure of the official mask scripts (docs/spec/mptrec.md 5.1), Sun et al. AAAI 2020:

    warm up the K-task Shared Bottom for `warmup_epochs` epochs (joint loss)
    for each task k:
        mask = all ones
        for iteration i = 0 .. iterations-1:
            if i > 0: prune `rate` of the surviving weights of every bottom matrix, smallest |w|
                      of the weights trained in iteration i-1
            rewind to the warm-up weights, apply the mask
            train task k alone for `epochs_per_iteration` epochs (masked gradients); val AUC of k
        keep the mask chosen by `selection`

`selection: best_val` (default, what the method intends): the iteration with the best validation
AUC among those that pruned more than `min_prune_rate`. `selection: last` mirrors the official
code, whose `best_mask = cur_mask` aliases a dict that later iterations mutate, so the saved mask
is the last one (spec section 8, #13). Output: masks.pt (one [K, out, in] 0/1 tensor per bottom
Linear) and masks.json (per task and iteration: prune rate, val AUC; the chosen iteration).
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from mtlrec.config import dropped_inputs, experiment_section, section
from mtlrec.data.splits import default_labels_dir, label_files
from mtlrec.errors import MtlrecError
from mtlrec.evaluate.metrics import get_metric
from mtlrec.models.layers import FeatureSpec
from mtlrec.models.shared_bottom import SharedBottom
from mtlrec.models.sparse_sharing import SparseSharing, prune_rate
from mtlrec.provenance import check_writable, provenance, save_torch_atomic, write_json_atomic
from mtlrec.train.loop import TrainConfig, evaluate, make_optimizer, on_terminal, train_epoch
from mtlrec.train.objectives import get_objective
from mtlrec.train.resume import fingerprint, load_checked
from mtlrec.train.setup import start_run
from mtlrec.workflow import run_keys

MASKS_FILE = "masks.pt"
RESUME_FILE = "resume.pt"  # the warm-up state and the tasks finished so far
REPORT_FILE = "masks.json"


def prune_smallest(weight: torch.Tensor, mask: torch.Tensor, rate: float) -> torch.Tensor:
    """A new mask: `mask` minus round(rate * survivors) of its surviving entries with the smallest
    |weight| (ties broken by position, so the result is deterministic)."""
    survivors = mask.bool().flatten()
    n_prune = round(rate * int(survivors.sum()))
    if n_prune == 0:
        return mask.clone()
    magnitude = weight.detach().abs().flatten().masked_fill(~survivors, float("inf"))
    order = torch.argsort(magnitude, stable=True)
    pruned = mask.clone().flatten()
    pruned[order[:n_prune]] = 0
    return pruned.view_as(mask)


def choose_iteration(history: list[dict[str, Any]], selection: str,
                     min_prune_rate: float, score_key: str = "val_auc") -> int:
    """The index of the kept iteration: `last`, or `best_val` among those pruned > min_prune_rate
    (the most pruned one if none is)."""
    if selection == "last":
        return len(history) - 1
    eligible = [i for i, h in enumerate(history) if h["prune_rate"] > min_prune_rate]
    if not eligible:
        return len(history) - 1
    return max(eligible, key=lambda i: (history[i][score_key], -i))


def _task_masks(model: SparseSharing, task: int, warm_state: dict[str, torch.Tensor], splits,
                cfg: TrainConfig, seed: int, pruning: dict[str, Any], objective: Any,
                metric: Any) -> tuple[list, list]:
    """IMP for one task; returns (the kept masks, one [out, in] per layer, the history)."""
    masks = [torch.ones_like(layer.weight) for layer in model.masked_layers()]
    history, kept = [], []
    device = splits.train.device
    for iteration in tqdm(range(pruning["iterations"]), desc=f"pruning task {task}",
                          disable=not (cfg.progress and on_terminal())):
        if iteration > 0:
            masks = [prune_smallest(layer.weight, mask, pruning["rate"])
                     for layer, mask in zip(model.masked_layers(), masks, strict=True)]
        rewound = model.load_state_dict(warm_state, strict=False)  # masks are set below
        if rewound.unexpected_keys or any(not k.startswith("mask_") for k in rewound.missing_keys):
            raise RuntimeError(f"IMP rewind does not fit the masked model: {rewound}")
        for buffer, mask in zip(model.masks(), masks, strict=True):
            buffer.fill_(1.0)
            buffer[task] = mask
        model.active_tasks = (task,)
        optimizer = make_optimizer(model, cfg.lr, device)
        generator = torch.Generator().manual_seed(seed + iteration)
        for epoch in range(1, pruning["epochs_per_iteration"] + 1):
            train_epoch(model, optimizer, splits, cfg, generator, epoch, objective)
        val_scores = evaluate(model, splits.val, cfg.eval_batch_size, objective, metric)
        history.append({"iteration": iteration, "prune_rate": prune_rate(masks),
                        f"val_{metric.name}": val_scores[task]})
        kept.append([m.clone() for m in masks])
        if cfg.progress and not on_terminal():  # a log file: one plain line each
            last = history[-1]
            print(f"pruning task {task}: iteration {iteration} pruned {last['prune_rate']:.1%} "
                  f"val {metric.name} {last[f'val_{metric.name}']:.4f}", file=sys.stderr,
                  flush=True)
    chosen = choose_iteration(history, pruning["selection"], pruning["min_prune_rate"],
                              f"val_{metric.name}")
    return kept[chosen], [{**h, "kept": i == chosen} for i, h in enumerate(history)]


def find_masks(params: dict[str, Any], experiment: str, seed: int, data_dir: Path,
               out_dir: Path, labels_dir: Path | None = None) -> dict[str, Any]:
    """Run IMP for every task of `experiment` with `seed`; write out_dir/{masks.pt, masks.json}.

    Reads params sections `pruning`, `train` (batch sizes, lr), `runtime`, `display`,
    `experiments.<experiment>` (tasks, objective, metric) and its dataset's split.
    """
    pruning = section(params, "pruning")
    train_params = section(params, "train")
    runtime = section(params, "runtime")
    exp = experiment_section(params, experiment)
    split = params["datasets"][exp["dataset"]].get("split", {})  # none: fixed streamed splits
    objective, metric = get_objective(exp["objective"]), get_metric(exp["metric"])
    check_writable(out_dir)
    started = time.perf_counter()
    labels_dir = labels_dir or default_labels_dir(data_dir)
    splits, device = start_run(runtime, seed, data_dir, exp["tasks"], split,
                               dropped_inputs(params, experiment), labels_dir)
    features = FeatureSpec.from_schema(splits.schema)
    num_tasks = len(splits.tasks)
    warmup = SharedBottom(features, num_tasks, **pruning["network"]).to(device)
    cfg = TrainConfig.from_params(train_params, params.get("display"))
    resume_path = out_dir / RESUME_FILE
    key = fingerprint(params, run_keys(params, experiment, None),
                      [*sorted(data_dir.glob("*.parquet")), data_dir / "schema.json",
                       *label_files(labels_dir, exp["tasks"])], "masks",
                      seed=seed, experiment=experiment)
    saved = load_checked(resume_path, key, f"masks seed={seed}")
    carried = saved.get("seconds", 0.0) if saved is not None else 0.0  # interrupted processes'
    if saved is None:  # warm up (no RNG draws: a resumed run skips it with the same state)
        optimizer = make_optimizer(warmup, cfg.lr, device)
        generator = torch.Generator().manual_seed(seed)
        for epoch in range(1, pruning["warmup_epochs"] + 1):
            train_epoch(warmup, optimizer, splits, cfg, generator, epoch, objective)
        saved = {"key": key, "warm_state": copy.deepcopy(warmup.state_dict()), "done": [],
                 "seconds": time.perf_counter() - started}
        save_torch_atomic(resume_path, saved)
    else:
        print(f"mtlrec: masks seed={seed}: resuming after the warm-up and {len(saved['done'])} "
              f"of {num_tasks} task(s)", file=sys.stderr)
    warm_state = {k: v.to(device) for k, v in saved["warm_state"].items()}

    model = SparseSharing(features, num_tasks, **pruning["network"]).to(device)
    per_task, report = [], {}
    for task, name in enumerate(splits.tasks):
        if task < len(saved["done"]):  # finished before an interruption
            masks = [m.to(device) for m in saved["done"][task]["masks"]]
            history = saved["done"][task]["history"]
        else:
            masks, history = _task_masks(model, task, warm_state, splits, cfg, seed, pruning,
                                         objective, metric)
            saved["done"].append({"masks": [m.cpu() for m in masks], "history": history})
            saved["seconds"] = carried + time.perf_counter() - started
            save_torch_atomic(resume_path, saved)
        per_task.append(masks)
        report[name] = history
    stacked = [torch.stack(layer).cpu() for layer in zip(*per_task, strict=True)]  # [K, out, in]

    result = {
        "seed": seed,
        "tasks": splits.tasks,
        "layers": [list(m.shape[1:]) for m in stacked],
        "history": report,
        "kept_prune_rate": {name: prune_rate([m[k] for m in stacked])
                            for k, name in enumerate(splits.tasks)},
        "overlap_share": float(sum(m.prod(0).sum() for m in stacked)
                               / sum(m[0].numel() for m in stacked)),
        "params": {"pruning": pruning, "train": train_params, "runtime": runtime,
                   f"experiments.{experiment}": exp,
                   f"datasets.{exp['dataset']}.split": split},
        "provenance": provenance(device, runtime["num_threads"]),
    }
    save_torch_atomic(out_dir / MASKS_FILE, {"tasks": splits.tasks, "masks": stacked})
    write_json_atomic(out_dir / REPORT_FILE, result)
    write_json_atomic(out_dir / "timing.json",
                      {"wall_time_s": round(carried + time.perf_counter() - started, 3)})
    resume_path.unlink(missing_ok=True)
    return result


def load_masks(path: Path, tasks: list[str]) -> list[torch.Tensor]:
    """The masks of masks.pt, checked against the run's tasks."""
    if not path.is_file():
        raise MtlrecError(f"masks: {path} not found (run `mtlrec masks` first)")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload["tasks"] != tasks:
        raise MtlrecError(f"masks: {path} is for tasks {payload['tasks']}, the run has {tasks}")
    return payload["masks"]
