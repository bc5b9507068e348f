import copy

import pytest

from mtlrec.cli import main
from mtlrec.config import check_cross_references, deep_merge, load_params, validate
from mtlrec.errors import MtlrecError


def test_repo_params_are_valid(base_params):
    validate(base_params)
    check_cross_references(base_params)


def test_profile_overlay_merges_and_validates(tmp_path):
    from conftest import REPO

    params = load_params([REPO / "params.yaml", REPO / "workflow/profiles/ci/params.yaml"])
    assert params["paths"]["root"] == "ci-out"
    assert params["train"]["epochs"] == 2
    assert params["train"]["lr"] == 0.001  # untouched keys survive the overlay


@pytest.mark.parametrize(
    ("overlay", "fragment"),
    [
        ({"train": {"epochz": 3}}, "epochz"),  # a typo
        ({"train": {"epochs": "30"}}, "train.epochs"),  # a wrong type
        ({"train": {"lr": -1.0}}, "train.lr"),
        ({"models": {"mmoe": {"num_experts": 0}}}, "models.mmoe.num_experts"),
        ({"datasets": {"census": {"fit_encoders_on": "test"}}}, "fit_encoders_on"),
        ({"datasets": {"census": {"mirorr": None}}}, "mirorr"),
        ({"display": {"progres": False}}, "progres"),
        ({"experiments": {"census": {"taks": ["income"]}}}, "taks"),
    ],
)
def test_bad_params_name_the_key(base_params, overlay, fragment):
    with pytest.raises(MtlrecError, match=fragment.replace(".", r"\.")):
        validate(deep_merge(base_params, overlay))


def test_unknown_model_in_report_is_rejected(base_params):
    params = copy.deepcopy(base_params)
    params["report"]["census"]["table2"]["models"].append("mmoee")
    with pytest.raises(MtlrecError, match="mmoee"):
        check_cross_references(params)


def test_cli_prints_one_line_error_without_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochz: 3\n")
    from conftest import REPO

    code = main(["check", "--params", str(REPO / "params.yaml"), "--params", str(bad)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("mtlrec: error: params:") and "epochz" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("edit, message", [
    (lambda p: p["models"]["csrec"].update(expert_hidden=[64]), "pruning.network.expert_hidden"),
    (lambda p: p["experiments"]["census"].update(dataset="aliccp"), "no datasets.aliccp"),
    (lambda p: p["experiments"]["census"].update(objective="bpr"), "objective: unknown 'bpr'"),
    (lambda p: p["experiments"]["census"].update(metric="ndcg"), "metric: unknown 'ndcg'"),
    (lambda p: p["build"].append("newtask"), "build: 'newtask'"),
    (lambda p: p["report"]["census"].pop("tsne"), "notebook needs"),
    (lambda p: p["report"]["census"]["table2"].update(baseline="mmoe2"), "baseline"),
])
def test_cross_references_are_checked(base_params, edit, message):
    params = copy.deepcopy(base_params)
    edit(params)
    with pytest.raises(MtlrecError, match=message):
        check_cross_references(params)


def test_committed_dvc_yaml_is_rendered_from_params(base_params):
    """dvc.yaml is generated from the DAG definition: the committed file is the current one."""
    from mtlrec.workflow import dvc_yaml_is_current

    assert dvc_yaml_is_current(base_params), "run: mtlrec dag dvc --out dvc.yaml"


def test_check_notes_a_stale_dvc_yaml(capsys):
    from conftest import REPO

    assert main(["check", "--params", str(REPO / "params.yaml")]) == 0
    assert "dvc.yaml" not in capsys.readouterr().err
    assert main(["check", "--params", str(REPO / "params.yaml"), "--params",
                 str(REPO / "examples/my_table.yaml")]) == 0
    assert "mtlrec dag dvc --out dvc.yaml" in capsys.readouterr().err
