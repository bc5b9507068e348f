"""One new-task run (stage 2): a pre-trained run of an experiment, frozen, and a method that
learns the experiment's new task on it; test score, cost and the existing tasks' scores.

    runs/<experiment>/newtask-<method>/seed=<s>/{model.pt, metrics.json, timing.json}

Reads params sections `train`, `runtime`, `display`, `experiments.<experiment>`, its dataset's
split, `new_task.methods.<method>` (+ `new_task.<kind>` for a head's defaults) and the backbone's
`models.<model>` (+ `variants.<run>`) section only.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import torch

from mtlrec.config import (
    dropped_inputs,
    experiment_section,
    resolve_model,
    run_model,
    section,
)
from mtlrec.data.splits import Splits, default_labels_dir, label_files
from mtlrec.errors import MtlrecError
from mtlrec.evaluate.metrics import get_metric
from mtlrec.models import build_model
from mtlrec.models.layers import FeatureSpec, MultiTaskModel
from mtlrec.newtask import FINETUNE_ALL, HEADS, NewTaskModel, cache_features, method_spec
from mtlrec.newtask.cost import count_params, multiply_adds
from mtlrec.provenance import check_writable, provenance, save_torch_atomic, write_json_atomic
from mtlrec.train.loop import TrainConfig, evaluate, fit, prepare_training
from mtlrec.train.objectives import get_objective
from mtlrec.train.resume import fingerprint, sha256_file
from mtlrec.train.setup import start_run

RESUME_FILE = "resume.pt"


def state_digest(model: torch.nn.Module) -> str:
    """sha256 over every parameter and buffer of `model` (names and exact bytes)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if isinstance(tensor, torch.Tensor):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def load_backbone(params: dict[str, Any], backbone_run: str, splits: Splits, num_tasks: int,
                  checkpoint: Path, device: torch.device) -> tuple[str, MultiTaskModel]:
    """The pre-trained run's model (its registered name and the model, weights loaded, frozen)."""
    if not checkpoint.is_file():
        raise MtlrecError(f"new task: pre-trained checkpoint {checkpoint} not found; train "
                          f"run '{backbone_run}' first")
    model_name, hparams = resolve_model(params, backbone_run)
    model = build_model(model_name, FeatureSpec.from_schema(splits.schema), num_tasks, hparams)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise MtlrecError(f"new task: {checkpoint} does not fit run '{backbone_run}' on these "
                          f"inputs ({str(exc).splitlines()[0]}); was it pre-trained with the new "
                          "task's column removed?") from exc
    model.to(device).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model_name, model


def build_new_task_model(params: dict[str, Any], spec: dict[str, Any], backbone_name: str,
                         backbone: MultiTaskModel, features: FeatureSpec
                         ) -> tuple[MultiTaskModel, list[torch.nn.Module], type | None]:
    """(the model the loop trains, its trained modules, the head class or None)."""
    kind = spec["kind"]
    _, backbone_hparams = resolve_model(params, spec["backbone"])
    if kind == FINETUNE_ALL:
        model = build_model(backbone_name, features, 1, backbone_hparams)
        model.load_state_dict(backbone.state_dict())
        model.combiner = "sum"  # the new task trains by plain steps (MAML's meta-steps are over)
        return model, [model], None
    head_cls = HEADS[kind]
    if backbone_name not in head_cls.backbone_models:
        raise MtlrecError(f"new task: a '{kind}' head needs a backbone of "
                          f"{list(head_cls.backbone_models)}, '{spec['backbone']}' is "
                          f"{backbone_name}")
    options = {**params["new_task"].get(kind, {}), **spec["set"]}
    head = head_cls(backbone, tower_hidden=backbone_hparams["tower_hidden"],
                    reg_dnn=backbone_hparams["reg_dnn"], **options)
    return NewTaskModel(head), head.trained_modules(), head_cls


