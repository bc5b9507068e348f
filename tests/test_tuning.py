"""The grid search (mtlrec.train.tuning, #17): point names, the params a point trains with, the
choice among finished points, the DAG's search stages, the params checks and the search's table."""

from __future__ import annotations

import copy
import json

import pytest

from mtlrec import workflow as dag
from mtlrec.config import check_cross_references, load_params
from mtlrec.errors import MtlrecError
from mtlrec.report.tuning import _x_key, make_tuning_table
from mtlrec.train.tuning import (
    choice_path,
    choose,
    grid_points,
    hit_cap,
    point_dir,
    point_params,
    select,
    tuned_params,
    validation_score,
)

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
    assert names[0] == "expert_hidden=128x64,lr=0.0003,shuffle=false"  # keys by short name
    assert names[1] == "expert_hidden=128x64,lr=0.0003,shuffle=true"
    assert names[-1] == "expert_hidden=256x128,lr=0.001,shuffle=true"
    assert points[names[-1]] == {"train.lr": 0.001, "model.expert_hidden": [256, 128],
                                 "train.shuffle": True}


def test_points_do_not_depend_on_the_order_of_the_grid_keys_in_the_file():
    """The jobs read params written back with sorted keys: the same names, the same order."""
    reordered = {"grid": dict(reversed(list(TUNING["grid"].items())))}
    assert list(grid_points(reordered, "mmoe")) == list(grid_points(TUNING, "mmoe"))


def test_adding_a_value_keeps_every_old_point_name():
    wider = {"grid": {**TUNING["grid"], "train.lr": [0.0003, 0.001, 0.003]}}
    assert set(grid_points(TUNING, "mmoe")) < set(grid_points(wider, "mmoe"))


def test_per_model_values_replace_the_grid_for_that_model_only():
    assert "expert_hidden=256,lr=0.001,shuffle=true" in grid_points(TUNING, "ple")
    assert "expert_hidden=256,lr=0.001,shuffle=true" not in grid_points(TUNING, "mmoe")


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
    point = grid_points(TUNING, "mmoe")["expert_hidden=256x128,lr=0.001,shuffle=true"]
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


# ------------------------------------------------------------------------- the stage (#17)
EXPERIMENT = "census_tuned"


def _point_metrics(val, best_epoch, epochs, commit="abc"):
    return {"metric": "auc", "tasks": ["income", "marital"],
            "val_auc": {"income": val[0], "marital": val[1]},
            "test_auc": {"income": val[0] - 0.01, "marital": val[1] - 0.01},
            "best_epoch": best_epoch, "epochs_run": min(best_epoch + 5, epochs),
            "params": {"train": {"epochs": epochs}},
            "provenance": {"git_commit": commit}}


def _write(path, payload):
    path.mkdir(parents=True, exist_ok=True)
    (path / "metrics.json").write_text(json.dumps(payload))


def test_the_tuned_experiment_searches_every_model_with_its_own_grid(params):
    assert len(dag.grid_point_names(params, EXPERIMENT, "mmoe")) == 24
    assert len(dag.grid_point_names(params, EXPERIMENT, "csrec")) == 8  # the masks fix the bottom
    assert "expert_hidden=256,lr=0.001,shuffle=false" in dag.grid_point_names(
        params, EXPERIMENT, "ple")


def test_the_dag_and_the_jobs_read_one_layout_of_a_search(tmp_path):
    """The DAG's repo-relative paths and the jobs' paths under any runs root are one layout."""
    point = "expert_hidden=256x128,lr=0.001,shuffle=true"
    assert point_dir("runs", EXPERIMENT, "mmoe", point, 7).as_posix() == dag.point_run_dir(
        EXPERIMENT, "mmoe", point, 7)
    assert choice_path("runs", EXPERIMENT, "mmoe").as_posix() == dag.choice_file(EXPERIMENT, "mmoe")
    assert point_dir(tmp_path, EXPERIMENT, "mmoe", point, 7) == (
        tmp_path / EXPERIMENT / "tuning" / "mmoe" / point / "seed=7")
    assert choice_path(tmp_path, EXPERIMENT, "mmoe") == (
        tmp_path / EXPERIMENT / "tuning" / "mmoe" / "choice.json")


