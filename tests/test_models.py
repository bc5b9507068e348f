"""Tests iterate over the registry: a new model is covered with no new test code."""

import pytest
import torch
from conftest import device_under_test

from mtlrec.errors import MtlrecError
from mtlrec.kernels import fast_ops_apply, l2_value, squares_l2
from mtlrec.models import MODELS, build_model
from mtlrec.models.layers import Batch, FeatureEmbedding, FeatureSpec, StepInfo, linear_weights
from mtlrec.models.single_task import SingleTask
from mtlrec.train.combiners import COMBINERS, get_combiner
from mtlrec.train.objectives import BinaryCrossEntropy
from mtlrec.train.optim import LeanAdam

FEATURES = FeatureSpec(dense=("a", "b"), sparse=(("x", 5), ("y", 7), ("z", 3)))
HPARAMS = {
    "single_task": {"expert_hidden": [16, 8]},
    "shared_bottom": {"expert_hidden": [16, 8]},
    "mmoe": {"num_experts": 3, "expert_hidden": [16, 8]},
    "ple": {"num_levels": 2, "num_shared_experts": 1, "num_specific_experts": 1,
            "expert_hidden": [16], "gate_bias": False},
    "stem": {"expert_hidden": [16, 8]},
    "sparse_sharing": {"expert_hidden": [16, 8], "masked_update": "exact"},
    "csrec": {"expert_hidden": [16, 8], "masked_update": "exact"},
    "mptrec": {"expert_hidden": [16, 8], "gan_lambda": 0.1, "variant": "full",
               "stage1_loss": "paper", "alpha_schedule": "dann", "cluster_interval": 2,
               "e_step": "official", "cluster_init": "random"},
    "maml": {"expert_hidden": [16, 8], "inner_lr": 0.01, "inner_steps": 1, "order": 1},
}


def make(name: str, num_tasks: int = 2, reg: float = 0.0):
    hparams = {"embed_dim": 4, "tower_hidden": [8], "reg_emb": reg, "reg_dnn": reg,
               **HPARAMS[name]}
    return build_model(name, FEATURES, num_tasks, hparams).to(device_under_test())


def batch(n: int = 32):
    g = torch.Generator().manual_seed(0)
    dense = torch.rand(n, 2, generator=g)
    sparse = torch.stack([torch.randint(0, v, (n,), generator=g) for v in (5, 7, 3)], dim=1)
    labels = torch.randint(0, 2, (n, 3), generator=g).float()
    device = device_under_test()
    return dense.to(device), sparse.to(device), labels.to(device)


def test_every_registered_model_has_test_hparams():
    assert set(HPARAMS) == set(MODELS)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("num_tasks", [1, 2, 3])
def test_forward_shape_and_every_parameter_learns(name, num_tasks):
    if num_tasks < MODELS[name].min_tasks:
        with pytest.raises(MtlrecError, match="needs at least"):
            make(name, num_tasks)
        return
    model = make(name, num_tasks, reg=1e-3)
    dense, sparse, labels = batch()
    logits = model(dense, sparse)
    assert logits.shape == (32, num_tasks)
    for hook in model.epoch_hooks():
        hook.before_training(model, 64)
    rows = torch.arange(32, device=dense.device)
    info = StepInfo(epoch=2, step=3, steps_per_epoch=10, epochs=5, batch_size=32)
    terms = model.training_losses(Batch(dense, sparse, labels[:, :num_tasks], rows), info,
                                  BinaryCrossEntropy())
    assert terms.per_task.shape == (num_tasks,)
    terms.total.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        if "table" not in pname:  # embedding rows of unseen codes may get zero gradient
            assert p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", sorted(MODELS))
def test_l2_penalty_matches_hand_computation(name):
    model = make(name, reg=0.5)
    tables = sum(m.table.weight.pow(2).sum() / 2 for m in model.modules()
                 if isinstance(m, FeatureEmbedding))
    dnn = squares_l2(linear_weights(model.regularised_modules()))
    assert torch.allclose(model.l2_penalty(), 0.5 * tables + 0.5 * dnn)
    zero = torch.zeros((), device=device_under_test())
    assert torch.equal(make(name, reg=0.0).l2_penalty(), zero)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("upstream", [1.0, 0.37])
