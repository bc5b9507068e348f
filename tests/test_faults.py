"""Fault injection (#19): each bad input or failing write ends in one line naming the path and
the cause, and leaves no trusted output behind. docs/faults.md lists these cases."""

import gzip
import os
import shutil
import stat
from pathlib import Path
from unittest import mock

import pytest
from conftest import REPO, encode_census

from mtlrec.cli import main
from mtlrec.data import census
from mtlrec.data.sources import MIRROR_ENV, fetch
from mtlrec.errors import MtlrecError
from mtlrec.provenance import atomic_write, save_torch_atomic
from mtlrec.train.run import run_training


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert len(text.splitlines()) == 1, text
    return text


def _raw_copy(raw_census: Path, tmp_path: Path) -> Path:
    raw = tmp_path / "raw"
    shutil.copytree(raw_census, raw)
    return raw


def _rewrite_train(raw: Path, edit) -> None:
    path = raw / "census-income.data.gz"
    lines = gzip.decompress(path.read_bytes()).decode().splitlines(keepends=True)[:300]
    path.write_bytes(gzip.compress("".join(edit(lines)).encode()))


def test_a_corrupt_gzip_is_one_line_in_fetch_and_in_encode(tmp_path, raw_census):
    raw = _raw_copy(raw_census, tmp_path)
    data = raw / "census-income.data.gz"
    data.write_bytes(data.read_bytes()[:40] + b"\x00" * 64 + data.read_bytes()[104:2000])
    with pytest.raises(MtlrecError) as error:  # fetch finds the file in place and verifies it
        fetch("census", raw)
    assert "census-income.data.gz" in _one_line(error)
    with pytest.raises(MtlrecError) as error:
        encode_census(raw, tmp_path / "enc", "train", None, None, labels=False)
    assert "census-income.data.gz" in _one_line(error)
    assert not (tmp_path / "enc" / "train.parquet").exists()


def test_a_truncated_file_is_one_line(tmp_path, raw_census):
    raw = _raw_copy(raw_census, tmp_path)
    data = raw / "census-income.data.gz"
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    with pytest.raises(MtlrecError, match="corrupt or truncated") as error:
        encode_census(raw, tmp_path / "enc", "train", None, None, labels=False)
    _one_line(error)


def test_a_raw_file_edited_after_the_fetch_is_caught_at_encode(tmp_path, raw_census):
    raw = _raw_copy(raw_census, tmp_path)
    _rewrite_train(raw, lambda lines: lines)  # the first 300 rows only: another file
    with pytest.raises(MtlrecError, match="checksum mismatch for census-income.data.gz"):
        encode_census(raw, tmp_path / "enc", "train", None, None, labels=False)


@pytest.mark.parametrize("edit, message", [
    (lambda line: "abc" + line[line.index(","):], r"row 5, column 'age': non-numeric value 'abc'"),
    (lambda line: ", ".join(line.split(", ")[:30]) + "\n", r"row 5 has 30 fields, expected 42"),
])
def test_bad_raw_values_name_the_row_and_column(tmp_path, raw_census, edit, message):
    raw = _raw_copy(raw_census, tmp_path)
    _rewrite_train(raw, lambda lines: [*lines[:4], edit(lines[4]), *lines[5:]])
    with pytest.raises(MtlrecError, match=message) as error:
        census.read_raw(raw / "census-income.data.gz")
    _one_line(error)


def test_a_mirror_that_does_not_exist_is_an_error_not_a_silent_fallback(tmp_path, monkeypatch):
    monkeypatch.setenv(MIRROR_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(MtlrecError, match=r"\$MTLREC_DATA_MIRROR is .*nowhere.*not a folder"):
        fetch("census", tmp_path / "raw")


def test_an_unwritable_output_folder_fails_before_training(tmp_path, encoded_census,
                                                          tiny_params):
    """(Permissions do not bind root, so the writer is made to fail as it would.)"""
    denied = PermissionError(13, "Permission denied")
    with (mock.patch("tempfile.mkstemp", side_effect=denied),
          mock.patch("mtlrec.train.loop.train_epoch") as train_epoch,
          pytest.raises(MtlrecError, match="cannot write .*run.*Permission denied") as error):
        run_training(tiny_params, "census", "mmoe", 7, encoded_census, tmp_path / "run")
    _one_line(error)
    train_epoch.assert_not_called()  # it failed at once, not after an epoch


def test_a_full_disk_is_named_as_such(tmp_path):
    """torch's writer reports a full disk as 'unexpected pos'; the message says what it is."""
    full = mock.patch("torch.save", side_effect=RuntimeError("[enforce fail] unexpected pos 64"))
    usage = mock.patch("shutil.disk_usage", return_value=shutil._ntuple_diskusage(10, 10, 0))
    with full, usage, pytest.raises(MtlrecError, match="is it full") as error:
        save_torch_atomic(tmp_path / "model.pt", {"a": 1})
    _one_line(error)
    assert list(tmp_path.iterdir()) == []  # no partial file


def test_outputs_get_the_umask_mode_not_a_private_one(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "table.md", lambda tmp: tmp.write_text("x"))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "table.md").stat().st_mode) == 0o644


def test_an_os_fault_no_reader_anticipated_is_still_one_line(tmp_path, capsys):
    with mock.patch("mtlrec.config.load_params", side_effect=IsADirectoryError(
            21, "Is a directory", str(tmp_path))):
        code = main(["check", "--params", str(REPO / "params.yaml")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("mtlrec: error: Is a directory")
    assert len(err.strip().splitlines()) == 1


def test_result_json_is_strict(tmp_path):
    """NaN (an AUC undefined on a single-class split) is written as null; infinity is refused."""
    import json

    from mtlrec.provenance import write_json_atomic

    write_json_atomic(tmp_path / "m.json", {"auc": [float("nan"), 0.9], "n": 1})
    text = (tmp_path / "m.json").read_text()
    assert "NaN" not in text and json.loads(text) == {"auc": [None, 0.9], "n": 1}
    with pytest.raises(MtlrecError, match="non-finite"):
        write_json_atomic(tmp_path / "bad.json", {"train_loss": float("inf")})
    assert not (tmp_path / "bad.json").exists()


def test_a_table_names_a_run_without_a_metric(tmp_path, base_params):
    import copy
    import json

    from mtlrec.report.tables import make_table2

    params = copy.deepcopy(base_params)
    params["train"]["seeds"] = [1]
    params["report"]["census"]["table2"]["models"] = ["single_task", "mmoe"]
    for model in ("single_task", "mmoe"):
        out = tmp_path / "runs" / "census" / model / "seed=1"
        out.mkdir(parents=True)
        auc = {"income": 0.9, "marital": None if model == "mmoe" else 0.8}
        (out / "metrics.json").write_text(json.dumps({"model": model, "seed": 1, "tasks": [
            "income", "marital"], "test_auc": auc}))
    with pytest.raises(MtlrecError, match=r"mmoe seed=1 has no test_auc for \['marital'\]"):
        make_table2(params, "census", tmp_path / "runs", tmp_path / "tables")
