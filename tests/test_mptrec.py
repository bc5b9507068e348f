"""MPT-Rec: gradient reversal, EM labels, the alpha schedules and the ablation switches."""

import copy

import pytest
import torch
from conftest import device_under_test

from mtlrec.data.batches import TensorSplit
from mtlrec.models import build_model
from mtlrec.models.adversarial import dann_alpha, reverse_gradient, schedule_progress
from mtlrec.models.layers import Batch, FeatureSpec, StepInfo
from mtlrec.train.hooks import TaskClustering
from mtlrec.train.objectives import BinaryCrossEntropy

EM = TaskClustering()


def loss_of(model, batch, info):
    """The summed training loss (what the `sum` combiner minimises)."""
    return model.training_losses(batch, info, BinaryCrossEntropy()).total

FEATURES = FeatureSpec(dense=("a", "b"), sparse=(("x", 5), ("y", 7)))
HPARAMS = {"embed_dim": 4, "expert_hidden": [16, 8], "tower_hidden": [8], "reg_emb": 0.0,
           "reg_dnn": 0.0, "gan_lambda": 0.1, "variant": "full", "stage1_loss": "paper",
           "alpha_schedule": "dann", "cluster_interval": 2, "e_step": "official",
           "cluster_init": "random"}
INFO = StepInfo(epoch=3, step=5, steps_per_epoch=10, epochs=5, batch_size=64)


def make(**overrides):
    torch.manual_seed(0)
    model = build_model("mptrec", FEATURES, 2, {**HPARAMS, **overrides}).to(device_under_test())
    EM.before_training(model, 64)
    return model


def data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    dense = torch.rand(n, 2, generator=g)
    sparse = torch.stack([torch.randint(0, v, (n,), generator=g) for v in (5, 7)], dim=1)
    labels = torch.randint(0, 2, (n, 2), generator=g).float()
    dev = device_under_test()
    return TensorSplit(dense.to(dev), sparse.to(dev), labels.to(dev), torch.arange(n).to(dev))


def batch_of(split):
    return Batch(split.dense, split.sparse, split.labels, split.row_id)


def test_gradient_reversal_layer_negates_and_scales():
    x = torch.randn(4, 3, requires_grad=True)
    reverse_gradient(x, 0.7).sum().backward()
    assert torch.allclose(x.grad, torch.full_like(x, -0.7))


def test_shared_expert_gets_the_reversed_classifier_gradient():
    """The classifier term's gradient on the shared expert has the opposite sign of the gradient
    the classifier itself would send without reversal (the expert maximises the task loss)."""
    model, split = make(), data()
    rep = model.representations(split.dense, split.sparse)
    targets = model.env_ids[split.row_id]
    weight = model.shared_expert[-2].weight  # the expert's last Linear

    def grad_of(alpha: float | None) -> torch.Tensor:
        h = rep["h_share"] if alpha is None else reverse_gradient(rep["h_share"], alpha)
        loss = torch.nn.functional.cross_entropy(model.classifier(h), targets)
        return torch.autograd.grad(loss, weight, retain_graph=True)[0]

    plain, reversed_ = grad_of(None), grad_of(1.0)
    assert plain.abs().sum() > 0
    assert torch.allclose(reversed_, -plain)
    # and the classifier's own weights are not reversed
    h = reverse_gradient(rep["h_share"], 1.0)
    loss = torch.nn.functional.cross_entropy(model.classifier(h), targets)
    own = torch.autograd.grad(loss, model.classifier.weight, retain_graph=True)[0]
    loss_plain = torch.nn.functional.cross_entropy(model.classifier(rep["h_share"]), targets)
    assert torch.allclose(own, torch.autograd.grad(loss_plain, model.classifier.weight)[0])


def test_dann_schedule_rises_once_and_official_restarts_every_epoch():
    dann = [schedule_progress("dann", e, s, 780, 30, 256) for e in (1, 2) for s in (0, 779)]
    assert dann == sorted(dann) and dann[0] == 0.0 and dann[-1] < 2 / 30
    official_end_1 = schedule_progress("official", 1, 779, 780, 30, 256)
    official_start_2 = schedule_progress("official", 2, 0, 780, 30, 256)
    assert dann_alpha(official_end_1) > dann_alpha(official_start_2)  # the bug: alpha falls back
    assert dann_alpha(official_end_1) == pytest.approx(0.47, abs=0.01)  # spec section 1.3


