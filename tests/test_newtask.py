"""Stage 2 (a new task on a frozen pre-trained run): the heads, the cache, cost counting, MAML,
task declarations and the direct `mtlrec new-task` command."""

import argparse
import copy
import json
import math

import pytest
import torch
from conftest import SPLIT, device_under_test

from mtlrec.config import dropped_inputs
from mtlrec.data.splits import load_splits
from mtlrec.errors import MtlrecError
from mtlrec.evaluate.metrics import METRICS
from mtlrec.models import build_model
from mtlrec.models.layers import Batch, FeatureSpec, StepInfo
from mtlrec.newtask import HEADS, NewTaskModel, cache_features
from mtlrec.newtask.cost import count_params, multiply_adds
from mtlrec.newtask.prompt import PromptHead
from mtlrec.newtask.run import run_new_task, state_digest
from mtlrec.provenance import set_seed
from mtlrec.train.combiners import get_combiner
from mtlrec.train.loop import TrainConfig, fit, make_optimizer
from mtlrec.train.objectives import BinaryCrossEntropy
from mtlrec.train.run import run_training

BCE, AUC = BinaryCrossEntropy(), METRICS["auc"]
EDU = "census_education"


def census_like(n_dense=11, n_sparse=28, vocab=10) -> FeatureSpec:
    return FeatureSpec(tuple(f"d{i}" for i in range(n_dense)),
                       tuple((f"s{i}", vocab) for i in range(n_sparse)))


# ------------------------------------------------------------------------------- counting
def test_flop_count_is_one_per_multiply_add_on_a_layer_computed_by_hand():
    layer = torch.nn.Linear(10, 4)
    x = torch.zeros(8, 10)
    assert multiply_adds(lambda: layer(x)) == 8 * 10 * 4  # bias adds are not counted


def test_frozen_submodules_are_not_counted():
    model = torch.nn.Sequential(torch.nn.Linear(10, 6), torch.nn.Linear(6, 2))
    model[0].requires_grad_(False)
    x = torch.zeros(8, 10)
    assert multiply_adds(lambda: model(x)) == 8 * (10 * 6 + 6 * 2)
    assert multiply_adds(lambda: model(x), model) == 8 * 6 * 2


def test_prompt_head_has_the_papers_27k_parameters_on_census_dims(base_params):
    backbone = build_model("mptrec", census_like(), 2, base_params["models"]["mptrec"])
    assert backbone.embedding.output_dim == 123  # 11 dense + 28 sparse x 4: education removed
    head = PromptHead(backbone, tower_hidden=[64, 32], reg_dnn=3e-5)
    assert count_params(head.trained_modules()) == 27_063  # docs/spec/mptrec.md section 3.3
    full = build_model("mptrec", census_like(), 3, base_params["models"]["mptrec"])
    model = NewTaskModel(head)
    feats = torch.zeros(256, head.feature_dim)
    flops = multiply_adds(lambda: model(feats, feats.new_zeros(256, 0).long()), model)
    assert 6.5e6 < flops < 7.2e6  # the paper's "7M" per training batch of 256
    assert 0.08 < flops / multiply_adds(lambda: full.training_losses(
        _zeros_batch(full, 3), StepInfo(1, 0, 1, 1, 256), BCE)) < 0.095  # the paper: 8.7 %


def _zeros_batch(model, k, n=256):
    from mtlrec.train.hooks import TaskClustering

    TaskClustering().before_training(model, n)
    return Batch(torch.zeros(n, 11), torch.zeros(n, 28, dtype=torch.long), torch.zeros(n, k),
                 torch.arange(n))