def run_new_task(params: dict[str, Any], experiment: str, method: str, seed: int,
                 data_dir: Path, backbone_dir: Path, out_dir: Path,
                 labels_dir: Path | None = None, drop_fields: list[str] | None = None
                 ) -> dict[str, Any]:
    """Learn the new task of `experiment` by `method` on the pre-trained run in `backbone_dir`
    (its seed's model.pt); write out_dir/{model.pt, metrics.json, timing.json}. The inputs are
    the experiment's (its tasks' label columns removed) or, given, all but `drop_fields`."""
    train_params = section(params, "train")
    runtime = section(params, "runtime")
    exp = experiment_section(params, experiment)
    if not exp.get("new_task"):
        raise MtlrecError(f"new task: experiments.{experiment} declares no new_task")
    spec = method_spec(params, method)
    split = params["datasets"][exp["dataset"]].get("split", {})  # none: fixed streamed splits
    objective, metric = get_objective(exp["objective"]), get_metric(exp["metric"])
    tasks = [*exp["tasks"], exp["new_task"]]
    labels_dir = labels_dir or default_labels_dir(data_dir)
    check_writable(out_dir)
    started = time.perf_counter()
    if drop_fields is None:
        drop_fields = dropped_inputs(params, experiment)
    splits, device = start_run(runtime, seed, data_dir, tasks, split, drop_fields, labels_dir)
    checkpoint = backbone_dir / "model.pt"
    backbone_name, backbone = load_backbone(params, spec["backbone"], splits, len(exp["tasks"]),
                                            checkpoint, device)
    before = state_digest(backbone)
    cfg = TrainConfig.from_params(train_params, params.get("display"))
    # what stage 2 leaves unchanged: the frozen backbone's scores (a method that trains every
    # weight, MAML, changes the network itself: no such scores)
    existing = (None if spec["kind"] == FINETUNE_ALL
                else _existing_scores(backbone, splits, cfg, objective, metric))
    features = FeatureSpec.from_schema(splits.schema)
    model, trained, head_cls = build_new_task_model(params, spec, backbone_name, backbone,
                                                    features)
    model.to(device)
    new = len(exp["tasks"])
    cache_started = time.perf_counter()
    if head_cls is None:
        train_splits = _only_task(splits, new)
    else:
        train_splits = cache_features(head_cls, backbone, splits, new, cfg.batch_size,
                                      cfg.eval_batch_size)
    cache_seconds = time.perf_counter() - cache_started
    key = fingerprint(params, _keys(params, experiment, method), [
        *sorted(data_dir.glob("*.parquet")), data_dir / "schema.json", checkpoint,
        *label_files(labels_dir, tasks)], "newtask", (backbone_name,), method=method, seed=seed,
        experiment=experiment)
    state = fit(model, train_splits, cfg, seed, objective, metric,
                resume_path=out_dir / RESUME_FILE, label=f"{method} seed={seed}", resume_key=key)
    test = evaluate(model, train_splits.test, cfg.eval_batch_size, objective, metric)[0]
    if state_digest(backbone) != before:
        raise MtlrecError("new task: the frozen backbone changed during training (a bug)")
    cost = _cost(params, spec, model, trained, train_splits, features, len(tasks),
                 cfg.batch_size, device, objective)
    best = state.history[state.best_epoch - 1]
    name = metric.name
    metrics = {
        "method": method, "kind": spec["kind"], "backbone": spec["backbone"],
        "experiment": experiment, "dataset": splits.schema.get("dataset", "unknown"),
        "seed": seed, "new_task": exp["new_task"], "tasks": exp["tasks"],
        "objective": objective.name, "metric": name,
        f"test_{name}": {exp["new_task"]: test},
        f"val_{name}": {exp["new_task"]: best[f"val_{name}"][0]},
        f"existing_test_{name}": existing,
        "backbone_sha256": sha256_file(checkpoint),
        "backbone_state_unchanged": True,
        "best_epoch": state.best_epoch, "epochs_run": state.epoch,
        "stopped_early": state.stopped_early,
        "dropped_inputs": splits.schema["dropped_inputs"],
        "cost": cost,
        "rows": {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)},
        "curves": state.history,
        "params": {"train": train_params, "runtime": runtime,
                   f"experiments.{experiment}": exp, f"datasets.{exp['dataset']}.split": split,
                   f"new_task.methods.{method}": spec,
                   f"new_task.{spec['kind']}": params["new_task"].get(spec["kind"], {}),
                   "backbone": resolve_model(params, spec["backbone"])[1]},
        "provenance": provenance(device, runtime["num_threads"]),
    }
    wall = time.perf_counter() - started + state.carried_seconds  # + interrupted processes
    save_torch_atomic(out_dir / "model.pt", model.state_dict())
    write_json_atomic(out_dir / "timing.json", {
        "wall_time_s": round(wall, 3), "feature_cache_s": round(cache_seconds, 3),
        "train_samples_per_s": round(state.epoch * len(splits.train) / wall, 1)})
    write_json_atomic(out_dir / "metrics.json", metrics)
    (out_dir / RESUME_FILE).unlink(missing_ok=True)
    return metrics


