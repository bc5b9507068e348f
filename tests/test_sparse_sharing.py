"""Sparse Sharing and CSRec: masked subnetworks, where task steps may move weights, the contrastive
gradient, and the masks found by iterative magnitude pruning."""

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import device_under_test
from test_models import batch, make

from mtlrec.errors import MtlrecError
from mtlrec.models.layers import Batch, StepInfo
from mtlrec.train.combiners import MaskedTaskSteps
from mtlrec.train.loop import make_optimizer
from mtlrec.train.objectives import BinaryCrossEntropy
from mtlrec.train.pruning import choose_iteration, find_masks, load_masks, prune_smallest
from mtlrec.train.run import run_training

BCE = BinaryCrossEntropy()


def step(model, data, optimizer):
    """One batch through the masked models' combiner (what the training loop does)."""
    return MaskedTaskSteps().step(model, data, INFO, BCE, optimizer)

INFO = StepInfo(epoch=1, step=0, steps_per_epoch=1, epochs=1, batch_size=32)


def random_masks(model, keep=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(m.shape, generator=g) < keep).float().to(m.device) for m in model.masks()]


def masked_model(name, update="exact", num_tasks=2):
    model = make(name, num_tasks=num_tasks, reg=1e-3)
    model.masked_update = update
    model.load_masks(random_masks(model))
    return model


def a_batch(num_tasks=2):
    dense, sparse, labels = batch()
    return Batch(dense, sparse, labels[:, :num_tasks], torch.arange(32, device=dense.device))


def weights(model):
    return [layer.weight.detach().clone() for layer in model.masked_layers()]


@pytest.mark.parametrize("name", ["sparse_sharing", "csrec"])
def test_forward_uses_each_task_subnetwork(name):
    model = masked_model(name)
    dense, sparse, _ = batch()
    logits = model(dense, sparse)
    assert logits.shape == (32, 2)
    x = model.embedding(dense, sparse)
    for task in range(2):
        h = x
        for layer, mask in zip(model.masked_layers(), model.masks(), strict=True):
            h = torch.relu(F.linear(h, layer.weight * mask[task], layer.bias))
        assert torch.allclose(logits[:, task], model.towers[task](h), atol=1e-6)


@pytest.mark.parametrize("name", ["sparse_sharing", "csrec"])
def test_task_gradient_is_zero_outside_its_mask(name):
    model = masked_model(name)
    model.task_loss(a_batch(), 1, BCE).backward()
    for layer, mask in zip(model.masked_layers(), model.masks(), strict=True):
        outside = mask[1] == 0
        assert outside.any() and layer.weight.grad[outside].abs().sum() == 0
        assert layer.weight.grad[~outside].abs().sum() > 0


@pytest.mark.parametrize("update", ["exact", "official"])
def test_weights_outside_every_mask_never_move(update):
    """(CSRec's contrastive subnetwork 1 - m_1 m_2 does train them: they feed no task's logit.)"""
    model = masked_model("sparse_sharing", update)
    start = weights(model)
    optimizer = make_optimizer(model, 1e-2, device_under_test())
    for _ in range(5):
        step(model, a_batch(), optimizer)
    for before, after, mask in zip(start, weights(model), model.masks(), strict=True):
        nowhere = mask.sum(0) == 0
        assert nowhere.any()
        assert torch.equal(before[nowhere], after[nowhere])
        assert not torch.equal(before[~nowhere], after[~nowhere])  # the subnetworks do learn


def test_csrec_task_step_may_move_every_weight():
    """m_k plus c = 1 - m_1 m_2 covers the whole matrix: its `masked_update` changes nothing."""
    model = masked_model("csrec")
    for task in range(2):
        assert all(bool(m.all()) for m in model.update_masks(task))