def test_em_labels_follow_the_losses():
    """The E-step gives each row the task it predicts best: change which task is easy and the
    labels change."""
    model, split = make(), data()
    costs = EM.per_row_costs(model, split, 16)
    assert costs.shape == (64, 2)
    assert torch.equal(EM.assign(model, split, 16), costs.argmin(1))
    before = EM.assign(model, split, 16)
    flipped = copy.copy(split)
    flipped.labels = 1 - split.labels  # every row's per-task loss changes
    after = EM.assign(model, flipped, 16)
    assert not torch.equal(before, after)
    info = EM.after_epoch(model, 2, split, 16)  # epoch 2: an E-step round
    assert info["em_round"] == 1 and sum(info["em_sizes"]) == 64 and "em_changed" in info
    assert "em_changed" not in EM.after_epoch(model, 3, split, 16)  # interval 2: no round at 3


def test_invpref_e_step_gives_valid_labels():
    model, split = make(e_step="invpref"), data()
    labels = EM.assign(model, split, 16)
    assert labels.shape == (64,) and set(labels.tolist()) <= {0, 1}


def test_env_labels_are_read_by_row_id_not_position():
    model, split = make(), data()
    model.env_ids = torch.zeros(64, dtype=torch.long, device=split.labels.device)
    model.env_ids[40:] = 1
    rows = torch.arange(40, 64, device=split.labels.device)
    part = split.take(rows)
    batch = Batch(part.dense, part.sparse, part.labels, part.row_id)
    torch.manual_seed(0)
    loss_rows = loss_of(model, batch, INFO)
    model.env_ids[40:] = 0  # the labels of exactly these rows change -> the loss changes
    assert not torch.allclose(loss_rows, loss_of(model, batch, INFO))


@pytest.mark.parametrize("variant", ["share", "specific"])
def test_share_and_specific_switch_the_prediction_only(variant):
    full, other = make(), make(variant=variant)
    other.load_state_dict(full.state_dict())
    split = data()
    rep = full.representations(split.dense, split.sparse)
    assert not torch.allclose(full(split.dense, split.sparse), other(split.dense, split.sparse))
    expected = full._share(rep) if variant == "share" else full._specific(rep)
    assert torch.allclose(other(split.dense, split.sparse), expected)
    # the training loss is unchanged by these switches
    assert torch.allclose(loss_of(full, batch_of(split), INFO),
                          loss_of(other, batch_of(split), INFO))


def test_no_gan_drops_the_classifier_term():
    no_gan, full = make(variant="no_gan"), make()
    no_gan.load_state_dict(full.state_dict())
    split = data()
    loss_of(no_gan, batch_of(split), INFO).backward()
    assert no_gan.classifier.weight.grad is None
    loss_of(full, batch_of(split), INFO).backward()
    assert full.classifier.weight.grad.abs().sum() > 0


def test_fused_only_loss_ignores_share_and_classifier():
    model = make(stage1_loss="fused_only")
    loss_of(model, batch_of(data()), INFO).backward()
    assert model.classifier.weight.grad is None


def test_checkpoint_carries_the_em_labels():
    model, split = make(), data()
    EM.after_epoch(model, 2, split, 16)
    clone = make()
    clone.load_state_dict(model.state_dict())
    assert torch.equal(clone.env_ids, model.env_ids) and clone.em_round == 1


def test_cluster_initialisations():
    torch.manual_seed(3)
    expected = torch.randint(0, 2, (64,))  # the official draw: same RNG call, same labels
    torch.manual_seed(3)
    model = build_model("mptrec", FEATURES, 2, HPARAMS)
    torch.manual_seed(3)
    EM.before_training(model, 64)
    assert torch.equal(model.env_ids.cpu(), expected)
    balanced = build_model("mptrec", FEATURES, 2, {**HPARAMS, "cluster_init": "balanced"})
    EM.before_training(balanced, 65)
    assert torch.bincount(balanced.env_ids).tolist() == [33, 32]
