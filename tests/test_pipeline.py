"""End-to-end checks of the orchestration on a tiny copy of the project (real Census head)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from mtlrec.config import deep_merge

TINY = {
    "paths": {"root": "."},
    "display": {"progress": False},
    "datasets": {"census": {"max_train_rows": 2000, "max_test_rows": 1000}},
    "train": {"seeds": [11], "epochs": 1, "patience": 1},
    "pruning": {"warmup_epochs": 1, "iterations": 3, "epochs_per_iteration": 1,
                "min_prune_rate": 0.1},
    "report": {"census": {"tsne": {"n_rows": 100}}},
    "build": ["census"],
}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["DVC_NO_ANALYTICS"] = "1"
    env["MPLBACKEND"] = "Agg"  # as CI sets it: the report must not depend on the backend
    return env


def _run(args: list[str], cwd: Path) -> str:
    done = subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    """The project's tracked and unignored files in a fresh git repository, with tiny params."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split("\n")
    dest = tmp_path / "project"
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file() and not name.startswith(("results/", "runs/", "dvc.lock")):
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    params = deep_merge(yaml.safe_load((REPO / "params.yaml").read_text()), TINY)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["mtlrec", "dag", "dvc", "--out", "dvc.yaml"], dest)  # the DAG of these params
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy"]):
        _run(cmd, dest)
    return dest


# published over every table: any table's change reruns them
PUBLISH = {"publish-latex", "publish-check", "publish-html-mptrec"}


