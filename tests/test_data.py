import gzip
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SPLIT, encode_census

from mtlrec.data import census
from mtlrec.data.batches import batch_indices
from mtlrec.data.sources import SOURCES, fetch, sha256_decompressed
from mtlrec.data.splits import load_splits
from mtlrec.errors import MtlrecError


def test_bundled_raw_files_verify(raw_census):
    for raw in SOURCES["census"]["files"]:
        assert sha256_decompressed(raw_census / raw.name) == raw.sha256_decompressed


def test_checksum_mismatch_is_a_clear_error(tmp_path, raw_census):
    out = tmp_path / "census"
    out.mkdir()
    with gzip.open(raw_census / "census-income.data.gz", "rb") as src:
        head = src.read(100_000)
    with gzip.open(out / "census-income.data.gz", "wb") as dst:
        dst.write(head)  # truncated: right name, wrong content
    with pytest.raises(MtlrecError, match="checksum mismatch for census-income.data.gz"):
        fetch("census", out)


def test_mirror_folder_is_used(tmp_path, raw_census):
    mirror = tmp_path / "mirror"
    shutil.copytree(raw_census, mirror)
    placed = fetch("census", tmp_path / "out", mirror=str(mirror))
    assert [p.name for p in placed] == ["census-income.data.gz", "census-income.test.gz"]


def test_raw_census_has_the_documented_shape(raw_census, base_params):
    from mtlrec.data.tasks import task_label

    frame = census.read_raw(raw_census / "census-income.test.gz")
    assert frame.shape == (99_762, 42)
    tasks = base_params["datasets"]["census"]["tasks"]  # the declared rules of params.yaml
    rates = {task: task_label(frame, task, decl, "test").mean() for task, decl in tasks.items()}
    # positives: income 6.2 %, never married 43 %, bachelors 9.9 % (PROVENANCE.md, spec section 3.1)
    assert rates["income"] == pytest.approx(6186 / 99_762)
    assert 0.42 < rates["marital"] < 0.44
    assert 0.098 < rates["education"] < 0.100
    assert 0.47 < rates["sex"] < 0.49  # Male


@pytest.mark.parametrize(("n_columns", "word"), [(41, "missing"), (43, "extra")])
def test_wrong_column_count_is_a_clear_error(tmp_path, raw_census, n_columns, word):
    frame = census.read_raw(raw_census / "census-income.test.gz", max_rows=20)
    if n_columns < 42:
        frame = frame.iloc[:, :n_columns]
    else:
        frame["surplus"] = "x"
    path = tmp_path / "bad.csv"
    frame.to_csv(path, header=False, index=False)
    with pytest.raises(MtlrecError, match=f"{n_columns} columns, expected 42 \\({word}"):
        census.read_raw(path)


def test_encoding_schema_and_oov(encoded_census):
    schema = json.loads((encoded_census / "schema.json").read_text())
    assert len(schema["sparse"]) == 29 and len(schema["dense"]) == 11
    assert "tasks" not in schema  # labels are the labels stage's, one folder per task
    labels = encoded_census.parents[1] / "labels" / "census"
    assert sorted(p.name for p in labels.iterdir()) == ["education", "income", "marital", "sex"]
    info = json.loads((labels / "education" / "label.json").read_text())
    assert info["rows"] == schema["rows"] and 0.05 < info["positive_rate"]["train"] < 0.2
    train = pd.read_parquet(encoded_census / "train.parquet")
    test = pd.read_parquet(encoded_census / "test.parquet")
    for field in schema["sparse"]:
        # train codes never use the OOV slot; test codes stay inside the table
        assert train[field["name"]].max() < field["vocab_size"] - 1
        assert test[field["name"]].max() <= field["vocab_size"] - 1
    assert train["age"].min() == 0.0 and train["age"].max() == 1.0


def test_per_file_fitting_shifts_codes_like_the_official_code(tmp_path, raw_census):
    """The official per-file LabelEncoder gives det_hh_fam_stat 38 values in train, 37 in test,
    so the same raw value gets different codes in the two files; train-fitting does not."""
    raw_test = census.read_raw(raw_census / "census-income.test.gz")
    encode_census(raw_census, tmp_path / "per_file", "per_file", None, None, labels=False)
    encode_census(raw_census, tmp_path / "train_fit", "train", None, None, labels=False)
    value = "Spouse of householder"
    rows = np.flatnonzero(raw_test["det_hh_fam_stat"].to_numpy() == value)[:1]
    codes = {}
    for mode in ("per_file", "train_fit"):
        train = pd.read_parquet(tmp_path / mode / "train.parquet", columns=["det_hh_fam_stat"])
        raw_train = census.read_raw(raw_census / "census-income.data.gz", max_rows=200_000)
        train_row = np.flatnonzero(raw_train["det_hh_fam_stat"].to_numpy() == value)[0]
        test = pd.read_parquet(tmp_path / mode / "test.parquet", columns=["det_hh_fam_stat"])
        codes[mode] = (train["det_hh_fam_stat"][train_row], test["det_hh_fam_stat"][rows[0]])
    assert codes["train_fit"][0] == codes["train_fit"][1]
    assert codes["per_file"][0] != codes["per_file"][1]


def test_splits_follow_the_seed(encoded_census):
    a = load_splits(encoded_census, ["income", "marital"], seed=1, split=SPLIT)
    b = load_splits(encoded_census, ["income", "marital"], seed=1, split=SPLIT)
    c = load_splits(encoded_census, ["income", "marital"], seed=2, split=SPLIT)
    assert torch.equal(a.val.row_id, b.val.row_id)
    assert not torch.equal(a.val.row_id, c.val.row_id)
    assert len(a.val) + len(a.test) == 2000
    assert set(a.val.row_id.tolist()).isdisjoint(a.test.row_id.tolist())
    assert a.train.labels.shape == (3000, 2)


def test_unknown_task_is_a_clear_error(encoded_census):
    with pytest.raises(MtlrecError, match="salary/train.parquet not found; run the labels"):
        load_splits(encoded_census, ["income", "salary"], seed=1, split=SPLIT)


def test_batch_indices_cover_every_row_once():
    ordered = list(batch_indices(10, 4, shuffle=False))
    assert [(s.start, s.stop) for s in ordered] == [(0, 4), (4, 8), (8, 10)]
    shuffled = torch.cat(list(batch_indices(10, 4, True, torch.Generator().manual_seed(0))))
    assert sorted(shuffled.tolist()) == list(range(10)) and shuffled.tolist() != list(range(10))


def test_download_by_url_is_verified_and_a_bad_download_is_removed(tmp_path, raw_census,
                                                                    monkeypatch):
    from mtlrec.data import sources

    monkeypatch.setattr(sources, "BUNDLED", tmp_path / "nothing-bundled")
    monkeypatch.delenv(sources.MIRROR_ENV, raising=False)
    good = [sources.RawFile(r.name, (raw_census / r.name).as_uri(), r.sha256_decompressed, "")
            for r in SOURCES["census"]["files"]]
    monkeypatch.setitem(sources.SOURCES, "census", {"bundled_dir": "x", "files": good})
    placed = fetch("census", tmp_path / "ok")
    assert all(p.is_file() for p in placed)

    bad = [sources.RawFile(good[0].name, good[1].url, good[0].sha256_decompressed, "")]
    monkeypatch.setitem(sources.SOURCES, "census", {"bundled_dir": "x", "files": bad})
    with pytest.raises(MtlrecError, match="checksum mismatch"):
        fetch("census", tmp_path / "bad")
    assert not (tmp_path / "bad" / good[0].name).exists()  # nothing half-right is left behind