def test_a_tuned_run_reads_its_choice_and_a_grid_point_does_not(params):
    seed = str(params["train"]["seeds"][0])  # the search seed: the first train seed
    cmd = dag.train_cmd(params, EXPERIMENT, "mmoe", seed)
    assert cmd.endswith(f"--choice {dag.choice_file(EXPERIMENT, 'mmoe')}")
    assert dag.train_inputs(params, EXPERIMENT, "mmoe", seed)["choice"] == dag.choice_file(
        EXPERIMENT, "mmoe")
    point = dag.grid_point_names(params, EXPERIMENT, "mmoe")[0]
    point_cmd = dag.train_cmd(params, EXPERIMENT, "mmoe", seed, point)
    assert f"--out {dag.point_run_dir(EXPERIMENT, 'mmoe', point, seed)} " in point_cmd
    assert point_cmd.endswith(f"--point {point}")
    assert "choice" not in dag.train_inputs(params, EXPERIMENT, "mmoe", seed, point=point)
    assert "tuning.census_tuned.train" in dag.run_keys(params, EXPERIMENT, "mmoe")
    assert "tuning.census_tuned.train" not in dag.run_keys(params, "census", "mmoe")
    # the default experiments' commands are what they were
    assert "--choice" not in dag.train_cmd(params, "census", "mmoe", seed)


def test_dvc_stages_of_the_search_are_a_point_matrix_a_choice_and_the_tuned_runs(params):
    tuned = copy.deepcopy(params)
    tuned["build"] = [EXPERIMENT]
    stages = {s.name: s for s in dag.stages(tuned)}
    search = stages[f"tune-{EXPERIMENT}-mmoe"]
    assert search.matrix == {"point": dag.grid_point_names(params, EXPERIMENT, "mmoe")}
    assert not search.per_seed and "${item.point}" in search.cmd
    choose_stage = stages[f"tune_select-{EXPERIMENT}-mmoe"]
    assert len([d for d in choose_stage.deps if d.endswith("metrics.json")]) == 24
    assert dag.choice_file(EXPERIMENT, "mmoe") in stages[f"train-{EXPERIMENT}-mmoe"].deps
    masked = stages[f"tune-{EXPERIMENT}-csrec"]
    seed = params["train"]["seeds"][0]
    assert f"runs/{EXPERIMENT}/masks/seed={seed}/masks.pt" in masked.deps
    assert stages[f"tuning-{EXPERIMENT}"].metrics == [f"results/metrics/tuning_{EXPERIMENT}.json"]


def test_tuned_params_apply_the_point_and_the_search_cap(params, tmp_path):
    point = "expert_hidden=512x256,lr=0.004,shuffle=true"
    tuned, record = tuned_params(params, EXPERIMENT, "mmoe", point=point)
    assert tuned["train"]["lr"] == 0.004 and tuned["train"]["shuffle"] is True
    assert tuned["train"]["epochs"] == params["tuning"][EXPERIMENT]["train"]["epochs"]
    assert tuned["models"]["mmoe"]["expert_hidden"] == [512, 256]
    assert record == {"point": point, "source": "grid", "train": {"epochs": 100},
                      "values": {"train.lr": 0.004, "model.expert_hidden": [512, 256],
                                 "train.shuffle": True}}
    assert params["train"]["lr"] == 0.001  # the caller's params are not changed
    same, none = tuned_params(params, "census", "mmoe")
    assert same == params and none is None


@pytest.mark.parametrize("kwargs, message", [
    ({}, "is tuned"),
    ({"point": "expert_hidden=1x1,lr=9,shuffle=false"}, "not a point of the grid"),
])
def test_tuned_params_refuse_a_missing_or_unknown_point(params, kwargs, message):
    with pytest.raises(MtlrecError, match=message):
        tuned_params(params, EXPERIMENT, "mmoe", **kwargs)


def test_a_point_or_choice_for_an_untuned_experiment_is_refused(params):
    with pytest.raises(MtlrecError, match="no tuning.census section"):
        tuned_params(params, "census", "mmoe", point="lr=0.001")


