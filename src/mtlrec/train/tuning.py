"""Grid search on validation (#17): the points of a `tuning.<experiment>` grid, their names, the
params each point trains with, and the choice among finished points.

A grid maps dotted keys to value lists: `train.<key>` replaces a key of the `train` section,
`model.<key>` a key of the run's model section (`models.<model>`; a variant's own `set` still wins
over it). `per_model.<model>` replaces the values of some grid keys for one model (say PLE's
one-layer experts). A point is one value per key, in the grid's key order, named by a readable
slug (`lr=0.003,expert_hidden=256x128,shuffle=true`) so that adding a value to the grid adds
points and renames none. The choice is the point with the best sum of the validation metric over
tasks at its best epoch, signed by the metric's direction (the score early stopping already uses,
mtlrec.train.loop.fit); ties go to the first point in grid order.

Not wired into the DAG yet: the stage that trains every point and the tuned runs that read the
choice are the next step of #17.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import Any

from mtlrec.config import check_cross_references, deep_merge, run_model, validate
from mtlrec.errors import MtlrecError
from mtlrec.evaluate.metrics import get_metric

SECTIONS = ("train", "model")  # what a grid key may replace


def _short_name(key: str) -> str:
    section, sep, name = key.partition(".")
    if section not in SECTIONS or not sep or not name or "." in name:
        raise MtlrecError(f"tuning grid key '{key}': expected train.<key> or model.<key>")
    return name


def format_value(value: Any) -> str:
    """A grid value as it appears in a point's name: true/false, 0.003, 256x128."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise MtlrecError(f"tuning grid value {value!r} is not finite")
        return format(value, "g")
    if isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool)
                                                 for v in value):
        return "x".join(str(v) for v in value)
    if isinstance(value, str) and value.replace("_", "").isalnum():
        return value
    raise MtlrecError(f"tuning grid value {value!r}: use a number, a boolean, a name or a "
                      "list of integers")


def model_grid(tuning: Mapping[str, Any], model: str) -> dict[str, list[Any]]:
    """The grid one model searches: `grid`, with `per_model.<model>`'s values over it."""
    grid = {key: list(values) for key, values in tuning["grid"].items()}
    for key, values in tuning.get("per_model", {}).get(model, {}).items():
        if key not in grid:
            raise MtlrecError(f"tuning per_model.{model}.{key}: not a key of the grid "
                              f"({sorted(grid)})")
        grid[key] = list(values)
    names = [_short_name(key) for key in grid]
    if len(set(names)) != len(names):
        raise MtlrecError(f"tuning grid keys {sorted(grid)}: two keys end in the same name")
    for key, values in grid.items():
        if not values:
            raise MtlrecError(f"tuning grid key '{key}' has no values")
    return grid


def grid_points(tuning: Mapping[str, Any], model: str) -> dict[str, dict[str, Any]]:
    """{point name: {grid key: value}} in grid order (the first key varies slowest)."""
    grid = model_grid(tuning, model)
    names = [_short_name(key) for key in grid]
    points: dict[str, dict[str, Any]] = {}
    for values in itertools.product(*grid.values()):
        name = ",".join(f"{n}={format_value(v)}" for n, v in zip(names, values, strict=True))
        if name in points:
            raise MtlrecError(f"tuning grid of {model}: two points are both named '{name}'")
        points[name] = dict(zip(grid, values, strict=True))
    return points


def point_params(params: Mapping[str, Any], run: str, point: Mapping[str, Any],
                 train: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The params a run trains with at one point: `train` (the search's own train keys, e.g. the
    epoch cap) and the point's values over `params`, validated like a file."""
    model, _ = run_model(params, run)
    overlay: dict[str, Any] = {"train": dict(train or {}), "models": {model: {}}}
    for key, value in point.items():
        section, _, name = key.partition(".")
        target = overlay["train"] if section == "train" else overlay["models"][model]
        target[name] = value
    tuned = deep_merge(params, overlay)
    validate(tuned)
    check_cross_references(tuned)
    return tuned


def validation_score(metrics: Mapping[str, Any]) -> float:
    """The sum over tasks of a run's validation metric at its best epoch, negated for a metric
    where lower is better (as early stopping scores an epoch)."""
    total = float(sum(metrics[f"val_{metrics['metric']}"].values()))
    return total if get_metric(metrics["metric"]).higher_is_better else -total


def choose(point_metrics: Mapping[str, Mapping[str, Any]], order: list[str]) -> str:
    """The best point by validation score; ties go to the first in `order` (grid order)."""
    missing = [name for name in order if name not in point_metrics]
    if missing:
        raise MtlrecError(f"tuning: no finished run for point(s) {missing}")
    best = order[0]
    for name in order[1:]:
        if validation_score(point_metrics[name]) > validation_score(point_metrics[best]):
            best = name
    return best


def hit_cap(metrics: Mapping[str, Any], epochs: int) -> bool:
    """Whether a run's best epoch is the last one it was allowed (the cap binds)."""
    return int(metrics["best_epoch"]) >= epochs