def _keys(params: dict[str, Any], experiment: str, method: str) -> list[str]:
    from mtlrec.workflow import newtask_keys

    return newtask_keys(params, experiment, method)


def _only_task(splits: Splits, task: int) -> Splits:
    one = slice(task, task + 1)
    return Splits(splits.train.with_labels(one), splits.val.with_labels(one),
                  splits.test.with_labels(one), splits.schema, [splits.tasks[task]])


def _existing_scores(backbone: MultiTaskModel, splits: Splits, cfg: TrainConfig, objective,
                     metric) -> dict[str, float]:
    """The frozen backbone's test scores on the existing tasks (what stage 2 leaves unchanged)."""
    k = backbone.num_tasks
    test = splits.test.with_labels(slice(0, k))
    scores = evaluate(backbone, test, cfg.eval_batch_size, objective, metric)
    return dict(zip(splits.tasks[:k], scores, strict=True))


def _cost(params: dict[str, Any], spec: dict[str, Any], model: MultiTaskModel,
          trained: list[torch.nn.Module], splits: Splits, features: FeatureSpec,
          num_all_tasks: int, batch_size: int, device: torch.device, objective: Any
          ) -> dict[str, int]:
    """Trained params and forward multiply-adds per training batch, and the same of the backbone
    architecture trained jointly on all tasks (docs/spec/mptrec.md section 5.2)."""
    from mtlrec.data.batches import batch_indices
    from mtlrec.models.layers import Batch, StepInfo

    idx = next(batch_indices(len(splits.train), batch_size, False))
    batch = splits.train.take(idx)
    info = StepInfo(1, 0, 1, 1, batch_size)
    trained_flops = multiply_adds(lambda: model.training_losses(
        Batch(batch.dense, batch.sparse, batch.labels, batch.row_id), info, objective), model)
    _, hparams = resolve_model(params, spec["backbone"])
    full = build_model(run_model(params, spec["backbone"])[0], features, num_all_tasks,
                       hparams).to(device)
    n_rows = len(splits.train)
    prepare_training(full, n_rows)  # e.g. MPT-Rec's pseudo task labels, read by its loss
    # the full model reads raw inputs; a count depends on the shapes only, not on the values
    raw = _raw_batch(full, splits, batch_size, num_all_tasks, device)
    full_flops = multiply_adds(lambda: full.training_losses(raw, info, objective))
    return {"trained_params": count_params(trained), "full_params": count_params([full]),
            "trained_flops_per_batch": int(trained_flops),
            "full_flops_per_batch": int(full_flops), "batch_size": batch_size}


def _raw_batch(full: MultiTaskModel, splits: Splits, batch_size: int, num_tasks: int,
               device: torch.device):
    from mtlrec.models.layers import Batch

    n_dense = len(splits.schema["dense"])
    n_sparse = len(splits.schema["sparse"])
    dense = torch.zeros(batch_size, n_dense, device=device)
    sparse = torch.zeros(batch_size, n_sparse, dtype=torch.long, device=device)
    labels = torch.zeros(batch_size, num_tasks, device=device)
    row_id = torch.arange(batch_size, device=device)
    return Batch(dense, sparse, labels, row_id)
