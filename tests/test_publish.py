"""What is published over the tables: LaTeX a paper can use, the reproduction check, the HTML
report and the DVC plots of the curves."""

import copy
import csv
import json
import shutil
import subprocess

import pytest

from mtlrec import workflow
from mtlrec.report import publish
from mtlrec.report.cells import write_cells
from mtlrec.report.html import make_html
from mtlrec.report.latex import escape, fixed, render_document, render_table, signed, tex_row
from mtlrec.report.tables import make_table2

REPO = workflow.REPO_ROOT


def test_escape_makes_specials_and_minus_signs_safe():
    assert escape("my_model & 50% #1") == r"my\_model \& 50\% \#1"
    assert escape("-0.0133 ± 0.0160") == r"$-$0.0133 $\pm$ 0.0160"
    assert escape("−GAN") == "$-$GAN"
    assert escape("Shared*") == "Shared$^{*}$"
    assert escape("a--b") == "a--b"  # a range dash is not a minus sign
    assert tex_row(["  paper", "-", "+"]) == r"\quad paper & $-$ & $+$ \\"


def test_no_signed_zero():
    assert fixed(-0.00004, 4) == "0.0000"
    assert signed(-0.00004, 4) == "0.0000"
    assert signed(0.00005, 4) == "+0.0001"
    assert signed(-0.0133, 4) == "-0.0133"


def _runs(root, models, seeds):
    for i, model in enumerate(models):
        for j, seed in enumerate(seeds):
            out = root / "runs" / "census" / model / f"seed={seed}"
            out.mkdir(parents=True)
            curves = [{"epoch": e, "val_auc": [0.8 + 0.01 * e, 0.9 + 0.001 * i]} for e in (1, 2, 3)]
            metrics = {
                "model": model, "seed": seed, "tasks": ["income", "marital"],
                "test_auc": {"income": 0.94 + 0.001 * i + 0.0001 * j * (i + 1),
                             "marital": 0.98 - 0.002 * j * (i + 1)},
                "rows": {"train": 10, "val": 5, "test": 5}, "curves": curves,
                "provenance": {"git_commit": "abc", "device": "cpu:x", "num_threads": 1,
                               "versions": {"torch": "2.13.0"}},
            }
            (out / "metrics.json").write_text(json.dumps(metrics))


@pytest.fixture
def census_tree(tmp_path, base_params):
    """A results tree with Table 2 of Census built from synthetic runs (2 seeds); a display
    name with an underscore and a percent sign, which LaTeX must survive."""
    params = copy.deepcopy(base_params)
    params["build"] = ["census"]
    params["train"]["seeds"] = [1, 2]
    params["display"]["names"]["mmoe"] = "my_model (50%)"
    models = params["report"]["census"]["table2"]["models"]
    _runs(tmp_path, models, [1, 2])
    make_table2(params, "census", tmp_path / "runs", tmp_path / "results" / "tables")
    return params, tmp_path


def test_curves_csv_columns_are_the_declared_dvc_plot_columns(census_tree):
    params, root = census_tree
    path = root / workflow.report_outputs("census", "table2")["curves"]
    with path.open() as handle:
        header = next(csv.reader(handle))
    panels = workflow.curve_panels(params, "census", "table2")
    assert header[0] == "epoch"
    assert sorted(header[1:]) == sorted(c for columns in panels.values() for c in columns)
    plots = workflow.dvc_plots(params)
    assert [next(iter(p)) for p in plots] == ["census: validation income",
                                              "census: validation marital"]


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="needs pdflatex (texlive)")
def test_the_paper_tables_document_compiles(census_tree, tmp_path):
    params, root = census_tree
    extra = render_table("negative gains of my_model", "extra", "lrr", [tex_row(["a", "b", "c"])],
                         [["my_model", signed(-0.0133, 4), "-0.5 ± 0.1"]], ["a note: 100%"])
    tables = root / "results" / "tables"
    (tables / "extra.tex").write_text(extra)
    document = root / "results" / "paper_tables.tex"
    document.write_text(render_document([tables / "table2_census.tex", tables / "extra.tex"],
                                        document.parent))
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error",
                           document.name], cwd=document.parent, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout[-2000:]
    assert (document.parent / "paper_tables.pdf").stat().st_size > 0


def _check_params(base_params, wiring_only=False):
    params = copy.deepcopy(base_params)
    params["build"] = ["census"]
    params["reproduction"]["wiring_only"] = wiring_only
    params["reproduction"]["tolerance"]["table2"] = {"abs": 0.002}
    return params


