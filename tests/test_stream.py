"""Streaming datasets (mtlrec.data.stream): encoding in parts, splits by hash, batches from disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from mtlrec.config import load_params
from mtlrec.data import stream
from mtlrec.data.batches import TensorSplit
from mtlrec.data.datasets import encode_dataset, fetch_dataset, write_task_labels
from mtlrec.data.encode import Encoders
from mtlrec.data.splits import load_splits
from mtlrec.errors import MtlrecError

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ["user", "item", "city", "price", "clicked", "bought"]


def _section(path: Path, **extra) -> dict:
    section = {
        "reader": "stream", "files": {"all": str(path)}, "delimiter": "\t", "columns": COLUMNS,
        "split_fractions": {"train": 0.8, "val": 0.1, "test": 0.1}, "split_seed": 7,
        "sparse": ["user", "item", "city"], "dense": ["price"],
        "tasks": {"click": {"column": "clicked", "equals": 1},
                  "buy": {"column": "bought", "equals": 1}},
        "fit_encoders_on": "train", "min_count": 1, "max_rows": {}, "rows_per_part": 700,
    }
    section.update(extra)
    return section


@pytest.fixture
def raw_file(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    n = 5000
    frame = pd.DataFrame({
        "user": rng.integers(0, 300, n), "item": rng.zipf(1.5, n) % 1000,
        "city": rng.choice(["a", "b", "c", "d"], n), "price": rng.gamma(2.0, 3.0, n).round(3),
        "clicked": rng.integers(0, 2, n), "bought": (rng.random(n) < 0.2).astype(int),
    })
    path = tmp_path / "raw" / "events.txt"
    path.parent.mkdir()
    frame.to_csv(path, sep="\t", header=False, index=False)
    return path


def _encode(tmp_path: Path, section: dict, out: str = "enc") -> dict:
    return stream.encode_stream("toy", section, section_raw_dir(section), tmp_path / out)


def section_raw_dir(section: dict) -> Path:
    return Path(section["files"]["all"]).parent


def _parts(folder: Path) -> pd.DataFrame:
    return pd.concat([pq.read_table(p).to_pandas() for p in sorted(folder.glob("part-*"))],
                     ignore_index=True)


def test_parts_hold_every_row_once_with_codes_of_the_in_memory_encoder(tmp_path, raw_file):
    section = _section(raw_file)
    schema = _encode(tmp_path, section)
    raw = pd.read_csv(raw_file, sep="\t", names=COLUMNS, dtype=str)
    which = stream.assign_splits(0, len(raw), section["split_fractions"], 7)
    assert sum(schema["rows"].values()) == len(raw)
    assert abs(schema["rows"]["train"] / len(raw) - 0.8) < 0.03
    train_raw = raw[which == 0].reset_index(drop=True)
    train_raw["price"] = train_raw["price"].astype(float)
    expected = Encoders.fit(train_raw, ["user", "item", "city"], ["price"]).transform(train_raw)
    encoded = _parts(tmp_path / "enc" / "train")
    assert len(list((tmp_path / "enc" / "train").glob("part-*"))) == -(-len(train_raw) // 700)
    for field in ("user", "item", "city"):
        np.testing.assert_array_equal(encoded[field].to_numpy(), expected[field])
    np.testing.assert_allclose(encoded["price"].to_numpy(), expected["price"], rtol=1e-6)
    np.testing.assert_array_equal(encoded["row_id"], np.arange(len(train_raw)))


def test_parts_do_not_depend_on_the_read_block_size(tmp_path, raw_file, monkeypatch):
    section = _section(raw_file)
    _encode(tmp_path, section, "big")
    monkeypatch.setattr(stream, "BLOCK_BYTES", 4096)  # many small blocks
    _encode(tmp_path, section, "small")
    for split in stream.SPLITS:
        big, small = (sorted((tmp_path / d / split).glob("part-*")) for d in ("big", "small"))
        assert [p.name for p in big] == [p.name for p in small]
        for a, b in zip(big, small, strict=True):
            assert pq.read_table(a).equals(pq.read_table(b))


def test_rare_values_share_the_out_of_vocabulary_code(tmp_path, raw_file):
    schema = _encode(tmp_path, _section(raw_file, min_count=5))
    raw = pd.read_csv(raw_file, sep="\t", names=COLUMNS, dtype=str)
    which = stream.assign_splits(0, len(raw), {"train": 0.8, "val": 0.1, "test": 0.1}, 7)
    counts = raw.loc[which == 0, "item"].value_counts()
    kept = int((counts >= 5).sum())
    vocab = {f["name"]: f["vocab_size"] for f in schema["sparse"]}
    assert vocab["item"] == kept + 1
    codes = _parts(tmp_path / "enc" / "train")["item"]
    rare = raw.loc[which == 0, "item"].map(counts).to_numpy() < 5
    assert (codes[rare] == kept).all() and (codes[~rare] < kept).all()


def test_row_caps_take_the_first_rows_of_each_split(tmp_path, raw_file):
    schema = _encode(tmp_path, _section(raw_file, max_rows={"train": 1000, "val": 50}))
    assert schema["rows"]["train"] == 1000 and schema["rows"]["val"] == 50
    assert schema["rows"]["test"] > 50  # no cap


def test_labels_follow_the_rule_in_the_same_parts(tmp_path, raw_file):
    section = _section(raw_file)
    _encode(tmp_path, section)
    info = stream.write_stream_labels("toy", section, "buy", raw_file.parent, tmp_path / "lab")
    raw = pd.read_csv(raw_file, sep="\t", names=COLUMNS)
    which = stream.assign_splits(0, len(raw), section["split_fractions"], 7)
    for index, split in enumerate(stream.SPLITS):
        labels = _parts(tmp_path / "lab" / split)["label"].to_numpy()
        np.testing.assert_array_equal(labels, raw.loc[which == index, "bought"].to_numpy())
        assert info["rows"][split] == len(labels)


def test_streamed_batches_match_the_parts_and_shuffle_reproducibly(tmp_path, raw_file):
    section = _section(raw_file)
    schema = _encode(tmp_path, section)
    for task in section["tasks"]:
        stream.write_stream_labels("toy", section, task, raw_file.parent, tmp_path / "lab" / task)
    splits = load_splits(tmp_path / "enc", ["click", "buy"], 1, {}, labels_dir=tmp_path / "lab")
    train = splits.train
    assert len(train) == schema["rows"]["train"]
    batches = list(train.batches(256))
    assert all(len(b) == 256 for b in batches[:-1]) and 0 < len(batches[-1]) <= 256
    whole = torch.cat([b.row_id for b in batches])
    assert torch.equal(whole, torch.arange(len(train)))
    encoded = _parts(tmp_path / "enc" / "train")
    assert torch.equal(torch.cat([b.sparse[:, 0] for b in batches]),
                       torch.from_numpy(encoded["user"].to_numpy().astype(np.int64)))

    def order(seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return torch.cat([b.row_id for b in train.batches(256, True, gen)])

    first, again, other = order(3), order(3), order(4)
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert torch.equal(first.sort().values, torch.arange(len(train)))


def test_a_model_trains_on_a_streamed_dataset(tmp_path, raw_file):
    from mtlrec.evaluate.metrics import predict_with_labels
    from mtlrec.models.layers import FeatureSpec
    from mtlrec.models.mmoe import MMOE

    section = _section(raw_file)
    _encode(tmp_path, section)
    for task in section["tasks"]:
        stream.write_stream_labels("toy", section, task, raw_file.parent, tmp_path / "lab" / task)
    splits = load_splits(tmp_path / "enc", ["click", "buy"], 1, {}, labels_dir=tmp_path / "lab")
    features = FeatureSpec.from_schema(splits.schema)
    model = MMOE(features, 2, embed_dim=4, num_experts=2, expert_hidden=[16], tower_hidden=[8],
                 reg_emb=0.0, reg_dnn=0.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for rows in splits.train.batches(512, True, torch.Generator().manual_seed(0)):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            model(rows.dense, rows.sparse), rows.labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    scores, labels = predict_with_labels(model, splits.val, 300, _Sigmoid())
    assert scores.shape == labels.shape == (len(splits.val), 2)
    assert torch.isfinite(scores).all()


class _Sigmoid:
    @staticmethod
    def scores(logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)


def test_tensor_split_batches_are_the_index_batches(tmp_path):
    n = 1000
    split = TensorSplit(torch.randn(n, 3), torch.randint(0, 9, (n, 2)), torch.rand(n, 2),
                        torch.arange(n))
    from mtlrec.data.batches import batch_indices

    for shuffle in (False, True):
        a = torch.Generator().manual_seed(5)
        b = torch.Generator().manual_seed(5)
        for rows, idx in zip(split.batches(128, shuffle, a),
                             batch_indices(n, 128, shuffle, b), strict=True):
            assert torch.equal(rows.dense, split.dense[idx])
            assert torch.equal(rows.row_id, split.row_id[idx])


def test_missing_raw_file_and_missing_split_fractions_are_one_line(tmp_path, raw_file):
    with pytest.raises(MtlrecError, match="not found"):
        stream.encode_stream("toy", _section(raw_file, files={"all": "nope.txt"}),
                             raw_file.parent, tmp_path / "e")
    section = _section(raw_file)
    del section["split_fractions"]
    with pytest.raises(MtlrecError, match="split_fractions"):
        stream.encode_stream("toy", section, raw_file.parent, tmp_path / "e")


@pytest.mark.parametrize("dataset", ["ali_ccp_sample", "byterec_sample"])
def test_bundled_samples_encode_with_their_documented_counts(tmp_path, dataset):
    params = load_params([ROOT / "params.yaml"])
    raw = tmp_path / "raw"
    fetch_dataset(params, dataset, raw)
    schema = encode_dataset(params, dataset, raw, tmp_path / "enc")
    tasks = list(params["datasets"][dataset]["tasks"])
    infos = [write_task_labels(params, dataset, t, raw, tmp_path / "lab" / t) for t in tasks]
    total = sum(schema["rows"].values())
    assert total == 200  # resources/*/PROVENANCE.md
    positives = [round(sum(i["positive_rate"][s] * i["rows"][s] for s in stream.SPLITS))
                 for i in infos]
    if dataset == "byterec_sample":  # finish = 1 in 76 rows, like = 1 in 7; uid: 198 values
        assert positives == [76, 7]
        assert {f["name"]: f["vocab_size"] for f in schema["sparse"]}["uid"] == 199
    else:  # train 7 + val 3 + test 2 clicks, one purchase in each file
        assert positives == [12, 3] and schema["rows"] == {"train": 100, "val": 50, "test": 50}


# ---------------------------------------------------------------- the raw Tianchi format


def _features(items: list[tuple[str, str]]) -> str:
    return "\x01".join(f"{field}\x02{fid}\x031.0" for field, fid in items)


def _tianchi_files(tmp_path: Path) -> dict:
    raw = tmp_path / "raw"
    raw.mkdir(parents=True)
    common = [("c1", [("101", "u1"), ("121", "g1")]), ("c2", [("101", "u2")])]
    (raw / "common_features_train.csv").write_text(
        "".join(f"{key},{len(items)},{_features(items)}\n" for key, items in common))
    (raw / "common_features_test.csv").write_text(f"c1,1,{_features([('101', 'u9')])}\n")
    rows = [  # sample_id, click, conversion, common index, items
        ("1", "1", "1", "c1", [("205", "i1"), ("301", "1")]),
        ("2", "0", "1", "c2", [("205", "i2")]),               # dropped: no click, a purchase
        ("3", "0", "0", "c2", [("205", "i3"), ("205", "i4"), ("301", "2")]),  # last wins
        ("4", "1", "0", "zz", [("205", "i1")]),               # unknown common index
    ] * 50
    (raw / "sample_skeleton_train.csv").write_text("".join(
        f"{i},{c},{p},{k},{len(it)},{_features(it)}\n" for i, c, p, k, it in rows))
    (raw / "sample_skeleton_test.csv").write_text(f"9,1,0,c1,1,{_features([('205', 'i1')])}\n")
    return {"train": str(raw / "sample_skeleton_train.csv"),
            "train_common": str(raw / "common_features_train.csv"),
            "test": str(raw / "sample_skeleton_test.csv"),
            "test_common": str(raw / "common_features_test.csv")}


def _tianchi_section(files: dict) -> dict:
    return {"reader": "stream", "format": "tianchi", "files": files,
            "split_fractions": {"train": 0.9, "val": 0.1}, "split_seed": 2020,
            "sparse": ["101", "121", "205", "301"], "dense": [],
            "tasks": {"click": {"column": "click", "equals": 1},
                      "purchase": {"column": "purchase", "equals": 1}},
            "fit_encoders_on": "train", "min_count": 1, "max_rows": {}, "rows_per_part": 64}


def test_tianchi_join_fills_drops_and_keeps_the_last_value(tmp_path: Path) -> None:
    files = _tianchi_files(tmp_path)
    blocks = list(stream._blocks("ali", _tianchi_section(files), Path(files["train"])))
    frame = pd.concat([b.to_pandas() for b in blocks], ignore_index=True)
    assert len(frame) == 150  # 50 of the 200 rows are click 0 / purchase 1
    first = frame.iloc[:3].to_dict("records")
    assert first[0] == {"click": "1", "purchase": "1", "101": "u1", "121": "g1", "205": "i1",
                        "301": "1"}
    assert first[1] == {"click": "0", "purchase": "0", "101": "u2", "121": "0", "205": "i4",
                        "301": "2"}
    assert first[2] == {"click": "1", "purchase": "0", "101": "0", "121": "0", "205": "i1",
                        "301": "0"}


def test_tianchi_encodes_train_into_train_and_val_and_test_from_its_own_file(tmp_path: Path
                                                                             ) -> None:
    files = _tianchi_files(tmp_path)
    section = _tianchi_section(files)
    schema = stream.encode_stream("ali", section, tmp_path / "raw", tmp_path / "enc")
    assert schema["rows"]["train"] + schema["rows"]["val"] == 150
    assert 0 < schema["rows"]["val"] < 40 and schema["rows"]["test"] == 1
    sizes = {f["name"]: f["vocab_size"] for f in schema["sparse"]}
    # 205: i1 and i4 (i2 is on a dropped row, i3 is overwritten); "0" is a value like any other
    assert sizes == {"101": 3 + 1, "121": 2 + 1, "205": 2 + 1, "301": 3 + 1}
    test = pq.read_table(tmp_path / "enc" / "test" / "part-00000.parquet").to_pydict()
    assert test["101"] == [sizes["101"] - 1]  # u9 is not in the train vocabulary: OOV


def test_tianchi_without_its_common_file_or_with_dense_fields_is_one_line(tmp_path: Path
                                                                          ) -> None:
    files = _tianchi_files(tmp_path)
    del files["test_common"]
    with pytest.raises(MtlrecError, match="files.test_common is missing"):
        stream.encode_stream("ali", _tianchi_section(files), tmp_path / "raw", tmp_path / "e")
    files = _tianchi_files(tmp_path / "again")
    section = _tianchi_section(files) | {"dense": ["D508"]}
    with pytest.raises(MtlrecError, match="format tianchi"):
        stream.encode_stream("ali", section, tmp_path / "again" / "raw", tmp_path / "e")


def test_a_train_file_without_val_needs_train_val_fractions(raw_file: Path, tmp_path: Path
                                                            ) -> None:
    section = _section(raw_file, files={"train": str(raw_file), "test": str(raw_file)},
                       split_fractions={"train": 0.8, "val": 0.1, "test": 0.1})
    with pytest.raises(MtlrecError, match=r"needs split_fractions over \['train', 'val'\]"):
        stream.encode_stream("toy", section, raw_file.parent, tmp_path / "enc")


def test_a_missing_full_scale_raw_file_names_its_path_and_source(tmp_path: Path) -> None:
    params = load_params([ROOT / "params.yaml"])
    section = params["datasets"]["ali_ccp"]
    if (ROOT / section["files"]["train"]).is_file():
        pytest.skip("the full Ali-CCP data is present here")
    with pytest.raises(MtlrecError, match=r"files.train: .*sample_skeleton_train.csv not found "
                                          r"\(source: https://tianchi.aliyun.com/dataset/408"):
        fetch_dataset(params, "ali_ccp", tmp_path)


@pytest.mark.parametrize("merge_every", [1, 2, 32])
def test_value_counts_over_blocks_equal_one_count_of_all_rows(merge_every):
    import pyarrow as pa

    rng = np.random.default_rng(0)
    blocks = [pa.array([f"v{i}" for i in rng.integers(0, 40, size)]) for size in (50, 1, 80, 7)]
    counts = stream.ValueCounts(merge_every)
    for block in blocks:
        counts.add(block)
    everything = pd.Series(np.concatenate([b.to_numpy(zero_copy_only=False) for b in blocks]))
    direct = everything.value_counts()
    assert counts.at_least(1) == sorted(direct.index)
    assert counts.at_least(3) == sorted(direct.index[direct.to_numpy() >= 3])
    assert counts.at_least(10_000) == []
    assert stream.ValueCounts().at_least(1) == []  # no block at all


def test_a_block_is_encoded_by_its_sorted_vocabulary_and_unknown_values_get_the_last_code():
    import pyarrow as pa

    block = pa.record_batch({"f": pa.array(["b", "z", "a", "b", "a"]),
                             "x": pa.array([1.0, 3.0, float("nan"), 2.0, 5.0])})
    table = stream._encode_block(block, {"f": pd.Index(["a", "b", "c"], dtype=object)},
                                 {"x": (1.0, 5.0)}, first_row_id=10)
    assert table["f"].to_pylist() == [1, 3, 0, 1, 0]
    assert table["x"].to_pylist() == [0.0, 0.5, 0.0, 0.25, 1.0]
    assert table["row_id"].to_pylist() == [10, 11, 12, 13, 14]