@pytest.mark.parametrize("kind", sorted(HEADS))
def test_every_head_trains_only_its_own_new_parameters(kind, base_params):
    backbone_model = HEADS[kind].backbone_models[0]
    backbone = build_model(backbone_model, census_like(), 2, base_params["models"][backbone_model])
    backbone.requires_grad_(False)
    head = HEADS[kind](backbone, tower_hidden=[8], reg_dnn=1e-3)
    model = NewTaskModel(head, backbone)
    batch = Batch(torch.rand(16, 11), torch.randint(0, 10, (16, 28)),
                  torch.tensor([0.0, 1.0] * 8).unsqueeze(1), torch.arange(16))
    before = state_digest(backbone)
    optimizer = make_optimizer(model, 1e-2, torch.device("cpu"))
    get_combiner("sum").step(model, batch, StepInfo(1, 0, 1, 1, 16), BCE, optimizer)
    assert state_digest(backbone) == before
    trained = {id(p) for m in head.trained_modules() for p in m.parameters()}
    moved = [p for p in head.parameters() if p.grad is not None]
    assert moved and all(id(p) in trained for p in moved)


# ---------------------------------------------------------------------- the pipeline's stage
@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, encoded_census, base_params):
    params = copy.deepcopy(base_params)
    params["train"].update(seeds=[7], epochs=1, patience=1)
    params["display"]["progress"] = False
    params["runtime"]["device"] = str(device_under_test())
    root = tmp_path_factory.mktemp("runs")
    for run in ("mptrec", "shared_bottom"):
        run_training(params, EDU, run, 7, encoded_census, root / run)
    return params, root


def test_education_runs_do_not_see_the_education_field(encoded_census, base_params):
    drop = dropped_inputs(base_params, EDU)
    assert "education" in drop
    splits = load_splits(encoded_census, ["income", "marital"], 1, SPLIT, drop)
    names = [f["name"] for f in splits.schema["sparse"]] + splits.schema["dense"]
    assert "education" not in names and splits.schema["dropped_inputs"] == ["education"]
    assert FeatureSpec.from_schema(splits.schema).sparse.__len__() == 28
    full = load_splits(encoded_census, ["income", "marital"], 1, SPLIT)
    assert len(full.schema["sparse"]) == 29  # the census experiment keeps it (Table 2: 127)


def test_prompt_tuning_changes_no_bit_of_the_backbone_and_keeps_t1_t2(tmp_path, pretrained,
                                                                     encoded_census):
    params, root = pretrained
    checkpoint = (root / "mptrec" / "model.pt").read_bytes()
    params = copy.deepcopy(params)
    params["train"].update(epochs=4, patience=4)
    metrics = run_new_task(params, EDU, "prompt", 7, encoded_census, root / "mptrec", tmp_path)
    assert (root / "mptrec" / "model.pt").read_bytes() == checkpoint
    assert metrics["backbone_state_unchanged"]
    pre = json.loads((root / "mptrec" / "metrics.json").read_text())
    assert metrics["existing_test_auc"] == pre["test_auc"]  # T1/T2 exactly as pre-trained
    assert 0.6 < metrics["test_auc"]["education"] <= 1.0  # it learns the new task
    assert metrics["cost"]["trained_params"] < 0.2 * metrics["cost"]["full_params"]
    saved = torch.load(tmp_path / "model.pt", weights_only=True)
    backbone = torch.load(root / "mptrec" / "model.pt", weights_only=True)
    assert torch.equal(saved["head.task_embedding"], backbone["task_embedding.weight"])


def test_the_feature_cache_gives_the_uncached_result_bit_for_bit(pretrained, encoded_census):
    params, root = pretrained
    from mtlrec.newtask.run import load_backbone

    tasks = ["income", "marital", "education"]
    splits = load_splits(encoded_census, tasks, 7, SPLIT, dropped_inputs(params, EDU))
    _, backbone = load_backbone(params, "mptrec", splits, 2, root / "mptrec" / "model.pt",
                                torch.device("cpu"))
    cfg = TrainConfig.from_params({**params["train"], "epochs": 2, "patience": 2})
    states = []
    for cached in (True, False):
        set_seed(11)
        head = PromptHead(backbone, tower_hidden=[64, 32], reg_dnn=3e-5)
        if cached:
            model, data = NewTaskModel(head), cache_features(
                PromptHead, backbone, splits, 2, cfg.batch_size, cfg.eval_batch_size)
        else:
            model, data = NewTaskModel(head, backbone), _only_new(splits)
        fit(model, data, cfg, 11, BCE, AUC)
        states.append(head.state_dict())
    for name, tensor in states[0].items():
        assert torch.equal(tensor, states[1][name]), name


