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


def check_cross_references(params: Mapping[str, Any]) -> None:
    """Checks that a JSON schema cannot express: names that must refer to registered things."""
    from mtlrec.models import MODELS  # local import: models import torch

    for name in params["models"]:
        if name not in MODELS:
            raise MtlrecError(f"params: models.{name}: unknown model (known: {sorted(MODELS)})")
    table = params["report"]["table2"]
    for name in table["models"]:
        if name not in params["models"]:
            raise MtlrecError(
                f"params: report.table2.models names '{name}', which has no models.{name} section"
            )
    if table["baseline"] not in table["models"]:
        raise MtlrecError("params: report.table2.baseline must be one of report.table2.models")


def section(params: Mapping[str, Any], dotted: str) -> Any:
    """Return params['a']['b'] for 'a.b', with a clear error for a missing key."""
    node: Any = params
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise MtlrecError(f"params: missing section '{dotted}'")
        node = node[part]
    return node