def test_exact_update_moves_a_task_step_only_inside_its_subnetwork():
    model = masked_model("sparse_sharing", "exact")
    optimizer = make_optimizer(model, 1e-2, device_under_test())
    step(model, a_batch(), optimizer)  # both tasks once: Adam has momentum everywhere
    model.active_tasks = (0,)
    before = weights(model)
    step(model, a_batch(), optimizer)
    for old, new, allowed in zip(before, weights(model), model.update_masks(0), strict=True):
        frozen = allowed == 0
        assert frozen.any() and torch.equal(old[frozen], new[frozen])
        assert not torch.equal(old[~frozen], new[~frozen])


def test_official_update_lets_adam_momentum_move_other_subnetworks():
    """The official code steps Adam on masked gradients: momentum from task 1's steps still moves
    weights of task 1's subnetwork during task 0's step (why `exact` is the default)."""
    model = masked_model("sparse_sharing", "official")
    optimizer = make_optimizer(model, 1e-2, device_under_test())
    step(model, a_batch(), optimizer)
    model.active_tasks = (0,)
    before = weights(model)
    step(model, a_batch(), optimizer)
    moved = [(old != new) & (mask[0] == 0) & (mask[1] == 1)
             for old, new, mask in zip(before, weights(model), model.masks(), strict=True)]
    assert any(m.any() for m in moved)


def test_csrec_adds_the_negative_bce_gradient_of_the_contrastive_subnetwork():
    model = masked_model("csrec")
    data = a_batch()
    model.task_loss(data, 0, BCE).backward()
    plain = [layer.weight.grad.clone() for layer in model.masked_layers()]
    model.add_extra_gradients(data, 0, BCE)
    contrast = model.contrastive_masks()
    for layer, base, c, mask in zip(model.masked_layers(), plain, contrast, model.masks(),
                                    strict=True):
        extra = layer.weight.grad - base
        assert torch.equal(c, 1 - mask[0] * mask[1])
        assert extra[c == 0].abs().sum() == 0  # nothing on the part every task shares
        assert extra[c == 1].abs().sum() > 0
    # the extra gradient is that of -BCE through W * c (embeddings held fixed)
    x = model.embedding(data.dense, data.sparse).detach()
    neg = -F.binary_cross_entropy_with_logits(model.task_logit(x, 0, contrast), data.labels[:, 0])
    expected = torch.autograd.grad(neg, [layer.weight for layer in model.masked_layers()])
    for layer, base, want in zip(model.masked_layers(), plain, expected, strict=True):
        assert torch.allclose(layer.weight.grad - base, want, atol=1e-7)


def test_same_seed_starts_sparse_sharing_where_shared_bottom_starts():
    """IMP prunes a Shared Bottom grown from the seed; the masked model starts from its weights."""
    torch.manual_seed(5)
    bottom = make("shared_bottom")
    torch.manual_seed(5)
    sparse = make("sparse_sharing")
    for key, value in bottom.state_dict().items():
        assert torch.equal(value, sparse.state_dict()[key]), key


def test_masks_of_the_wrong_shape_are_refused():
    model = make("sparse_sharing")
    with pytest.raises(MtlrecError, match="do not fit"):
        model.load_masks([torch.ones(2, 3, 3)])


def test_prune_smallest_drops_the_smallest_survivors():
    weight = torch.tensor([[0.5, -0.1, 0.3], [-0.05, 0.9, 0.2]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [0.0, 1.0, 1.0]])  # -0.05 is already pruned
    pruned = prune_smallest(weight, mask, 0.4)  # 40 % of 5 survivors = 2: -0.1 and 0.2
    assert torch.equal(pruned, torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]))
    assert torch.equal(mask, torch.tensor([[1.0, 1.0, 1.0], [0.0, 1.0, 1.0]]))  # not in place


def test_mask_selection_best_val_among_pruned_enough_or_last():
    history = [{"prune_rate": r, "val_auc": a}
               for r, a in [(0.0, 0.99), (0.3, 0.95), (0.45, 0.93), (0.5, 0.94), (0.6, 0.90)]]
    assert choose_iteration(history, "best_val", 0.4) == 3
    assert choose_iteration(history, "last", 0.4) == 4
    assert choose_iteration(history, "best_val", 0.9) == 4  # none eligible: the most pruned


