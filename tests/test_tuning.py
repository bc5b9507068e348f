"""The grid search's building blocks (mtlrec.train.tuning): point names, the params a point
trains with, and the choice among finished points."""

from __future__ import annotations

import pytest

from mtlrec.config import load_params
from mtlrec.errors import MtlrecError
from mtlrec.train.tuning import choose, grid_points, hit_cap, point_params, validation_score

TUNING = {
    "grid": {"train.lr": [0.0003, 0.001], "model.expert_hidden": [[128, 64], [256, 128]],
             "train.shuffle": [False, True]},
    "per_model": {"ple": {"model.expert_hidden": [[128], [256]]}},
}


@pytest.fixture(scope="module")
def params():
    return load_params(["params.yaml"])


def test_points_are_the_product_in_grid_order_with_readable_names():
    points = grid_points(TUNING, "mmoe")
    names = list(points)
    assert len(names) == 8
    assert names[0] == "lr=0.0003,expert_hidden=128x64,shuffle=false"
    assert names[1] == "lr=0.0003,expert_hidden=128x64,shuffle=true"
    assert names[-1] == "lr=0.001,expert_hidden=256x128,shuffle=true"
    assert points[names[-1]] == {"train.lr": 0.001, "model.expert_hidden": [256, 128],
                                 "train.shuffle": True}


def test_adding_a_value_keeps_every_old_point_name():
    wider = {"grid": {**TUNING["grid"], "train.lr": [0.0003, 0.001, 0.003]}}
    assert set(grid_points(TUNING, "mmoe")) < set(grid_points(wider, "mmoe"))


def test_per_model_values_replace_the_grid_for_that_model_only():
    assert "lr=0.001,expert_hidden=256,shuffle=true" in grid_points(TUNING, "ple")
    assert "lr=0.001,expert_hidden=256,shuffle=true" not in grid_points(TUNING, "mmoe")


@pytest.mark.parametrize("grid, message", [
    ({"optim.lr": [0.1]}, "train.<key> or model.<key>"),
    ({"train.lr": []}, "no values"),
    ({"train.lr": [0.1], "model.lr": [0.1]}, "same name"),
    ({"train.lr": [{"a": 1}]}, "use a number"),
])
def test_a_bad_grid_is_refused_with_the_key_named(grid, message):
    with pytest.raises(MtlrecError, match=message):
        grid_points({"grid": grid}, "mmoe")


def test_per_model_key_outside_the_grid_is_refused():
    with pytest.raises(MtlrecError, match="per_model.ple.model.tower_hidden"):
        grid_points({"grid": {"train.lr": [0.1]},
                     "per_model": {"ple": {"model.tower_hidden": [[8]]}}}, "ple")


def test_point_params_set_train_and_the_runs_model_section(params):
    point = grid_points(TUNING, "mmoe")["lr=0.001,expert_hidden=256x128,shuffle=true"]
    tuned = point_params(params, "mmoe", point, train={"epochs": 100})
    assert tuned["train"]["lr"] == 0.001 and tuned["train"]["shuffle"] is True
    assert tuned["train"]["epochs"] == 100
    assert tuned["models"]["mmoe"]["expert_hidden"] == [256, 128]
    assert tuned["models"]["ple"] == params["models"]["ple"]  # other models untouched
    assert params["train"]["epochs"] == 30  # the input is not changed


def test_point_params_of_a_variant_change_its_base_model(params):
    tuned = point_params(params, "stem_official", {"model.expert_hidden": [64, 32]})
    assert tuned["models"]["stem"]["expert_hidden"] == [64, 32]


def test_a_point_value_the_schema_refuses_is_an_error(params):
    with pytest.raises(MtlrecError):
        point_params(params, "mmoe", {"train.lr": -1.0})


def _metrics(val: dict[str, float], best_epoch: int = 3) -> dict:
    return {"metric": "auc", "val_auc": val, "best_epoch": best_epoch}


def test_choice_is_the_best_validation_sum_ties_to_the_first():
    runs = {"a": _metrics({"t1": 0.9, "t2": 0.8}), "b": _metrics({"t1": 0.8, "t2": 0.95}),
            "c": _metrics({"t1": 0.95, "t2": 0.8})}
    assert validation_score(runs["b"]) == pytest.approx(1.75)
    assert choose(runs, ["a", "b", "c"]) == "b"
    tied = {"a": _metrics({"t1": 0.5}), "b": _metrics({"t1": 0.5})}
    assert choose(tied, ["b", "a"]) == "b"


def test_choice_needs_every_point_finished():
    with pytest.raises(MtlrecError, match=r"\['b'\]"):
        choose({"a": _metrics({"t1": 0.5})}, ["a", "b"])


def test_hit_cap_flags_a_best_epoch_at_the_cap():
    assert hit_cap(_metrics({"t1": 0.5}, best_epoch=30), 30)
    assert not hit_cap(_metrics({"t1": 0.5}, best_epoch=12), 30)


def test_choice_follows_the_metrics_direction(monkeypatch):
    from mtlrec.evaluate.metrics import METRICS, Metric

    monkeypatch.setitem(METRICS, "loss", Metric("loss", "Loss", lambda s, y: [],
                                                higher_is_better=False))
    runs = {"a": {"metric": "loss", "val_loss": {"t1": 0.4}},
            "b": {"metric": "loss", "val_loss": {"t1": 0.3}}}
    assert choose(runs, ["a", "b"]) == "b"
