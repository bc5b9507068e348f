"""Loading, merging and validating params files (params.yaml plus optional overlays)."""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from mtlrec.errors import MtlrecError

Params = dict[str, Any]


def deep_merge(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> Params:
    """Return `base` updated by `overlay`; nested mappings merge, everything else is replaced."""
    merged = copy.deepcopy(dict(base))
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


@functools.cache
def _schema() -> dict[str, Any]:
    """The params schema, parsed once (read only)."""
    text = resources.files("mtlrec.schemas").joinpath("params.schema.yaml").read_text()
    return yaml.safe_load(text)


@functools.cache
def _section_validator(sections: tuple[str, ...]) -> jsonschema.Draft202012Validator:
    schema = _schema()
    return jsonschema.Draft202012Validator({
        "$defs": schema["$defs"], "type": "object", "required": list(sections),
        "properties": {name: schema["properties"][name] for name in sections}})


def validate(params: Mapping[str, Any], sections: tuple[str, ...] | None = None) -> None:
    """Raise MtlrecError naming the first offending key if `params` does not fit the schema
    (only its top-level `sections` where given: a quick check of a few changed sections)."""
    if sections is None:
        validator = jsonschema.Draft202012Validator(_schema())
    else:
        validator = _section_validator(sections)
        params = {name: params[name] for name in sections}
    errors = sorted(validator.iter_errors(params), key=lambda e: list(e.absolute_path))
    if not errors:
        return
    err = errors[0]
    where = ".".join(str(p) for p in err.absolute_path) or "<top level>"
    message = err.message
    if err.validator == "additionalProperties":
        message = f"{message} (typo? allowed keys: {sorted(err.schema.get('properties', {}))})"
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    raise MtlrecError(f"params: invalid value at '{where}': {message}{more}")


def load_params(files: Iterable[str | Path]) -> Params:
    """Read params files in order (later ones overlay earlier ones), validate, and return them."""
    merged: Params = {}
    for file in files:
        path = Path(file)
        if not path.is_file():
            raise MtlrecError(f"params: file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise MtlrecError(f"params: {path} is not valid YAML: {exc}".splitlines()[0]) from exc
        if not isinstance(loaded, Mapping):
            raise MtlrecError(f"params: {path} must hold a mapping at the top level")
        merged = deep_merge(merged, loaded)
    validate(merged)
    check_cross_references(merged)
    return merged


def apply_overrides(params: Params, assignments: Iterable[str]) -> Params:
    """`key.sub=value` assignments (value read as YAML: 0.01, [1, 2], true, null) over `params`,
    then validated like a file: `mtlrec train ... --set train.lr=0.01`."""
    merged = copy.deepcopy(params)
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        if not sep or not key:
            raise MtlrecError(f"--set: '{assignment}' is not KEY=VALUE (e.g. train.lr=0.01)")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise MtlrecError(f"--set {key}: '{text}' is not a YAML value") from exc
        node = merged
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise MtlrecError(f"--set: no section '{part}' on the way to '{key}'")
            node = node[part]
        node[parts[-1]] = value
    validate(merged)
    check_cross_references(merged)
    return merged


def resolve_model(params: Mapping[str, Any], run_name: str) -> tuple[str, dict[str, Any]]:
    """A run name -> (registered model, its hyperparameters).

    A run name is a `models.<name>` section, or a `variants.<name>` entry: a registered model's
    section with some keys replaced (the ablations).
    """
    if run_name in params["models"]:
        return run_name, copy.deepcopy(params["models"][run_name])
    variant = params.get("variants", {}).get(run_name)
    if variant is None:
        known = sorted([*params["models"], *params.get("variants", {})])
        raise MtlrecError(f"unknown model or variant '{run_name}' (known: {known})")
    base = variant["model"]
    if base not in params["models"]:
        raise MtlrecError(f"params: variants.{run_name}.model: no models.{base} section")
    return base, deep_merge(params["models"][base], variant["set"])


FULL_PREFIX = "full-"  # run `full-<run>`: <run> trained on the experiment's tasks + its new task
NEW_TASK_PREFIX = "newtask-"  # run `newtask-<method>`: a new_task.methods entry (stage 2)


def run_model(params: Mapping[str, Any], run_name: str) -> tuple[str, dict[str, Any]]:
    """resolve_model for a training run name, `full-` prefix included."""
    return resolve_model(params, run_name.removeprefix(FULL_PREFIX))


def run_tasks(params: Mapping[str, Any], experiment: str, run_name: str) -> list[str]:
    """The tasks a training run learns: the experiment's, plus its new task for `full-` runs."""
    exp = experiment_section(params, experiment)
    if run_name.startswith(FULL_PREFIX):
        if not exp.get("new_task"):
            raise MtlrecError(f"run '{run_name}': experiments.{experiment} has no new_task")
        return [*exp["tasks"], exp["new_task"]]
    return list(exp["tasks"])


def dropped_inputs(params: Mapping[str, Any], experiment: str) -> list[str]:
    """The raw columns that are labels of the experiment's tasks or new task: no input of any of
    its runs (mtlrec.data.tasks)."""
    from mtlrec.data.datasets import task_declaration

    exp = experiment_section(params, experiment)
    dataset = params["datasets"][exp["dataset"]]
    tasks = [*exp["tasks"], *([exp["new_task"]] if exp.get("new_task") else [])]
    return [task_declaration(dataset, task)["column"] for task in tasks]


REPORT_KINDS = ("table2", "ablation", "em", "tsne")
RANK_REPORT_KINDS = ("rank_table2", "rank_table3", "rank_ablation", "rank_sensitivity",
                     "rank_curves")


def is_ranking(params: Mapping[str, Any], experiment: str) -> bool:
    """A ranking experiment (PMTRec): interactions, tasks over the embedding table, top-K."""
    return params["experiments"][experiment].get("kind") == "ranking"


def sweep_point(method: str, option: str, value: float) -> str:
    """The run name of one sensitivity point: `<method>-<option><value>`."""
    return f"{method}-{option}{value}"


def rank_table_metrics(params: Mapping[str, Any], table: Mapping[str, Any]) -> list[str]:
    """The metrics a ranking report shows: its own `metrics`, else recall@k then ndcg@k for every
    k of `rank_train.ks`."""
    if table.get("metrics"):
        return list(table["metrics"])
    ks = params["rank_train"]["ks"]
    return [f"{kind}@{k}" for kind in ("recall", "ndcg") for k in ks]


def sensitivity_runs(report: Mapping[str, Any]) -> list[str]:
    """The runs of a sensitivity sweep: one point per listed alpha and tau value."""
    sweep = report["rank_sensitivity"]
    return [sweep_point(sweep["method"], key, value) for key in ("alpha", "tau")
            for value in sweep.get(key, [])]


def rank_report_runs(report: Mapping[str, Any]) -> dict[str, list[str]]:
    """Ranking report kind -> the runs (rank_methods entries or sweep points) it reads."""
    runs: dict[str, list[str]] = {}
    for kind in RANK_REPORT_KINDS:
        if kind not in report:
            continue
        runs[kind] = (sensitivity_runs(report) if kind == "rank_sensitivity"
                      else list(report[kind]["methods"]))
    return runs


def report_runs(report: Mapping[str, Any]) -> dict[str, list[str]]:
    """report kind -> the run names (models or variants) it reads, for one experiment's report."""
    runs: dict[str, list[str]] = rank_report_runs(report)
    if "table2" in report:
        runs["table2"] = list(report["table2"]["models"])
    if "ablation" in report:
        runs["ablation"] = list(report["ablation"]["models"])
    if "em" in report:
        runs["em"] = [report["em"]["model"]]
    if "tsne" in report:
        runs["tsne"] = list(report["tsne"]["models"])
    if "table3" in report:
        table = report["table3"]
        runs["table3"] = [NEW_TASK_PREFIX + m for m in table["methods"]] + [
            FULL_PREFIX + table["full"]]
    if "table4" in report:
        models = report["table4"]["models"]
        runs["table4"] = [*models, *(FULL_PREFIX + m for m in models)]
    if "newtask_ablation" in report:
        runs["newtask_ablation"] = [NEW_TASK_PREFIX + m
                                    for m in report["newtask_ablation"]["methods"]]
    if "correlations" in report:
        runs["correlations"] = []
    if "tuning" in report:
        runs["tuning"] = list(report["tuning"]["models"])
    return runs


def experiment_runs(params: Mapping[str, Any], experiment: str) -> list[str]:
    """Every run an experiment trains: the union, in order of first mention, of the runs its
    reports read."""
    names: list[str] = []
    for runs in report_runs(params["report"].get(experiment, {})).values():
        names += [n for n in runs if n not in names]
    return names


def experiment_section(params: Mapping[str, Any], experiment: str) -> dict[str, Any]:
    if experiment not in params["experiments"]:
        raise MtlrecError(f"unknown experiment '{experiment}' (known: "
                          f"{sorted(params['experiments'])})")
    return dict(params["experiments"][experiment])


def check_cross_references(params: Mapping[str, Any]) -> None:
    """Checks that a JSON schema cannot express: names that must refer to registered or declared
    things (models, variants, datasets, experiments, objectives, metrics)."""
    from mtlrec.evaluate.metrics import METRICS  # local imports: these import torch
    from mtlrec.models import MODELS
    from mtlrec.train.objectives import OBJECTIVES

    for name in params["models"]:
        if name not in MODELS:
            raise MtlrecError(f"params: models.{name}: unknown model (known: {sorted(MODELS)})")
    for name in params.get("variants", {}):
        if name in params["models"]:
            raise MtlrecError(f"params: variants.{name} shadows models.{name}")
        base, section = resolve_model(params, name)
        try:  # the changed section must still fit the base model's schema
            validate({**params, "models": {**params["models"], base: section}})
        except MtlrecError as exc:
            raise MtlrecError(f"params: variants.{name}: {exc}") from None
    for name, exp in params["experiments"].items():
        where = f"params: experiments.{name}"
        if exp["dataset"] not in params["datasets"]:
            raise MtlrecError(f"{where}.dataset: no datasets.{exp['dataset']} section "
                              f"(declared: {sorted(params['datasets'])})")
        ranking_reader = params["datasets"][exp["dataset"]]["reader"] in RANKING_READERS
        if (exp.get("kind") == "ranking") != ranking_reader:
            raise MtlrecError(f"{where}: a ranking experiment (kind: ranking) needs an "
                              f"interaction dataset (readers {list(RANKING_READERS)}) and "
                              "the other way round")
        if ranking_reader:
            _check_ranking_experiment(params, name, exp)
            continue
        if exp["objective"] not in OBJECTIVES:
            raise MtlrecError(f"{where}.objective: unknown '{exp['objective']}' "
                              f"(known: {sorted(OBJECTIVES)})")
        if exp["metric"] not in METRICS:
            raise MtlrecError(f"{where}.metric: unknown '{exp['metric']}' "
                              f"(known: {sorted(METRICS)})")
        from mtlrec.data.datasets import declared_tasks

        declared = declared_tasks(params["datasets"][exp["dataset"]])
        key = "labels" if params["datasets"][exp["dataset"]]["reader"] == "table" else "tasks"
        wanted = [*exp["tasks"], *([exp["new_task"]] if exp.get("new_task") else [])]
        missing = [t for t in wanted if t not in declared]
        if missing:
            raise MtlrecError(f"{where}: task(s) {missing} not in datasets.{exp['dataset']}"
                              f".{key} ({sorted(declared)})")
        if exp.get("new_task") in exp["tasks"]:
            raise MtlrecError(f"{where}.new_task: '{exp['new_task']}' is already one of its tasks")
    for name in params["build"]:
        if name not in params["experiments"] or name not in params["report"]:
            raise MtlrecError(f"params: build: '{name}' needs an experiments.{name} and a "
                              f"report.{name} section")
    for name, report in params["report"].items():
        _check_report(params, name, report)
    for name, tuning in (params.get("tuning") or {}).items():
        _check_tuning(params, name, tuning)
    _check_masked_models(params, MODELS)


def _check_tuning(params: Mapping[str, Any], experiment: str, tuning: Mapping[str, Any]) -> None:
    """A search: of a multi-task experiment without a new task, on one of the train seeds (the
    masked models' masks are made per train seed; absent = the first), with a grid every run of
    it accepts."""
    from mtlrec.models import MODELS
    from mtlrec.train.tuning import point_params, run_points

    where = f"params: tuning.{experiment}"
    exp = params["experiments"].get(experiment)
    if exp is None:
        raise MtlrecError(f"{where}: no experiments.{experiment} section")
    if exp.get("kind") == "ranking" or exp.get("new_task"):
        raise MtlrecError(f"{where}: only an experiment of multi-task runs without a new task "
                          "can be tuned")
    if tuning.get("seed") is not None and tuning["seed"] not in params["train"]["seeds"]:
        raise MtlrecError(f"{where}.seed {tuning['seed']} must be one of train.seeds")
    for run in experiment_runs(params, experiment):
        try:
            for point in run_points(params, experiment, run).values():
                _check_masked_models(point_params(params, run, point, tuning.get("train"),
                                                  check=False), MODELS)
        except MtlrecError as exc:
            raise MtlrecError(f"{where} ({run}): {exc}") from None


RANKING_READERS = ("tang", "recbole", "interactions")


def _check_ranking_experiment(params: Mapping[str, Any], name: str,
                              exp: Mapping[str, Any]) -> None:
    from mtlrec.ranking.encoders import ENCODERS
    from mtlrec.ranking.metrics import parse_metric
    from mtlrec.ranking.tasks import LOSSES
    from mtlrec.train.pooling import POOLS

    where = f"params: experiments.{name}"
    dataset = params["datasets"][exp["dataset"]]
    missing = [t for t in exp["tasks"] if t not in dataset["tasks"]]
    if missing:
        raise MtlrecError(f"{where}.tasks: {missing} not in datasets.{exp['dataset']}.tasks "
                          f"({sorted(dataset['tasks'])})")
    for task, decl in dataset["tasks"].items():
        if decl["loss"] not in LOSSES:
            raise MtlrecError(f"params: datasets.{exp['dataset']}.tasks.{task}.loss: unknown "
                              f"'{decl['loss']}' (known: {sorted(LOSSES)})")
    try:
        parse_metric(exp["metric"])
    except MtlrecError as exc:
        raise MtlrecError(f"{where}.metric: {exc}") from None
    if exp["encoder"] not in ENCODERS:
        raise MtlrecError(f"{where}.encoder: unknown '{exp['encoder']}' "
                          f"(known: {sorted(ENCODERS)})")
    for pool in [*params["pools"], *exp.get("pools", {})]:
        if pool not in POOLS:
            raise MtlrecError(f"params: pools.{pool}: unknown pool (known: {sorted(POOLS)})")
    for method, spec in params["rank_methods"].items():
        if spec["pool"] not in POOLS:
            raise MtlrecError(f"params: rank_methods.{method}.pool: unknown '{spec['pool']}' "
                              f"(known: {sorted(POOLS)})")
        if spec.get("encoder", exp["encoder"]) not in params["encoders"]:
            raise MtlrecError(f"params: rank_methods.{method}: no encoders."
                              f"{spec.get('encoder')} section")


def _check_report(params: Mapping[str, Any], experiment: str, report: Mapping[str, Any]) -> None:
    where = f"params: report.{experiment}"
    if experiment not in params["experiments"]:
        raise MtlrecError(f"{where}: no experiments.{experiment} section")
    exp = params["experiments"][experiment]
    if exp.get("kind") == "ranking":
        from mtlrec.ranking.run import resolve_rank_run

        if any(kind in report for kind in (*REPORT_KINDS, "table3", "table4")):
            raise MtlrecError(f"{where}: a ranking experiment has rank_* reports only")
        for kind, names in rank_report_runs(report).items():
            candidate = report[kind].get("candidate")
            if candidate is not None and candidate not in names:
                raise MtlrecError(f"{where}.{kind}.candidate '{candidate}' is none of its methods")
            for run in names:
                try:
                    resolve_rank_run(params, experiment, run)  # type: ignore[arg-type]
                except MtlrecError as exc:
                    raise MtlrecError(f"{where}.{kind}: {exc}") from None
        return
    if any(kind in report for kind in RANK_REPORT_KINDS):
        raise MtlrecError(f"{where}: rank_* reports belong to ranking experiments")
    for kind, names in report_runs(report).items():
        if kind in ("table3", "table4", "newtask_ablation", "correlations") and not exp.get(
                "new_task"):
            raise MtlrecError(f"{where}.{kind}: experiments.{experiment} has no new_task")
        for name in names:
            try:
                if name.startswith(NEW_TASK_PREFIX):
                    _check_method(params, name.removeprefix(NEW_TASK_PREFIX))
                else:
                    run_model(params, name)
            except MtlrecError as exc:
                raise MtlrecError(f"{where}.{kind}: {exc}") from None
    table = report.get("table2")
    if table is not None:
        if table["baseline"] not in table["models"]:
            raise MtlrecError(f"{where}.table2.baseline must be one of its models")
        significance = table.get("significance")
        if significance and significance["candidate"] not in table["models"]:
            raise MtlrecError(f"{where}.table2.significance.candidate must be one of its models")
    if "tuning" in report:
        if experiment not in (params.get("tuning") or {}):
            raise MtlrecError(f"{where}.tuning: experiment {experiment} has no tuning."
                              f"{experiment} section (the search it reports)")
        reference = report["tuning"]["reference"]
        if reference not in params["experiments"] or reference == experiment:
            raise MtlrecError(f"{where}.tuning.reference '{reference}': another experiment")
    if report.get("notebook") and any(kind not in report for kind in REPORT_KINDS):
        raise MtlrecError(f"{where}.notebook needs all of {list(REPORT_KINDS)}")


def _check_method(params: Mapping[str, Any], method: str) -> None:
    """A new_task.methods entry: a known kind, a backbone run that fits it."""
    from mtlrec.models import MODELS
    from mtlrec.newtask import FINETUNE_ALL, HEADS

    methods = params.get("new_task", {}).get("methods", {})
    if method not in methods:
        raise MtlrecError(f"unknown new-task method '{method}' (new_task.methods: "
                          f"{sorted(methods)})")
    spec = methods[method]
    model, _ = resolve_model(params, spec["backbone"])
    if spec["kind"] == FINETUNE_ALL:
        return
    head = HEADS[spec["kind"]]
    if model not in head.backbone_models:
        raise MtlrecError(f"new_task.methods.{method}: a '{spec['kind']}' head needs a backbone "
                          f"of {list(head.backbone_models)}, '{spec['backbone']}' is {model}")
    if MODELS[model].needs_masks:
        raise MtlrecError(f"new_task.methods.{method}: masked backbones are not supported")


def _check_masked_models(params: Mapping[str, Any], models: Mapping[str, Any]) -> None:
    """Models that train on the pruning masks must have the pruned network's dims."""
    network = params["pruning"]["network"]
    for name in params["models"]:
        if not models[name].needs_masks:
            continue
        for key in ("embed_dim", "expert_hidden", "tower_hidden"):
            if params["models"][name][key] != network[key]:
                raise MtlrecError(f"params: models.{name}.{key} must equal pruning.network.{key}"
                                  " (the masks are made for that network)")


def section(params: Mapping[str, Any], dotted: str) -> Any:
    """Return params['a']['b'] for 'a.b', with a clear error for a missing key."""
    node: Any = params
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise MtlrecError(f"params: missing section '{dotted}'")
        node = node[part]
    return node