def _search_params(params):
    small = copy.deepcopy(params)
    small["tuning"][EXPERIMENT]["grid"] = {"train.lr": [0.001, 0.002],
                                           "train.shuffle": [False, True]}
    small["tuning"][EXPERIMENT]["per_model"] = {}
    return small


def test_select_records_every_point_and_chooses_the_best_validation_sum(params, tmp_path):
    small = _search_params(params)
    seed = small["train"]["seeds"][0]
    vals = {"lr=0.001,shuffle=false": ((0.94, 0.99), 30),
            "lr=0.001,shuffle=true": ((0.95, 0.99), 12),   # best sum: 1.94
            "lr=0.002,shuffle=false": ((0.949, 0.991), 100),  # 1.94 too: a tie, later in order
            "lr=0.002,shuffle=true": ((0.93, 0.98), 8)}
    for name, (val, best) in vals.items():
        _write(point_dir(tmp_path, EXPERIMENT, "mmoe", name, seed), _point_metrics(val, best, 100))
    chosen = select(small, EXPERIMENT, "mmoe", tmp_path)
    assert chosen["choice"] == "lr=0.001,shuffle=true"
    assert chosen["values"] == {"train.lr": 0.001, "train.shuffle": True}
    assert chosen["order"] == list(vals)
    assert [p["hit_cap"] for p in chosen["points"].values()] == [False, False, True, False]
    assert chosen["grid_run_commits"] == ["abc"]
    # a run missing from the grid stops the choice
    (point_dir(tmp_path, EXPERIMENT, "mmoe", "lr=0.002,shuffle=true", seed)
     / "metrics.json").unlink()
    with pytest.raises(MtlrecError, match="missing grid run"):
        select(small, EXPERIMENT, "mmoe", tmp_path)


def test_a_tuned_run_trains_the_point_its_choice_names(params, tmp_path):
    small = _search_params(params)
    path = choice_path(tmp_path, EXPERIMENT, "mmoe")
    path.parent.mkdir(parents=True)
    payload = {"experiment": EXPERIMENT, "run": "mmoe", "choice": "lr=0.002,shuffle=true",
               "points": {}}
    path.write_text(json.dumps(payload))
    tuned, record = tuned_params(small, EXPERIMENT, "mmoe", choice=path)
    assert (tuned["train"]["lr"], tuned["train"]["shuffle"]) == (0.002, True)
    assert record["source"] == "choice"
    with pytest.raises(MtlrecError, match="not of census_tuned/ple"):
        tuned_params(small, EXPERIMENT, "ple", choice=path)
    payload["choice"] = "lr=0.5,shuffle=true"  # the grid no longer has it: a stale choice
    path.write_text(json.dumps(payload))
    with pytest.raises(MtlrecError, match="rerun the search"):
        tuned_params(small, EXPERIMENT, "mmoe", choice=path)


@pytest.mark.parametrize("edit, message", [
    (lambda p: p["tuning"][EXPERIMENT].update(seed=7), "must be one of train.seeds"),
    (lambda p: p["tuning"].update(nowhere=p["tuning"][EXPERIMENT]), "no experiments.nowhere"),
    (lambda p: p["tuning"].update(census_education=p["tuning"][EXPERIMENT]), "new task"),
    (lambda p: p["tuning"][EXPERIMENT]["per_model"].update(
        csrec={"model.expert_hidden": [[64, 32]]}), "must equal pruning.network"),
    (lambda p: p["tuning"][EXPERIMENT]["grid"].update({"model.num_experts": [0]}),
     "num_experts"),
    (lambda p: p["report"]["census"].update(
        tuning={"models": ["mmoe"], "reference": "census_tuned", "decimals": 4}),
     "no tuning.census section"),
])
def test_a_bad_search_is_refused_when_params_load(params, edit, message):
    bad = copy.deepcopy(params)
    edit(bad)
    with pytest.raises(MtlrecError, match=message):
        check_cross_references(bad)