def test_l2_penalty_node_gives_the_bits_of_the_op_by_op_graph(name, upstream):
    """The one-node L2 term: the same value and gradients, bit for bit, as autograd through its
    ops (what the committed results were trained with)."""
    model = make(name, reg=3e-4)
    model.reg_dnn = 7e-5 if model.reg_dnn else 0.0
    tables = [m.table.weight for m in model.modules() if isinstance(m, FeatureEmbedding)]
    weights = linear_weights(model.regularised_modules()) if model.reg_dnn else []
    inputs = tables + weights
    reference = l2_value(model.reg_emb, model.reg_dnn, tables, weights)
    want = torch.autograd.grad(reference * upstream, inputs)
    ours = model.l2_penalty()
    got = torch.autograd.grad(ours * upstream, inputs)
    if fast_ops_apply(ours):  # the one node on the fast path, the op chain elsewhere
        assert type(ours.grad_fn).__name__ == "_L2PenaltyBackward"
    assert torch.equal(ours, reference)
    for g, w in zip(got, want, strict=True):
        assert torch.equal(g, w)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_models_combiner_steps_it_and_no_model_steps_itself(name):
    """The loop steps every model through the combiner it names; models have no step of their
    own (they give losses, the combiner makes the update)."""
    assert MODELS[name].combiner in COMBINERS
    assert not hasattr(MODELS[name], "train_step") and not hasattr(MODELS[name], "step_within")
    model = make(name, reg=1e-3)
    for hook in model.epoch_hooks():
        hook.before_training(model, 64)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    optimizer = LeanAdam(model.parameters(), lr=1e-2)
    dense, sparse, labels = batch()
    info = StepInfo(epoch=1, step=0, steps_per_epoch=10, epochs=5, batch_size=32)
    loss = get_combiner(model.combiner).step(
        model, Batch(dense, sparse, labels[:, :2], torch.arange(32, device=dense.device)), info,
        BinaryCrossEntropy(), optimizer)
    assert loss.ndim == 0 and torch.isfinite(loss) and not loss.requires_grad
    moved = [k for k, v in model.named_parameters() if not torch.equal(v, before[k])]
    assert any("tower" in k for k in moved), moved


def test_gates_are_not_regularised():
    model = make("mmoe", reg=1.0)
    regularised = {id(p) for m in model.regularised_modules() for p in m.parameters()}
    assert all(id(p) not in regularised for p in model.gates.parameters())


def test_single_task_networks_are_independent():
    """Task 0's loss must not reach task 1's network: the joint run equals two solo runs."""
    model = make("single_task")
    assert isinstance(model, SingleTask)
    dense, sparse, _ = batch()
    model(dense, sparse)[:, 0].sum().backward()
    for p in [*model.embeddings[1].parameters(), *model.experts[1].parameters(),
              *model.towers[1].parameters()]:
        assert p.grad is None or p.grad.abs().sum() == 0


def test_embedding_is_dense_first_then_fields_in_order():
    embedding = FeatureEmbedding(FEATURES, embed_dim=4)
    dense, sparse, _ = batch(2)
    out = embedding(dense.cpu(), sparse.cpu())
    assert out.shape == (2, 2 + 3 * 4)
    assert torch.equal(out[:, :2], dense.cpu())
    # field y (second) uses rows offset by the vocab of x (5)
    assert torch.equal(out[:, 6:10], embedding.table.weight[sparse[:, 1].cpu() + 5])


def test_census_dims_match_the_spec(base_params):
    """Input dim 127 and the paper-config MMOE size on the real Census vocabularies."""
    census = FeatureSpec(dense=tuple(f"d{i}" for i in range(11)),
                         sparse=tuple((f"s{i}", 10) for i in range(29)))
    model = build_model("mmoe", census, 2, base_params["models"]["mmoe"])
    assert model.embedding.output_dim == 127
    expert = model.experts[0]
    assert [layer.out_features for layer in expert if hasattr(layer, "out_features")] == [256, 128]


def test_stem_task_loss_reaches_only_its_own_and_the_shared_embeddings():
    """All-forward gating with stop-gradient: task 0's loss trains emb_0 and emb_shared, and
    reads task 1's expert output without training it."""
    model = make("stem")
    dense, sparse, _ = batch()
    model(dense, sparse)[:, 0].sum().backward()
    assert model.shared_embedding.table.weight.grad.abs().sum() > 0
    assert model.task_embeddings[0].table.weight.grad.abs().sum() > 0
    assert model.specific_experts[0][0].weight.grad.abs().sum() > 0
    for p in [*model.task_embeddings[1].parameters(), *model.specific_experts[1].parameters()]:
        assert p.grad is None or p.grad.abs().sum() == 0


def _grad_sum(module: torch.nn.Module) -> float:
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


