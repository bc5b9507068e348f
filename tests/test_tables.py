import copy
import json
import statistics

import pytest

from mtlrec.errors import MtlrecError
from mtlrec.report.tables import make_table2


def _write_runs(root, models, seeds, base):
    for i, model in enumerate(models):
        for j, seed in enumerate(seeds):
            out = root / "census" / model / f"seed={seed}"
            out.mkdir(parents=True)
            metrics = {
                "model": model, "seed": seed, "tasks": ["income", "marital"],
                "test_auc": {"income": base + 0.01 * i + 0.001 * j, "marital": 0.9 - 0.01 * i},
                "rows": {"train": 10, "val": 5, "test": 5},
                "provenance": {"git_commit": "abc", "device": "cpu:x", "num_threads": 1,
                               "versions": {"torch": "2.13.0"}},
            }
            (out / "metrics.json").write_text(json.dumps(metrics))


def test_table2_cells_are_mean_std_with_paper_value_and_gain(tmp_path, base_params):
    base_params = copy.deepcopy(base_params)
    models = base_params["report"]["table2"]["models"]
    seeds = [1, 2, 3]
    base_params["train"]["seeds"] = seeds
    _write_runs(tmp_path / "runs", models, seeds, base=0.9)
    rows = make_table2(base_params, tmp_path / "runs", tmp_path / "tables")

    mmoe = next(r for r in rows if r["model"] == "mmoe")["tasks"]["income"]
    values = [0.92, 0.921, 0.922]
    assert mmoe["mean"] == pytest.approx(statistics.fmean(values))
    assert mmoe["std"] == pytest.approx(statistics.stdev(values))
    assert mmoe["gain"] == pytest.approx(0.02)  # vs single_task (i = 0)
    md = (tmp_path / "tables" / "table2_census.md").read_text()
    row = "| MMOE | 0.9210 ± 0.0010 | 0.9494 | 0.8800 ± 0.0000 | 0.9901 | +0.0200 | -0.0200 |"
    assert row in md
    tex = (tmp_path / "tables" / "table2_census.tex").read_text()
    assert r"\toprule" in tex and r"0.9210 $\pm$ 0.0010 & 0.9494" in tex
    assert "% git commits of the runs: abc" in tex


def test_table_refuses_missing_runs(tmp_path, base_params):
    base_params = copy.deepcopy(base_params)
    base_params["train"]["seeds"] = [1, 2]
    _write_runs(tmp_path / "runs", ["single_task"], [1], base=0.9)
    with pytest.raises(MtlrecError, match="missing run"):
        make_table2(base_params, tmp_path / "runs", tmp_path / "tables")
