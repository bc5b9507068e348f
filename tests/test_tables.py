import copy
import json
import statistics

import pytest

from mtlrec.errors import MtlrecError
from mtlrec.report.tables import make_table2


def _write_runs(root, models, seeds, base, experiment="census"):
    for i, model in enumerate(models):
        for j, seed in enumerate(seeds):
            out = root / experiment / model / f"seed={seed}"
            out.mkdir(parents=True)
            metrics = {
                "model": model, "seed": seed, "tasks": ["income", "marital"],
                "test_auc": {"income": base + 0.01 * i + 0.001 * j, "marital": 0.9 - 0.01 * i},
                "rows": {"train": 10, "val": 5, "test": 5},
                "curves": [{"epoch": 1, "val_auc": [0.8, 0.85]}],
                "provenance": {"git_commit": "abc", "device": "cpu:x", "num_threads": 1,
                               "versions": {"torch": "2.13.0"}},
            }
            (out / "metrics.json").write_text(json.dumps(metrics))


def test_table2_cells_are_mean_std_with_paper_value_and_gain(tmp_path, base_params):
    base_params = copy.deepcopy(base_params)
    models = base_params["report"]["census"]["table2"]["models"]
    seeds = [1, 2, 3]
    base_params["train"]["seeds"] = seeds
    _write_runs(tmp_path / "runs", models, seeds, base=0.9)
    rows = make_table2(base_params, "census", tmp_path / "runs", tmp_path / "tables")

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


def test_table2_paper_key_names_the_paper_values_of_another_dataset(tmp_path, base_params):
    """An experiment on a re-encoded copy of Census (dataset census_per_file) gets the paper's
    Census values only when its report says `paper: census`."""
    params = copy.deepcopy(base_params)
    params["train"]["seeds"] = [1, 2]
    params["experiments"]["per_file"] = {**params["experiments"]["census"],
                                         "dataset": "census_per_file"}
    params["report"]["per_file"] = {"table2": {"models": ["single_task", "mmoe"],
                                               "baseline": "single_task", "decimals": 4}}
    _write_runs(tmp_path / "runs", ["single_task", "mmoe"], [1, 2], 0.9, "per_file")
    make_table2(params, "per_file", tmp_path / "runs", tmp_path / "a")
    assert "| MMOE | 0.9105 ± 0.0007 | -- |" in (tmp_path / "a" / "table2_per_file.md").read_text()
    params["report"]["per_file"]["table2"]["paper"] = "census"
    make_table2(params, "per_file", tmp_path / "runs", tmp_path / "b")
    table = (tmp_path / "b" / "table2_per_file.md").read_text()
    assert "| MMOE | 0.9105 ± 0.0007 | 0.9494 |" in table


def test_table_refuses_missing_runs(tmp_path, base_params):
    base_params = copy.deepcopy(base_params)
    base_params["train"]["seeds"] = [1, 2]
    _write_runs(tmp_path / "runs", ["single_task"], [1], base=0.9)
    with pytest.raises(MtlrecError, match="missing run"):
        make_table2(base_params, "census", tmp_path / "runs", tmp_path / "tables")


def _runs_with(values_by_model):
    return {
        model: [{"model": model, "seed": s, "tasks": ["income"], "test_auc": {"income": v}}
                for s, v in enumerate(values)]
        for model, values in values_by_model.items()
    }


def test_significance_marks_a_consistent_win_only():
    from mtlrec.report.tables import paired_significance, summarise

    consistent = summarise(_runs_with({
        "single_task": [0.90, 0.91, 0.92, 0.93, 0.94],
        "mptrec": [0.905, 0.9151, 0.9249, 0.9352, 0.9448],
    }), "single_task")
    paired_significance(consistent, "mptrec", 0.05)
    cell = consistent[1]["tasks"]["income"]
    assert cell["significant"] and cell["p_value"] < 1e-4 and cell["versus"] == "single_task"

    noisy = summarise(_runs_with({
        "single_task": [0.90, 0.91, 0.92, 0.93, 0.94],
        "mptrec": [0.93, 0.89, 0.94, 0.91, 0.95],
    }), "single_task")
    paired_significance(noisy, "mptrec", 0.05)
    assert not noisy[1]["tasks"]["income"]["significant"]


def test_significance_note_says_when_the_candidate_is_behind(base_params):
    """A consistent loss has a tiny p too: the note carries the sign, so it cannot read as a win."""
    from mtlrec.report.tables import _significance_note, paired_significance, summarise

    behind = summarise(_runs_with({
        "single_task": [0.90, 0.91, 0.92, 0.93, 0.94],
        "mptrec": [0.895, 0.9049, 0.9151, 0.9248, 0.9352],
    }), "single_task")
    paired_significance(behind, "mptrec", 0.05)
    cell = behind[1]["tasks"]["income"]
    assert cell["p_value"] < 1e-4 and not cell["significant"]
    note = _significance_note(base_params, behind, {"candidate": "mptrec", "level": 0.05}, 4)
    assert "income vs Single Task -0.0050 p=" in note


def test_ablation_and_em_reports_from_metrics(tmp_path, base_params):
    from mtlrec.report.figures import make_ablation, make_em_report

    params = copy.deepcopy(base_params)
    params["train"]["seeds"] = [1, 2]
    models = params["report"]["census"]["ablation"]["models"]
    _write_runs(tmp_path / "runs", models, [1, 2], base=0.9)
    for path in (tmp_path / "runs" / "census" / "mptrec").glob("seed=*/metrics.json"):
        metrics = json.loads(path.read_text())
        metrics["curves"] = [
            {"epoch": 1, "em_round": 0, "em_sizes": [6, 4]},
            {"epoch": 2, "em_round": 1, "em_sizes": [7, 3], "em_changed": 0.25},
        ]
        path.write_text(json.dumps(metrics))
    make_ablation(params, "census", tmp_path / "runs", tmp_path / "t", tmp_path / "f")
    make_em_report(params, "census", tmp_path / "runs", tmp_path / "t", tmp_path / "f")
    ablation = (tmp_path / "t" / "ablation_census.md").read_text()
    assert "| Share |" in ablation and "| −GAN |" in ablation
    assert "| 1 | 2 | 1 | [7, 3] | 0.2500 | 0.7500 |" in (tmp_path / "t" / "em_history_census.md"
                                                         ).read_text()
    first = (tmp_path / "f" / "ablation_census.png").read_bytes()
    assert first.startswith(b"\x89PNG")
    make_ablation(params, "census", tmp_path / "runs", tmp_path / "t", tmp_path / "f")
    assert (tmp_path / "f" / "ablation_census.png").read_bytes() == first  # deterministic bytes