def test_reproduction_check_counts_cells_by_tolerance(tmp_path, base_params):
    params = _check_params(base_params)
    write_cells(tmp_path / "results" / "metrics" / "table2_census.json", experiment="census",
                kind="table2", metric="AUC", n_seeds=2, cells={
                    "mmoe": {"income": {"mean": 0.9500, "std": 0.001, "n": 2, "paper": 0.9494},
                             "marital": {"mean": 0.9950, "std": 0.0, "n": 2, "paper": 0.9901}},
                    "ple": {"income": {"mean": 0.9, "std": 0.0, "n": 2}}})  # no paper value
    md, out = tmp_path / "docs" / "reproduction.md", tmp_path / "results" / "reproduction.csv"
    summary = publish.make_reproduction(params, tmp_path, md, out)
    assert summary.startswith("reproduction check: 1 of 2 paper cells within tolerance")
    assert "worst: table2_census mmoe/marital 0.9950 vs 0.9901" in summary
    page = md.read_text()
    assert "| table2_census | mmoe | marital | 0.9950 ± 0.0000 (2) | 0.9901 | +0.0049 |" in page
    assert "**no**" in page and "`ablation_census`" in page  # not built yet, named
    rows = list(csv.DictReader(out.open()))
    assert [r["within"] for r in rows] == ["1", "0"]


def test_relative_tolerance_and_the_wiring_only_banner(tmp_path, base_params):
    assert publish.allowed({"rel": 0.15}, 0.02) == pytest.approx(0.003)
    assert publish.allowed({"abs": 0.01}, 0.5) == 0.01
    params = _check_params(base_params, wiring_only=True)
    write_cells(tmp_path / "results" / "metrics" / "table2_census.json", experiment="census",
                kind="table2", metric="AUC", n_seeds=1,
                cells={"mmoe": {"income": {"mean": 0.5, "std": 0.0, "n": 1, "paper": 0.9494}}})
    md = tmp_path / "reproduction.md"
    summary = publish.make_reproduction(params, tmp_path, md, tmp_path / "r.csv")
    assert summary.endswith("(wiring only: this profile's data and epochs are tiny)")
    assert "checks wiring only" in md.read_text()


def test_html_report_shows_ours_paper_gap_and_what_is_missing(census_tree):
    params, root = census_tree
    outputs = {k: root / p for k, p in workflow.publish_outputs(params).items()}
    publish.make_reproduction(params, root, outputs["check_md"], outputs["check_csv"])
    make_html(params, "mptrec", root, outputs["check_md"], outputs["html_mptrec"])
    page = outputs["html_mptrec"].read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert "Table 2 (census)" in page and "my_model (50%)" in page
    assert "reproduction check: " in page
    assert "<td class=off>" in page or "<td class=ok>" in page  # gaps coloured by tolerance
    assert "data:image/png;base64," in page  # the curves figure, embedded
    assert "not built yet: ablation, em, tsne" in page
    assert "finished runs found: 16 (seeds [1, 2])" in page
    with pytest.raises(Exception, match="no experiment of pmtrec"):
        make_html(params, "pmtrec", root, outputs["check_md"], root / "p.html")


def test_the_reproduction_check_leaves_wiring_only_tables_out(tmp_path, monkeypatch):
    """The bundled Ali-CCP / ByteRec samples print the paper's values beside theirs, but their
    cells are no reproduction claim: `wiring_only` keeps them out of the check."""
    params = {"build": ["tiny"], "reproduction": {"tolerance": {"table2": {"abs": 0.002}}},
              "report": {"tiny": {"table2": {"models": ["a"], "wiring_only": True}}}}
    path = tmp_path / "results" / "metrics" / "table2_tiny.json"
    path.parent.mkdir(parents=True)
    write_cells(path, experiment="tiny", kind="table2", metric="auc", n_seeds=1,
                cells={"a": {"click": {"mean": 0.5, "std": 0.0, "n": 1, "paper": 0.6}}})
    monkeypatch.setattr(publish, "split_built",
                        lambda p, root, suffix: ([str(path.relative_to(tmp_path))], []))
    assert publish.checked_cells(params, tmp_path) == []
    params["report"]["tiny"]["table2"]["wiring_only"] = False
    assert [c.row for c in publish.checked_cells(params, tmp_path)] == ["a"]
