"""`mtlrec new-task`: a researcher's new task, declared on the command line, learnt on one
pre-trained run, without touching params.yaml or the pipeline's files.

    mtlrec new-task --task postgrad --column education \\
        --equals "Masters degree(MA MS MEng MEd MSW MBA)" \\
        --backbone runs/census_education/mptrec/seed=1685480945

The task's labels come from the dataset's raw files (data/raw/<dataset> under paths.root) by the
rule; the pre-trained run must not have seen the label's column as an input (a run of an
experiment whose new_task reads that column has it removed). Everything is checked before
anything is written: a column that does not exist, a rule with one class on the training file, or
a column the backbone sees as an input is one line. Output: <out>/{model.pt, metrics.json,
timing.json} and <out>/labels/ (the labels it trained on).
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
from pathlib import Path
from typing import Any

from mtlrec.data.datasets import READERS, dataset_section
from mtlrec.data.tasks import check_two_classes, task_label
from mtlrec.errors import MtlrecError

ADHOC_EXPERIMENT = "adhoc_new_task"


def _declaration(args: argparse.Namespace) -> dict[str, Any]:
    if args.equals is not None:
        return {"column": args.column, "equals": args.equals}
    if args.above is not None:
        return {"column": args.column, "above": args.above}
    return {"column": args.column, "below": args.below}


def add_new_task(params: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    from mtlrec import workflow
    from mtlrec.data.encode import write_labels
    from mtlrec.newtask.run import run_new_task

    metrics_path = args.backbone / "metrics.json"
    if not metrics_path.is_file():
        raise MtlrecError(f"new-task: {metrics_path} not found: --backbone must be a finished "
                          "run folder (runs/<experiment>/<run>/seed=<s>)")
    pretrained = json.loads(metrics_path.read_text())
    if "model" not in pretrained or pretrained["model"].startswith("full-"):
        raise MtlrecError(f"new-task: {args.backbone} is not a pre-training run")
    dataset, experiment = pretrained["dataset"], pretrained["experiment"]
    if args.task in pretrained["tasks"]:
        raise MtlrecError(f"new-task: '{args.task}' is already a task of the pre-trained run")
    root = Path(params["paths"]["root"])
    section = dataset_section(params, dataset)
    decl = _declaration(args)
    where = f"new-task: dataset '{dataset}'"
    raw = READERS[section["reader"]].read(dataset, section, root / workflow.raw_dir(dataset))
    labels = {split: task_label(frame, args.task, decl, where)
              for split, frame in raw.frames.items()}
    check_two_classes(args.task, decl, labels["train"], where)
    dropped = list(pretrained.get("dropped_inputs", []))
    if args.column in {*raw.sparse, *raw.dense} and args.column not in dropped:
        raise MtlrecError(f"new-task: column '{args.column}' is an input of the pre-trained run "
                          f"{args.backbone}: its label would leak; pre-train an experiment whose "
                          "new_task reads that column (README: adding a task)")
    sources = [root / workflow.labels_dir(dataset) / task for task in pretrained["tasks"]]
    missing = [str(path) for path in sources if not path.is_dir()]
    if missing:
        raise MtlrecError(f"new-task: {missing[0]} not found; run the pipeline's labels stage")
    adhoc = copy.deepcopy(params)
    adhoc["experiments"][ADHOC_EXPERIMENT] = {
        "dataset": dataset, "tasks": pretrained["tasks"], "new_task": args.task,
        "objective": pretrained["objective"], "metric": pretrained["metric"]}
    method = dict(adhoc["new_task"]["methods"].get(args.method, {"kind": "prompt"}))
    adhoc["new_task"]["methods"][args.method] = {**method, "backbone": pretrained["model"]}
    out = args.out or (root / "runs" / experiment / f"adhoc-{args.task}-{args.method}"
                       / f"seed={pretrained['seed']}")
    labels_dir = out / "labels"
    for task, source in zip(pretrained["tasks"], sources, strict=True):
        shutil.copytree(source, labels_dir / task, dirs_exist_ok=True)
    write_labels(labels_dir / args.task, labels, {"task": args.task, "declaration": decl})
    return run_new_task(adhoc, ADHOC_EXPERIMENT, args.method, pretrained["seed"],
                        root / workflow.encoded_dir(dataset), args.backbone, out, labels_dir,
                        drop_fields=dropped)
