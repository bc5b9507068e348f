"""Grid search on validation (#17): the points of a `tuning.<experiment>` grid, their names, the
params each point trains with, and the choice among finished points.

A grid maps dotted keys to value lists: `train.<key>` replaces a key of the `train` section,
`model.<key>` a key of the run's model section (`models.<model>`; a variant's own `set` still wins
over it). `per_model.<model>` replaces the values of some grid keys for one model (say PLE's
one-layer experts). A point is one value per key, the keys in the order of their short names
(not of the file: a params file written back with sorted keys must name the same points), named
by a readable slug (`expert_hidden=256x128,lr=0.003,shuffle=true`) so that adding a value to the
grid adds points and renames none; grid order is that key order, each key's values as listed.
The choice is the point with the best sum of the validation metric over tasks at its best epoch,
signed by the metric's direction (Metric.selection_score, the score early stopping uses); ties go
to the first point in grid order.

In the DAG (mtlrec.workflow): every point of every run of a tuned experiment (one with a
`tuning.<experiment>` section) is an ordinary training run at
`runs/<experiment>/tuning/<run>/<point>/seed=<tuning seed>/` (`mtlrec train --point NAME`);
`mtlrec tune-select` writes the choice of each run to `runs/<experiment>/tuning/<run>/choice.json`
(every point's validation scores, best epoch and whether it hit the cap, and the chosen point);
the experiment's own runs train every seed at the chosen point (`mtlrec train --choice FILE`).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mtlrec.config import check_cross_references, deep_merge, run_model, validate
from mtlrec.errors import MtlrecError
from mtlrec.evaluate.metrics import get_metric
from mtlrec.workflow import choice_file, point_run_dir

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
    return dict(sorted(grid.items(), key=lambda item: _short_name(item[0])))


def grid_points(tuning: Mapping[str, Any], model: str) -> dict[str, dict[str, Any]]:
    """{point name: {grid key: value}} in grid order (the first key, by short name, varies
    slowest)."""
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
                 train: Mapping[str, Any] | None = None, check: bool = True) -> dict[str, Any]:
    """The params a run trains with at one point: `train` (the search's own train keys, e.g. the
    epoch cap) and the point's values over `params`, validated like a file (`check` False: only
    the schema of the two sections a point changes, the quick check of every point that
    config.check_cross_references makes)."""
    model, _ = run_model(params, run)
    overlay: dict[str, Any] = {"train": dict(train or {}), "models": {model: {}}}
    for key, value in point.items():
        section, _, name = key.partition(".")
        target = overlay["train"] if section == "train" else overlay["models"][model]
        target[name] = value
    tuned = deep_merge(params, overlay)
    if not check:
        validate(tuned, ("train", "models"))
        return tuned
    validate(tuned)
    check_cross_references(tuned)
    return tuned


def validation_score(metrics: Mapping[str, Any]) -> float:
    """The sum over tasks of a run's validation metric at its best epoch, negated for a metric
    where lower is better (as early stopping scores an epoch)."""
    scores = list(metrics[f"val_{metrics['metric']}"].values())
    return float(get_metric(metrics["metric"]).selection_score(scores))


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


# ------------------------------------------------------------------------------ the DAG's side
def tuning_section(params: Mapping[str, Any], experiment: str) -> dict[str, Any] | None:
    """`tuning.<experiment>`, or None for an experiment that trains one configuration."""
    return (params.get("tuning") or {}).get(experiment)


def search_seed(params: Mapping[str, Any], experiment: str) -> int:
    """The seed every grid point trains with: `tuning.<e>.seed`, else the first train seed."""
    seed = (tuning_section(params, experiment) or {}).get("seed")
    return int(params["train"]["seeds"][0] if seed is None else seed)


def run_points(params: Mapping[str, Any], experiment: str, run: str) -> dict[str, dict[str, Any]]:
    """The grid points one run of a tuned experiment searches."""
    tuning = tuning_section(params, experiment)
    if tuning is None:
        raise MtlrecError(f"experiment {experiment} has no tuning.{experiment} section")
    return grid_points(tuning, run_model(params, run)[0])


def point_dir(runs_root: Path | str, experiment: str, run: str, point: str, seed: int | str
              ) -> Path:
    """A grid point's run folder under a runs root (the layout is mtlrec.workflow's)."""
    return Path(point_run_dir(experiment, run, point, seed, runs=str(runs_root)))


def choice_path(runs_root: Path | str, experiment: str, run: str) -> Path:
    """A search's choice file under a runs root (the layout is mtlrec.workflow's)."""
    return Path(choice_file(experiment, run, runs=str(runs_root)))


def tuned_params(params: Mapping[str, Any], experiment: str, run: str, *,
                 point: str | None = None, choice: Path | None = None
                 ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The params one run trains with, and what it records of the search (None: not tuned).

    A tuned experiment's run trains either one grid point by name (`point`, the search) or the
    point its choice file names (`choice`, the tuned runs); both get the search's `train` keys (the
    epoch cap) over `train`. A choice whose point is no longer in the grid is refused (stale).
    """
    tuning = tuning_section(params, experiment)
    if point is None and choice is None:
        if tuning is not None:
            raise MtlrecError(f"experiment {experiment} is tuned (tuning.{experiment}): pass "
                              "--point NAME (a grid point) or --choice FILE (the chosen one)")
        return dict(params), None
    if tuning is None:
        raise MtlrecError(f"--point/--choice: experiment {experiment} has no tuning."
                          f"{experiment} section")
    points = run_points(params, experiment, run)
    source = "grid"
    if choice is not None:
        chosen = read_choice(choice)
        if (chosen["experiment"], chosen["run"]) != (experiment, run):
            raise MtlrecError(f"{choice}: the choice of {chosen['experiment']}/{chosen['run']}, "
                              f"not of {experiment}/{run}")
        point, source = chosen["choice"], "choice"
    if point not in points:
        where = f"the choice in {choice} names" if choice is not None else "--point"
        raise MtlrecError(f"{where} '{point}', not a point of the grid of {experiment}/{run} "
                          f"(points: {list(points)}); rerun the search (tune-select)")
    record = {"point": point, "values": points[point], "source": source,
              "train": dict(tuning.get("train") or {})}
    return point_params(params, run, points[point], tuning.get("train")), record