@pytest.mark.parametrize("num_tasks", [2, 3])
def test_stem_official_gating_detaches_every_later_tasks_own_expert(num_tasks):
    """gating=official (the official code's reassigned list): the forward is the intended
    STEM's, bit for bit, but only task 0's loss reaches a specific expert (its own); the summed
    loss leaves every other specific expert without a gradient, while the intended STEM trains
    each task's own expert."""
    dense, sparse, _ = batch()
    models = {}
    for gating in ("intended", "official"):
        torch.manual_seed(0)
        hparams = {"embed_dim": 4, "tower_hidden": [8], "reg_emb": 0.0, "reg_dnn": 0.0,
                   "expert_hidden": [16, 8], "gating": gating}
        models[gating] = build_model("stem", FEATURES, num_tasks, hparams).to(device_under_test())
    out = {g: m(dense, sparse) for g, m in models.items()}
    assert torch.equal(out["intended"], out["official"])
    for g, m in models.items():
        out[g].sum().backward()
        grads = [_grad_sum(e) for e in m.specific_experts]
        assert grads[0] > 0
        if g == "intended":
            assert all(x > 0 for x in grads)
        else:
            assert grads[1:] == [0.0] * (num_tasks - 1)
            assert _grad_sum(m.task_embeddings[1]) > 0  # through task 1's gate input only
    with pytest.raises(ValueError, match="gating"):
        build_model("stem", FEATURES, 2, {"embed_dim": 4, "tower_hidden": [8], "reg_emb": 0.0,
                                          "reg_dnn": 0.0, "expert_hidden": [8],
                                          "gating": "buggy"})


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_gate_mix_gives_the_bits_of_einsum_forward_and_backward(n):
    """The fast gate mixture is a speed change only: same numbers as the einsum it replaces."""
    from mtlrec.kernels import mix

    g = torch.Generator().manual_seed(n)
    device = device_under_test()
    weights = torch.softmax(torch.randn(300, n, generator=g), -1).to(device)
    choices = torch.relu(torch.randn(300, n, 128, generator=g)).to(device)
    upstream = torch.randn(300, 128, generator=g).to(device)
    w, c = weights.clone().requires_grad_(), choices.clone().requires_grad_()
    out = torch.einsum("bn,bnd->bd", w, c)
    out.backward(upstream)
    results = [(out, w.grad, c.grad)]
    w, c = weights.clone().requires_grad_(), [x.clone().requires_grad_() for x in choices.unbind(1)]
    out = mix(w, c)  # the choices as a list, as the models pass them
    out.backward(upstream)
    results.append((out, w.grad, torch.stack([x.grad for x in c], dim=1)))
    for ours, reference in zip(results[1], results[0], strict=True):
        if device.type == "cpu":
            assert torch.equal(ours, reference)
        else:
            assert torch.allclose(ours, reference, atol=1e-6)


@pytest.mark.parametrize("rows", [256, 4096])
def test_embedding_lookup_gives_the_bits_of_nn_embedding(rows):
    """The index_add_ backward is a speed change only (repeated codes included)."""
    from mtlrec.kernels import lookup

    g = torch.Generator().manual_seed(rows)
    device = device_under_test()
    table = torch.randn(517, 4, generator=g).to(device)
    index = torch.randint(0, 517, (rows, 29), generator=g)
    index[:, :5] = torch.randint(0, 2, (rows, 5), generator=g)  # heavy repeats
    index = index.to(device)
    upstream = torch.randn(rows, 29, 4, generator=g).to(device)
    grads = []
    for fn in (torch.nn.functional.embedding, lambda i, t: lookup(t, i)):
        weight = table.clone().requires_grad_()
        out = fn(index, weight)
        out.backward(upstream)
        grads.append((out, weight.grad))
    assert torch.equal(grads[0][0], grads[1][0])
    if device.type == "cpu":
        assert torch.equal(grads[0][1], grads[1][1])
    else:
        assert torch.allclose(grads[0][1], grads[1][1], atol=1e-5)


def test_embedding_gradient_is_the_same_twice_on_the_device():
    """Repeated codes sum into one row; on a GPU that sum must not depend on thread timing (the
    suite runs there with deterministic kernels, as a GPU training run does)."""
    from mtlrec.kernels import lookup

    g = torch.Generator().manual_seed(0)
    device = device_under_test()
    table = torch.randn(517, 4, generator=g).to(device)
    index = torch.randint(0, 3, (8192, 29), generator=g).to(device)  # ~80k adds per row
    upstream = torch.randn(8192, 29, 4, generator=g).to(device)
    grads = []
    for _ in range(2):
        weight = table.clone().requires_grad_()
        lookup(weight, index).backward(upstream)
        grads.append(weight.grad)
    assert torch.equal(grads[0], grads[1])