def _only_new(splits):
    from mtlrec.newtask.run import _only_task

    return _only_task(splits, 2)


def test_fine_tuned_baseline_and_its_cost(tmp_path, pretrained, encoded_census):
    params, root = pretrained
    metrics = run_new_task(params, EDU, "shared_bottom_ft", 7, encoded_census,
                           root / "shared_bottom", tmp_path)
    cost = metrics["cost"]
    assert cost["trained_params"] == 128 * 64 + 64 + 64 * 32 + 32 + 32 + 1  # one new tower
    assert cost["trained_flops_per_batch"] == 256 * (128 * 64 + 64 * 32 + 32)


def test_a_backbone_of_another_model_is_one_line(tmp_path, pretrained, encoded_census):
    params, root = pretrained
    with pytest.raises(MtlrecError, match="needs a backbone"):
        params2 = copy.deepcopy(params)
        params2["new_task"]["methods"]["bad"] = {"kind": "prompt", "backbone": "shared_bottom"}
        run_new_task(params2, EDU, "bad", 7, encoded_census, root / "shared_bottom", tmp_path)


# ------------------------------------------------------------------------------------ MAML
def test_first_order_maml_step_matches_the_formula(base_params):
    hp = {**base_params["models"]["maml"], "expert_hidden": [8], "tower_hidden": [4]}
    torch.manual_seed(0)
    model = build_model("maml", census_like(n_sparse=3), 2, hp)
    batch = Batch(torch.rand(8, 11), torch.randint(0, 10, (8, 3)),
                  torch.randint(0, 2, (8, 2)).float(), torch.arange(8))
    theta = {n: p.detach().clone() for n, p in model.named_parameters()}
    # by hand: per task, w' = w - a grad L_support(w); meta-grad = sum_k grad L_query(w')
    expected = {n: torch.zeros_like(p) for n, p in theta.items()}
    for task in range(2):
        fast = {n: p.clone().requires_grad_() for n, p in theta.items()}
        loss = BCE.task_loss(torch.func.functional_call(model, fast, (batch.dense[:4],
                                                                      batch.sparse[:4]))[:, 0],
                             batch.labels[:4, task])
        grads = torch.autograd.grad(loss, list(fast.values()))
        adapted = {n: (p - hp["inner_lr"] * g).detach().requires_grad_()
                   for (n, p), g in zip(fast.items(), grads, strict=True)}
        q = BCE.task_loss(torch.func.functional_call(model, adapted, (batch.dense[4:],
                                                                      batch.sparse[4:]))[:, 0],
                          batch.labels[4:, task])
        for n, g in zip(adapted, torch.autograd.grad(q, list(adapted.values())),
                             strict=True):
            expected[n] += g
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    get_combiner("maml").step(model, batch, StepInfo(1, 0, 1, 1, 8), BCE, optimizer)
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(theta[name] - parameter.detach(), expected[name],
                                   rtol=1e-4, atol=1e-6)


