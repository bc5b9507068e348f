"""A user's own table as a dataset (reader `table`): encoding, and one-line errors for bad input."""

import copy
import json

import pandas as pd
import pytest
import yaml
from conftest import REPO

from mtlrec.config import deep_merge, load_params
from mtlrec.data.datasets import encode_dataset, fetch_dataset, write_task_labels
from mtlrec.errors import MtlrecError

OVERLAY = REPO / "examples" / "my_table.yaml"


@pytest.fixture
def params() -> dict:
    return load_params([REPO / "params.yaml", OVERLAY])


def _table(tmp_path, frame: pd.DataFrame, params: dict, **section) -> dict:
    path = tmp_path / "mine.csv"
    frame.to_csv(path, index=False)
    params = copy.deepcopy(params)
    mine = params["datasets"]["my_table"]
    mine.pop("sha256")
    mine.update(files={"train": str(path)}, sparse=["colour"], dense=["price"],
                labels={"clicked": "click"}, **section)
    params["experiments"]["my_table"]["tasks"] = ["clicked"]
    return params


def _frame(n=40) -> pd.DataFrame:
    return pd.DataFrame({"colour": ["red", "blue", "green", "red"] * (n // 4),
                         "price": [float(i) for i in range(n)],
                         "click": [0, 1] * (n // 2)})


def test_the_shipped_example_encodes_to_a_schema(tmp_path, params):
    raw, encoded = tmp_path / "raw", tmp_path / "encoded"
    fetch_dataset(params, "my_table", raw)
    schema = encode_dataset(params, "my_table", raw, encoded)
    assert schema["dataset"] == "my_table"
    assert schema["rows"] == {"train": 4200, "test": 1800}  # test_fraction 0.3 of 6,000
    assert [f["name"] for f in schema["sparse"]][:2] == ["class_worker", "education"]
    info = write_task_labels(params, "my_table", "high_income", raw, tmp_path / "high_income")
    assert info["rows"] == {"train": 4200, "test": 1800}
    train = pd.read_parquet(tmp_path / "high_income" / "train.parquet")
    assert set(train["label"].unique()) == {0, 1}
    again = tmp_path / "again"
    encode_dataset(params, "my_table", raw, again)  # deterministic: the same files
    for name in ("train.parquet", "test.parquet", "schema.json"):
        assert (encoded / name).read_bytes() == (again / name).read_bytes()
    assert json.loads((encoded / "schema.json").read_text())["rows"]["test"] == 1800


@pytest.mark.parametrize("edit, message", [
    (lambda f: f.drop(columns=["price"]), r"lacks column\(s\) \['price'\]"),
    (lambda f: f.assign(click=[0, 2] * 20), r"label column 'click' \(task clicked\) is not binary"),
    (lambda f: f.assign(click=["yes", "no"] * 20), "is not binary 0/1: found"),
    (lambda f: f.assign(price=["cheap"] + [1.0] * 39), "dense column 'price' has a non-numeric"),
    (lambda f: f.head(0), "the train split is empty"),
])
def test_bad_tables_are_one_line_errors_naming_the_problem(tmp_path, params, edit, message):
    params = _table(tmp_path, edit(_frame()), params, test_fraction=0.25)
    fetch_dataset(params, "my_table", tmp_path / "raw")
    with pytest.raises(MtlrecError, match=message) as error:  # the encode or the labels stage
        encode_dataset(params, "my_table", tmp_path / "raw", tmp_path / "enc")
        write_task_labels(params, "my_table", "clicked", tmp_path / "raw", tmp_path / "lab")
    assert len(str(error.value).splitlines()) == 1
    assert not (tmp_path / "lab").exists()


def test_a_changed_file_fails_its_checksum(tmp_path, params):
    params = _table(tmp_path, _frame(), params, test_fraction=0.25)
    params["datasets"]["my_table"]["sha256"] = {"train": "0" * 64}
    with pytest.raises(MtlrecError, match="checksum mismatch"):
        fetch_dataset(params, "my_table", tmp_path / "raw")


def test_a_missing_file_and_an_unknown_task_are_named(tmp_path, params):
    bad = copy.deepcopy(params)
    bad["datasets"]["my_table"]["files"]["train"] = "nowhere/mine.csv"
    with pytest.raises(MtlrecError, match="files.train: .*nowhere/mine.csv not found"):
        fetch_dataset(bad, "my_table", tmp_path / "raw")
    wrong_task = deep_merge(params, {"experiments": {"my_table": {"tasks": ["bought"]}}})
    from mtlrec.config import check_cross_references

    with pytest.raises(MtlrecError, match=r"\['bought'\] not in datasets.my_table.labels"):
        check_cross_references(wrong_task)


def test_overlay_is_a_params_edit_only():
    """The worked example is one params overlay over params.yaml; it builds only its experiment."""
    overlay = yaml.safe_load(OVERLAY.read_text())
    assert overlay["build"] == ["my_table"]
    assert set(overlay) <= {"paths", "datasets", "experiments", "report", "build", "train"}