def test_the_tuning_table_sets_tuned_beside_default_with_a_paired_test(params, tmp_path):
    small = _search_params(params)
    seeds = [1, 2, 3]
    small["train"]["seeds"] = seeds
    small["report"][EXPERIMENT]["tuning"]["models"] = ["mmoe", "ple"]
    runs = tmp_path / "runs"
    for model in ("mmoe", "ple"):
        path = choice_path(runs, EXPERIMENT, model)
        path.parent.mkdir(parents=True)
        grid = grid_points(small["tuning"][EXPERIMENT], model)
        order = list(grid)
        points = {name: {"values": grid[name], "val_auc": {"income": 0.95, "marital": 0.99},
                         "score": 1.94, "best_epoch": 100 if i == 0 else 20, "epochs_run": 100,
                         "epochs_cap": 100, "hit_cap": i == 0} for i, name in enumerate(order)}
        path.write_text(json.dumps({"experiment": EXPERIMENT, "run": model, "seed": 1,
                                    "metric": "auc", "choice": order[1], "order": order,
                                    "points": points, "grid_run_commits": ["abc"]}))
        for i, seed in enumerate(seeds):
            for experiment, lift in ((EXPERIMENT, 0.002), ("census", 0.0)):
                metrics = {"tasks": ["income", "marital"], "best_epoch": 40 if i else 100,
                           "params": {"train": {"epochs": 100}},
                           "test_auc": {"income": 0.95 + lift + 0.001 * i,
                                        "marital": 0.99 + 0.0001 * i}}
                _write(runs / experiment / model / f"seed={seed}", metrics)
    rows = make_tuning_table(small, EXPERIMENT, runs, tmp_path / "tables", tmp_path / "figures")
    png = tmp_path / "figures" / f"tuning_{EXPERIMENT}.png"
    first = png.read_bytes()
    assert first.startswith(b"\x89PNG")
    make_tuning_table(small, EXPERIMENT, runs, tmp_path / "tables", tmp_path / "figures")
    assert png.read_bytes() == first  # the same inputs, the same bytes
    income = rows[0]["tasks"]["income"]
    assert income["p_value"] < 1e-6  # +0.002 on every seed
    assert rows[0]["tasks"]["marital"]["p_value"] != rows[0]["tasks"]["marital"]["p_value"]  # NaN
    assert rows[0]["points_at_cap"] == 1 and rows[0]["tuned_at_cap"] == 1
    md = (tmp_path / "tables" / f"tuning_{EXPERIMENT}.md").read_text()
    assert "| MMOE | lr=0.001,shuffle=true | 1/4 | 1/3 | 0.9510 ± 0.0010 | 0.9530 ± 0.0010 | " \
           "+0.0020 |" in md
    assert "`lr=0.001,shuffle=true` **(chosen)**" in md
    csv = (tmp_path / "tables" / f"tuning_{EXPERIMENT}.csv").read_text().splitlines()
    assert len(csv) == 1 + 8 and csv[2].endswith(",true")  # the second point is the choice
    assert csv[2].startswith('mmoe,"lr=0.001,shuffle=true",0.001,true,')  # values as in names
    cells = json.loads((tmp_path / "metrics" / f"tuning_{EXPERIMENT}.json").read_text())
    assert cells["cells"]["ple"]["income tuned"]["mean"] == pytest.approx(0.953)


def test_the_tuning_figure_puts_the_learning_rate_on_x_else_a_varying_number():
    def points(*values):
        return {str(i): {"values": v} for i, v in enumerate(values)}

    lr_and_size = points({"train.lr": 0.001, "model.expert_hidden": [8], "train.shuffle": True},
                         {"train.lr": 0.002, "model.expert_hidden": [8], "train.shuffle": True})
    assert _x_key(lr_and_size) == "train.lr"
    no_lr = points({"train.lr": 0.001, "model.reg_dnn": 0.1, "train.shuffle": True},
                   {"train.lr": 0.001, "model.reg_dnn": 0.2, "train.shuffle": False})
    assert _x_key(no_lr) == "model.reg_dnn"  # lr does not vary; booleans are not numbers
    assert _x_key(points({"train.shuffle": True}, {"train.shuffle": False})) is None