def test_second_order_maml_differs_from_first_order(base_params):
    hp = {**base_params["models"]["maml"], "expert_hidden": [8], "tower_hidden": [4]}
    batch = Batch(torch.rand(8, 11), torch.randint(0, 10, (8, 3)),
                  torch.randint(0, 2, (8, 2)).float(), torch.arange(8))
    updates = []
    for order in (1, 2):
        torch.manual_seed(0)
        model = build_model("maml", census_like(n_sparse=3), 2, {**hp, "order": order,
                                                                 "inner_lr": 0.5})
        before = [p.detach().clone() for p in model.parameters()]
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
        get_combiner("maml").step(model, batch, StepInfo(1, 0, 1, 1, 8), BCE, optimizer)
        updates.append(torch.cat([(b - p.detach()).flatten()
                                  for b, p in zip(before, model.parameters(), strict=True)]))
    assert not torch.allclose(updates[0], updates[1])


# ---------------------------------------------------------------------- task declarations
def test_task_rules_and_their_errors(raw_census, base_params, tmp_path):
    from mtlrec.data.datasets import write_task_labels

    params = copy.deepcopy(base_params)
    census = params["datasets"]["census"]
    census.update(max_train_rows=2000, max_test_rows=500)
    census["tasks"]["older"] = {"column": "age", "above": 50}
    census["tasks"]["nope"] = {"column": "no_such_column", "equals": "x"}
    census["tasks"]["never"] = {"column": "age", "below": -1}
    info = write_task_labels(params, "census", "older", raw_census, tmp_path / "older")
    assert 0.05 < info["positive_rate"]["train"] < 0.5
    with pytest.raises(MtlrecError, match="label column 'no_such_column' does not exist"):
        write_task_labels(params, "census", "nope", raw_census, tmp_path / "nope")
    with pytest.raises(MtlrecError, match=r"only class 0 .*\(column 'age'\)"):
        write_task_labels(params, "census", "never", raw_census, tmp_path / "never")
    assert not (tmp_path / "nope").exists() and not (tmp_path / "never").exists()


def test_new_task_command_refuses_a_leaking_column_and_writes_nothing(pretrained, tmp_path,
                                                                      encoded_census,
                                                                      raw_census):
    from mtlrec.newtask.direct import add_new_task

    params, root = pretrained
    project = encoded_census.parents[2]  # <root>/data/encoded/census
    (project / "data" / "raw").mkdir(exist_ok=True)
    if not (project / "data" / "raw" / "census").exists():
        (project / "data" / "raw" / "census").symlink_to(raw_census)
    args = argparse.Namespace(task="older", column="age", equals=None, above=50.0, below=None,
                              backbone=root / "mptrec", method="prompt", out=tmp_path / "out")
    with pytest.raises(MtlrecError, match="column 'age' is an input of the pre-trained run"):
        add_new_task({**params, "paths": {"root": str(project)}}, args)
    args.column, args.above, args.equals = "no_such_column", None, "x"
    with pytest.raises(MtlrecError, match="label column 'no_such_column' does not exist"):
        add_new_task({**params, "paths": {"root": str(project)}}, args)
    assert not (tmp_path / "out").exists()


def test_new_task_command_learns_a_task_given_on_the_command_line(pretrained, tmp_path,
                                                                  encoded_census, raw_census):
    from mtlrec.newtask.direct import add_new_task

    params, root = pretrained
    project = encoded_census.parents[2]
    (project / "data" / "raw").mkdir(exist_ok=True)
    if not (project / "data" / "raw" / "census").exists():
        (project / "data" / "raw" / "census").symlink_to(raw_census)
    args = argparse.Namespace(task="postgrad", column="education",
                              equals="Masters degree(MA MS MEng MEd MSW MBA)", above=None,
                              below=None, backbone=root / "mptrec", method="prompt",
                              out=tmp_path / "out")
    params = copy.deepcopy(params)
    params["paths"]["root"] = str(project)
    params["datasets"]["census"].update(max_train_rows=3000, max_test_rows=2000)  # the fixture's
    metrics = add_new_task(params, args)
    pre = json.loads((root / "mptrec" / "metrics.json").read_text())
    assert metrics["new_task"] == "postgrad" and 0.0 <= metrics["test_auc"]["postgrad"] <= 1.0
    assert metrics["existing_test_auc"] == pre["test_auc"]
    assert metrics["dropped_inputs"] == ["education"]
    assert (tmp_path / "out" / "metrics.json").is_file()
    assert (tmp_path / "out" / "labels" / "postgrad" / "train.parquet").is_file()