def _stages_run(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def _report_images(project: Path) -> int:
    """How many PNG outputs the executed report notebook holds (under any matplotlib backend:
    the environment may set MPLBACKEND=Agg, as CI does)."""
    notebook = json.loads((project / "results/report/report_census.ipynb").read_text())
    return sum("image/png" in output.get("data", {})
               for cell in notebook["cells"] for output in cell.get("outputs", []))


def _edit_params(project: Path, edit) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    edit(params)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.mark.slow
def test_dvc_repro_reruns_only_the_edited_model(project_copy: Path):
    first = _stages_run(_run(["dvc", "repro"], project_copy))
    runs = ["single_task", "shared_bottom", "mmoe", "ple", "stem", "sparse_sharing", "csrec",
            "mptrec", "mptrec_share", "mptrec_specific", "mptrec_no_gan"]
    masked = {"train-census-sparse_sharing@11", "train-census-csrec@11"}
    expected = {f"train-census-{r}@11" for r in runs}
    expected |= {"fetch-census", "encode-census", "labels-census-income",
                 "labels-census-marital", "masks-census@11", "table2-census",
                 "ablation-census", "em-census", "tsne-census", "report-census", *PUBLISH}
    assert first == expected
    assert (project_copy / "results/tables/table2_census.tex").is_file()
    assert _report_images(project_copy) == 4  # curves, ablation, EM labels, t-SNE
    assert _stages_run(_run(["dvc", "repro"], project_copy)) == set()  # nothing changed

    # an identical retrain (new timing.json, same model and metrics) re-triggers no table and
    # no page (timing.json is in .dvcignore)
    _run(["dvc", "repro", "-f", "-s", "train-census-mmoe@11"], project_copy)
    assert _stages_run(_run(["dvc", "repro"], project_copy)) == set()

    # a display flag is an input of no result: nothing reruns
    _edit_params(project_copy, lambda p: p["display"].update(progress=True))
    assert _stages_run(_run(["dvc", "repro"], project_copy)) == set()

    # MMOE is in Table 2 only: its run, Table 2 and the report notebook rerun, nothing else
    # (as README shows it: an experiment with one key set)
    reran = _stages_run(_run(["dvc", "exp", "run", "--set-param", "models.mmoe.reg_dnn=0.001"],
                             project_copy))
    assert reran == {"train-census-mmoe@11", "table2-census", "report-census", *PUBLISH}
    assert yaml.safe_load((project_copy / "params.yaml").read_text())["models"]["mmoe"][
        "reg_dnn"] == 0.001

    # new masks: the masked models retrain, no other model
    _edit_params(project_copy, lambda p: p["pruning"].update(rate=0.2))
    reran = _stages_run(_run(["dvc", "repro"], project_copy))
    assert reran == {"masks-census@11", *masked, "table2-census", "report-census", *PUBLISH}

    # a new task (an experiment with new_task: sex, in build): its own stages run, nothing of
    # Table 2 (its data, labels, runs, tables) is touched
    def add_sex(p):
        p["report"]["census_sex"] = {
            "table3": {"methods": ["prompt"], "candidate": "prompt", "full": "mptrec",
                       "decimals": 4},
            "table4": {"models": ["shared_bottom"], "level": 0.05}, "correlations": {}}
        p["build"].append("census_sex")

    _edit_params(project_copy, add_sex)
    _run(["mtlrec", "dag", "dvc", "--out", "dvc.yaml"], project_copy)
    reran = _stages_run(_run(["dvc", "repro"], project_copy))
    runs = ["shared_bottom", "mptrec", "full-shared_bottom", "full-mptrec"]
    assert reran == {"labels-census-sex", *(f"train-census_sex-{r}@11" for r in runs),
                     "newtask-census_sex-prompt@11", "table3-census_sex", "table4-census_sex",
                     "correlations-census_sex", *PUBLISH}
    table3 = (project_copy / "results/tables/table3_census_sex.md").read_text()
    assert "| MPT-Rec |" in table3 and "full training" in table3


@pytest.mark.slow
def test_a_users_table_runs_to_its_own_table2_with_a_params_edit_only(project_copy: Path):
    """The README's worked example, made tiny: an overlay declares the dataset (a CSV), the
    experiment and its Table 2; `snakemake` builds it; a display flag reruns nothing."""
    overlay = yaml.safe_load((project_copy / "examples/my_table.yaml").read_text())
    overlay["train"] = {"seeds": [1], "epochs": 1, "patience": 1}
    overlay["report"]["my_table"]["table2"]["models"] = ["single_task", "mmoe"]
    (project_copy / "tiny_table.yaml").write_text(yaml.safe_dump(overlay))
    _run(["snakemake", "--cores", "2", "--configfile", "tiny_table.yaml"], project_copy)
    table = (project_copy / "out/my_table/results/tables/table2_my_table.md").read_text()
    assert "| MMOE |" in table and "AUC/T2" in table
    (project_copy / "bars.yaml").write_text("display:\n  progress: true\n")
    dry = _run(["snakemake", "--cores", "2", "--dry-run", "--configfile", "tiny_table.yaml",
                "bars.yaml"], project_copy)
    assert "Nothing to be done" in dry


@pytest.mark.slow
def test_a_tuned_search_after_a_checkout_touch_reruns_nothing_and_a_grid_edit_reruns_it(
        project_copy: Path):
    """A tuned experiment's grid results, choice and runs are all committed. A checkout writes
    them in path order (choice.json after the tuned runs, before its grid points): the README's
    `snakemake --touch` puts their times in DAG order without rewriting them, and then a grid
    edit still reruns the new point, the choice and the tuned run."""
    (project_copy / "tuned.yaml").write_text(yaml.safe_dump({
        "tuning": {"census_tuned": {"train": {"epochs": 1}, "grid": {
            "train.lr": [0.001], "model.expert_hidden": [[8]], "train.shuffle": [False]}}},
        "build": ["census_tuned"]}))
    # the target first: --configfile takes every argument after it
    base = ["snakemake", "runs/census_tuned/single_task/seed=11/metrics.json", "--cores", "2"]
    _run(base + ["--configfile", "tuned.yaml"], project_copy)
    choice = project_copy / "runs/census_tuned/tuning/single_task/choice.json"
    tuned = project_copy / "runs/census_tuned/single_task/seed=11/metrics.json"
    grid = list(choice.parent.glob("*/seed=11/metrics.json"))
    before = {path: path.read_bytes() for path in [choice, tuned, *grid]}
    # a fresh clone: no Snakemake records (their input checksums would excuse the times), and
    # the checkout's order of times
    shutil.rmtree(project_copy / ".snakemake")
    for path, stamp in [(tuned, 1), (choice, 2), *((g, 3) for g in grid)]:
        os.utime(path, (1_700_000_000 + stamp,) * 2)
    dry = _run(base + ["--dry-run", "--configfile", "tuned.yaml"], project_copy)
    assert re.search(r"^tune_select +1$", dry, re.M)  # what the touch is for
    _run(base + ["--touch", "--configfile", "tuned.yaml"], project_copy)
    dry = _run(base + ["--dry-run", "--configfile", "tuned.yaml"], project_copy)
    assert "Nothing to be done" in dry, dry
    assert {path: path.read_bytes() for path in before} == before
    (project_copy / "wider.yaml").write_text(yaml.safe_dump(
        {"tuning": {"census_tuned": {"grid": {"train.lr": [0.001, 0.002]}}}}))
    dry = _run(base + ["--dry-run", "--configfile", "tuned.yaml", "wider.yaml"], project_copy)
    for rule in ("tune", "tune_select", "train"):
        assert re.search(rf"^{rule} +1$", dry, re.M), dry


@pytest.mark.slow
def test_snakemake_rejects_a_params_typo_before_running(project_copy: Path):
    done = subprocess.run(
        ["snakemake", "--cores", "1", "--dry-run", "--config", "train={'epochz': 3}"],
        cwd=project_copy, env=_env(), capture_output=True, text=True,
    )
    assert done.returncode != 0
    assert "epochz" in done.stdout + done.stderr


@pytest.mark.slow
def test_a_failing_job_shows_its_one_line_error_under_the_plain_command(project_copy: Path):
    """profiles/default (read on every invocation) prints the failing job's log: the user sees
    the `mtlrec: error:` line, not only "check log file(s)"."""
    raw = project_copy / "data/raw/census"
    raw.mkdir(parents=True)
    (raw / "census-income.data.gz").write_bytes(b"\x1f\x8b" + b"not a gzip stream")
    done = subprocess.run(["snakemake", "data/encoded/census/schema.json", "--cores", "1"],
                          cwd=project_copy, env=_env(), capture_output=True, text=True)
    assert done.returncode != 0
    lines = [line for line in (done.stdout + done.stderr).splitlines()
             if line.startswith("mtlrec: error:")]
    assert len(lines) == 1 and "census-income.data.gz" in lines[0], done.stdout + done.stderr


@pytest.mark.slow
def test_a_dry_run_does_not_touch_the_params_running_jobs_read(project_copy: Path):
    """The merged params file is written when jobs start (onstart), not at parse: a dry run with
    another configfile leaves a running pipeline's params alone."""
    resolved = project_copy / ".mtlrec/params.resolved.yaml"
    resolved.parent.mkdir()
    resolved.write_text("the running pipeline's params\n")
    (project_copy / "other.yaml").write_text("train:\n  lr: 0.5\n")
    _run(["snakemake", "--cores", "1", "--dry-run", "--configfile", "other.yaml"], project_copy)
    assert resolved.read_text() == "the running pipeline's params\n"


@pytest.mark.slow
def test_a_configfile_adds_to_the_ci_profile_instead_of_replacing_it(project_copy: Path):
    """params.yaml < the profile's overlay < --configfile: the CI profile's `build` (which adds
    pmtrec_ciao) survives an overlay that sets something else, and an overlay that sets `build`
    wins."""
    (project_copy / "epochs.yaml").write_text("train:\n  epochs: 3\n")
    (project_copy / "census_only.yaml").write_text("build: [census]\n")
    base = ["snakemake", "--cores", "1", "--dry-run", "--profile", "workflow/profiles/ci"]
    added = _run([*base, "--configfile", "epochs.yaml"], project_copy)
    assert "rank_table2_pmtrec_ciao" in added
    replaced = _run([*base, "--configfile", "census_only.yaml"], project_copy)
    assert "pmtrec_ciao" not in replaced and "table2_census" in replaced


def test_the_slurm_profile_plans_the_full_ali_ccp_dag_with_per_rule_resources(
        project_copy: Path):
    """`--profile workflow/profiles/slurm` through snakemake-executor-plugin-slurm: a dry run
    (no cluster, no raw data needed) plans the whole full-scale Ali-CCP DAG of the full_scale
    overlay, its streamed data rules included, with the profile's per-rule resources."""
    out = _run(["snakemake", "results/tables/table2_ali_ccp.md", "--dry-run", "--forceall",
                "--profile", "workflow/profiles/slurm",
                "--configfile", "workflow/overlays/full_scale.yaml"], project_copy)
    params = yaml.safe_load((project_copy / "params.yaml").read_text())
    seeds = params["train"]["seeds"]
    models = params["report"]["ali_ccp"]["table2"]["models"]
    for rule, count in (("fetch", 1), ("encode_parts", 1), ("labels_parts", 2),
                        ("train", len(models) * len(seeds)), ("table2", 1)):
        assert re.search(rf"^{rule}\s+{count}$", out, re.M), (rule, count)
    encode = out[out.index("rule encode_parts:"):]
    assert "mem_mb=16000" in encode[:encode.index("rule ", 5)]  # the profile's set-resources
    train = out[out.index("rule train:"):]
    train = train[:train.index("rule ", 5)]
    assert "gpu=1" in train  # a GPU per training job, memory from the rule (a few parts)
    assert re.search(r"mem_mb=(\d+)", train) and int(re.search(r"mem_mb=(\d+)", train)[1]) < 8000