def read_choice(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise MtlrecError(f"no choice file {path}: run the search first (mtlrec tune-select)")
    chosen = json.loads(path.read_text())
    for key in ("experiment", "run", "choice", "points"):
        if key not in chosen:
            raise MtlrecError(f"{path}: not a choice file (no '{key}')")
    return chosen


def select(params: Mapping[str, Any], experiment: str, run: str, runs_root: Path
           ) -> dict[str, Any]:
    """The search's record of one run: every point's validation metric per task at its best
    epoch, its score, best epoch, epochs run and whether its best epoch was the cap, then the
    chosen point (best score, ties to grid order). Byte-stable for the same point runs."""
    points = run_points(params, experiment, run)
    seed = search_seed(params, experiment)
    found: dict[str, dict[str, Any]] = {}
    for name in points:
        path = point_dir(runs_root, experiment, run, name, seed) / "metrics.json"
        if not path.is_file():
            raise MtlrecError(f"tune-select: missing grid run {path}; train it first")
        found[name] = json.loads(path.read_text())
    best = choose(found, list(points))
    metric = found[best]["metric"]
    rows = {}
    for name, values in points.items():
        metrics = found[name]
        cap = int(metrics["params"]["train"]["epochs"])
        rows[name] = {
            "values": values,
            f"val_{metric}": metrics[f"val_{metric}"],
            "score": validation_score(metrics),
            "best_epoch": metrics["best_epoch"],
            "epochs_run": metrics["epochs_run"],
            "epochs_cap": cap,
            "hit_cap": hit_cap(metrics, cap),
        }
    commits = sorted({m["provenance"]["git_commit"] for m in found.values()})
    return {"experiment": experiment, "run": run, "model": run_model(params, run)[0],
            "seed": seed, "metric": metric, "choice": best, "values": points[best],
            "order": list(points), "points": rows, "grid_run_commits": commits}