def test_frozen_experts_in_a_module_list_are_not_counted(base_params):
    """PLE*'s frozen second-level shared expert sits in a ModuleList (never called itself)."""
    backbone = build_model("ple", census_like(), 2, base_params["models"]["ple"])
    head = HEADS["ple"](backbone, tower_hidden=[64, 32], reg_dnn=0.0)
    model = NewTaskModel(head)
    feats = torch.zeros(256, head.feature_dim)
    counted = multiply_adds(lambda: model(feats, feats.new_zeros(256, 0).long()), model)
    everything = multiply_adds(lambda: model(feats, feats.new_zeros(256, 0).long()))
    assert everything - counted == 256 * 256 * 256  # the frozen 256 -> 256 expert
    assert count_params(head.trained_modules()) == 117_101  # spec section 5.2: 117,621


def test_table4_signs_spread_and_paired_test(tmp_path, base_params):
    from mtlrec.report.newtask import make_table4

    params = copy.deepcopy(base_params)
    params["train"]["seeds"] = [1, 2, 3]
    params["report"][EDU]["table4"]["models"] = ["mmoe"]
    for run, shift in (("mmoe", 0.0), ("full-mmoe", -0.01)):
        for i, seed in enumerate([1, 2, 3]):
            out = tmp_path / "runs" / EDU / run / f"seed={seed}"
            out.mkdir(parents=True)
            scores = {"income": 0.94 + 0.001 * i + shift, "marital": 0.99 + 0.001 * i}
            if run.startswith("full-"):
                scores["education"] = 0.86
            out.joinpath("metrics.json").write_text(json.dumps({
                "seed": seed, "metric": "auc", "test_auc": scores, "dropped_inputs": ["education"],
                "rows": {"train": 1, "val": 1, "test": 1},
                "provenance": {"git_commit": "abc", "device": "cpu:x", "num_threads": 1,
                               "versions": {"torch": "2.13.0"}}}))
    rows = make_table4(params, EDU, tmp_path / "runs", tmp_path / "tables")
    income = next(r for r in rows if r["task"] == "income")
    marital = next(r for r in rows if r["task"] == "marital")
    assert income["sign"] == "-" and income["delta"] == pytest.approx(-0.01)
    assert income["p"] < 0.05  # the same -0.01 on every seed
    assert marital["delta"] == pytest.approx(0.0) and math.isnan(marital["p"])
    md = (tmp_path / "tables" / f"table4_{EDU}.md").read_text()
    assert "| MMOE | T1 (income) |" in md and "signs equal to the paper's" in md


def test_time_table_says_how_many_seeds_were_timed(tmp_path, base_params):
    """timing.json stays outside git, so the table counts the timed seeds beside each mean."""
    from mtlrec.report.newtask import _write_times

    runs = tmp_path / "runs"
    for run, seed, wall in [("newtask-prompt", 1, 10.0), ("newtask-prompt", 2, 30.0),
                            ("full-mptrec", 2, 100.0)]:
        folder = runs / "census_education" / run / f"seed={seed}"
        folder.mkdir(parents=True)
        (folder / "timing.json").write_text(json.dumps({"wall_time_s": wall}))
    out = tmp_path / "time.md"
    _write_times(base_params, out, runs, "census_education", ["prompt", "maml"], "full-mptrec",
                 [1, 2, 3])
    text = out.read_text()
    assert "| MPT-Rec | 20.0 | 2 | 5.0x |" in text
    assert "| MAML | -- | 0 | -- |" in text
    assert "| full-mptrec (full retraining) | 100.0 | 1 | 1.0x |" in text
    assert "seeds timed: of 3" in text