@pytest.fixture()
def pruning_params(tiny_params):
    tiny_params["pruning"].update(warmup_epochs=1, iterations=3, epochs_per_iteration=1,
                                  min_prune_rate=0.1)
    return tiny_params


def test_find_masks_then_train_on_them(tmp_path, encoded_census, pruning_params):
    result = find_masks(pruning_params, "census", 7, encoded_census, tmp_path / "masks")
    again = find_masks(pruning_params, "census", 7, encoded_census, tmp_path / "again")
    masks = load_masks(tmp_path / "masks" / "masks.pt", ["income", "marital"])
    assert ((tmp_path / "masks" / "masks.pt").read_bytes()
            == (tmp_path / "again" / "masks.pt").read_bytes())
    for first, second in zip(masks, load_masks(tmp_path / "again" / "masks.pt",
                                               ["income", "marital"]), strict=True):
        assert torch.equal(first, second)
    assert [list(m.shape) for m in masks] == [[2, 256, 127], [2, 128, 256]]
    report = json.loads((tmp_path / "masks" / "masks.json").read_text())
    assert report["history"] == again["history"] == result["history"]
    for task, history in report["history"].items():
        rates = [h["prune_rate"] for h in history]
        assert rates[0] == 0 and rates[1] == pytest.approx(0.1, abs=1e-3)
        assert rates[2] == pytest.approx(0.19, abs=1e-3)
        kept = [h for h in history if h["kept"]]
        assert len(kept) == 1 and kept[0]["prune_rate"] > 0.1
        assert report["kept_prune_rate"][task] == pytest.approx(kept[0]["prune_rate"])

    metrics = run_training(pruning_params, "census", "csrec", 7, encoded_census, tmp_path / "run",
                           tmp_path / "masks" / "masks.pt")
    assert metrics["test_auc"]["income"] > 0.7
    assert metrics["mask_prune_rate"] == report["kept_prune_rate"]
    with pytest.raises(MtlrecError, match="--masks"):
        run_training(pruning_params, "census", "sparse_sharing", 7, encoded_census, tmp_path / "x")
    with pytest.raises(MtlrecError, match="tasks"):
        load_masks(tmp_path / "masks" / "masks.pt", ["income"])


def test_interrupted_mask_finding_resumes_to_the_same_masks(tmp_path, encoded_census,
                                                            pruning_params, capsys):
    """Killed during the second task's IMP, a rerun skips the warm-up and the finished task and
    gives the masks of an uninterrupted run; other params start over (#19)."""
    from unittest import mock

    import mtlrec.train.pruning as pruning

    find_masks(pruning_params, "census", 7, encoded_census, tmp_path / "straight")
    real = pruning._task_masks

    def killed_at_task_1(model, task, *args):
        if task == 1:
            raise KeyboardInterrupt
        return real(model, task, *args)

    out = tmp_path / "resumed"
    with mock.patch.object(pruning, "_task_masks", side_effect=killed_at_task_1), \
            pytest.raises(KeyboardInterrupt):
        find_masks(pruning_params, "census", 7, encoded_census, out)
    assert (out / "resume.pt").is_file() and not (out / "masks.pt").exists()
    killed = torch.load(out / "resume.pt", weights_only=True)["seconds"]  # warm-up + task 0
    capsys.readouterr()
    with mock.patch.object(pruning, "train_epoch", wraps=pruning.train_epoch) as epochs:
        find_masks(pruning_params, "census", 7, encoded_census, out)
    assert "resuming after the warm-up and 1 of 2 task(s)" in capsys.readouterr().err
    per_task_epochs = pruning_params["pruning"]["iterations"] * 1
    assert epochs.call_count == per_task_epochs  # task 1 only: no warm-up, no task 0
    for name in ("masks.pt",):
        assert (out / name).read_bytes() == (tmp_path / "straight" / name).read_bytes()
    assert not (out / "resume.pt").exists()
    assert json.loads((out / "timing.json").read_text())["wall_time_s"] > killed > 0
