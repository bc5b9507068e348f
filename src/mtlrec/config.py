"""Loading, merging and validating params files (params.yaml plus optional overlays)."""

from __future__ import annotations

import copy
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


def _schema() -> dict[str, Any]:
    text = resources.files("mtlrec.schemas").joinpath("params.schema.yaml").read_text()
    return yaml.safe_load(text)


def validate(params: Mapping[str, Any]) -> None:
    """Raise MtlrecError naming the first offending key if `params` does not fit the schema."""
    validator = jsonschema.Draft202012Validator(_schema())
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


def check_cross_references(params: Mapping[str, Any]) -> None:
    """Checks that a JSON schema cannot express: names that must refer to registered things."""
    from mtlrec.models import MODELS  # local import: models import torch

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
    report = params["report"]
    run_lists = {
        "report.table2.models": report["table2"]["models"],
        "report.ablation.models": report["ablation"]["models"],
        "report.ablation.variants": report["ablation"]["variants"],
        "report.tsne.models": report["tsne"]["models"],
        "report.em.model": [report["em"]["model"]],
    }
    for where, names in run_lists.items():
        for name in names:
            resolve_model(params, name)  # raises for an unknown name
            if where == "report.ablation.variants" and name not in params["variants"]:
                raise MtlrecError(f"params: {where}: '{name}' is not a variants entry")
    _check_run_lists(params, MODELS)
    table = report["table2"]
    if table["baseline"] not in table["models"]:
        raise MtlrecError("params: report.table2.baseline must be one of report.table2.models")
    significance = table.get("significance")
    if significance and significance["candidate"] not in table["models"]:
        raise MtlrecError("params: report.table2.significance.candidate must be in its models")


def _check_run_lists(params: Mapping[str, Any], models: Mapping[str, Any]) -> None:
    """dvc.train_models: models trained without masks; dvc.masked_models: models trained on the
    pruning masks, whose bottom must be the pruned network. Every Table 2 model is in one."""
    plain, masked = params["dvc"]["train_models"], params["dvc"]["masked_models"]
    for where, names, wants_masks in (("dvc.train_models", plain, False),
                                      ("dvc.masked_models", masked, True)):
        for name in names:
            if name not in params["models"]:
                raise MtlrecError(f"params: {where}: '{name}' has no models.{name} section")
            if models[name].needs_masks != wants_masks:
                other = "dvc.masked_models" if not wants_masks else "dvc.train_models"
                raise MtlrecError(f"params: {where}: '{name}' belongs in {other}")
    network = params["pruning"]["network"]
    for name in params["models"]:
        if not models[name].needs_masks:
            continue
        for key in ("embed_dim", "expert_hidden", "tower_hidden"):
            if params["models"][name][key] != network[key]:
                raise MtlrecError(f"params: models.{name}.{key} must equal pruning.network.{key}"
                                  " (the masks are made for that network)")
    for name in params["report"]["table2"]["models"]:
        if name in params["models"] and name not in (*plain, *masked):
            raise MtlrecError(f"params: report.table2.models: '{name}' is in neither "
                              "dvc.train_models nor dvc.masked_models")


def section(params: Mapping[str, Any], dotted: str) -> Any:
    """Return params['a']['b'] for 'a.b', with a clear error for a missing key."""
    node: Any = params
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise MtlrecError(f"params: missing section '{dotted}'")
        node = node[part]
    return node
