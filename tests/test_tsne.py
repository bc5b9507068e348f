import copy

import pytest
import torch

from mtlrec.config import resolve_model
from mtlrec.data.splits import load_splits
from mtlrec.errors import MtlrecError
from mtlrec.models import build_model
from mtlrec.models.layers import FeatureSpec
from mtlrec.report.tsne import make_tsne, representations

SPLIT = {"val_fraction": 0.5}


def _save_models(params, encoded, runs_root, seed):
    splits = load_splits(encoded, params["experiments"]["census"]["tasks"], seed, SPLIT)
    features = FeatureSpec.from_schema(splits.schema)
    for run_name in params["report"]["census"]["tsne"]["models"]:
        base, hparams = resolve_model(params, run_name)
        model = build_model(base, features, 2, hparams)
        for hook in model.epoch_hooks():
            hook.before_training(model, len(splits.train))
        out = runs_root / "census" / run_name / f"seed={seed}"
        out.mkdir(parents=True)
        torch.save(model.state_dict(), out / "model.pt")
    return splits


def test_representations_name_shared_and_each_task(encoded_census, base_params):
    params = copy.deepcopy(base_params)
    splits = load_splits(encoded_census, ["income", "marital"], 1, SPLIT)
    features = FeatureSpec.from_schema(splits.schema)
    for run_name in ("mptrec", "ple"):
        base, hparams = resolve_model(params, run_name)
        model = build_model(base, features, 2, hparams)
        reps = representations(model, splits.train.dense[:20], splits.train.sparse[:20],
                               ["income", "marital"])
        assert list(reps) == ["shared", "specific income", "specific marital"]
        assert all(r.shape[0] == 20 for r in reps.values())
    with pytest.raises(MtlrecError, match="has no shared/specific"):
        base, hparams = resolve_model(params, "mmoe")
        representations(build_model(base, features, 2, hparams), splits.train.dense[:2],
                        splits.train.sparse[:2], ["income", "marital"])


def test_tsne_figure_from_checkpoints(tmp_path, encoded_census, base_params):
    params = copy.deepcopy(base_params)
    params["train"]["seeds"] = [5]
    params["report"]["census"]["tsne"]["n_rows"] = 60
    _save_models(params, encoded_census, tmp_path / "runs", 5)
    make_tsne(params, "census", encoded_census, tmp_path / "runs", tmp_path / "figures")
    assert (tmp_path / "figures" / "tsne_census.png").read_bytes().startswith(b"\x89PNG")


def test_tsne_figure_does_not_depend_on_the_callers_thread_limit(tmp_path, encoded_census,
                                                                  base_params):
    """report.tsne.threads fixes the t-SNE's threads: the same figure whatever the environment
    allows (its Barnes-Hut sums depend on the thread count)."""
    from threadpoolctl import threadpool_limits

    params = copy.deepcopy(base_params)
    params["train"]["seeds"] = [5]
    params["report"]["census"]["tsne"].update(n_rows=60, threads=2)
    _save_models(params, encoded_census, tmp_path / "runs", 5)
    make_tsne(params, "census", encoded_census, tmp_path / "runs", tmp_path / "free")
    with threadpool_limits(limits=1):
        make_tsne(params, "census", encoded_census, tmp_path / "runs", tmp_path / "limited")
    figure = "tsne_census.png"
    assert (tmp_path / "free" / figure).read_bytes() == (tmp_path / "limited" / figure).read_bytes()
