"""The dense layer's kernels: the oneDNN and BLAS CPU paths compute F.linear's maths (values and
gradients, with and without the fused ReLU, above and below the size threshold), deterministically,
`auto` picks by the CPU's instruction set, and the `runtime.cpu_linear` switch is validated and
recorded."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mtlrec import kernels
from mtlrec.kernels import (
    ONEDNN_MIN_MACS,
    cpu_linear,
    flush_denormal,
    linear,
    linear_stack,
    resolve_cpu_linear,
    set_cpu_linear,
    set_flush_denormal,
)
from mtlrec.models import build_model
from mtlrec.models.layers import MLP, FeatureSpec

needs_onednn = pytest.mark.skipif(not kernels.onednn_available(),
                                  reason="torch built without oneDNN")


@pytest.fixture(autouse=True)
def _restore_kernels():
    before = dict(kernels._settings)
    yield
    set_cpu_linear(before["cpu_linear"])
    set_flush_denormal(before["flush_denormal"])


def _reference(x, weight, bias, relu):
    out = F.linear(x, weight, bias)
    return torch.relu(out) if relu else out


def _grads(fn, x, weight, bias, upstream):
    x, weight = x.clone().requires_grad_(), weight.clone().requires_grad_()
    bias = None if bias is None else bias.clone().requires_grad_()
    out = fn(x, weight, bias)
    out.backward(upstream)
    return out.detach(), x.grad, weight.grad, None if bias is None else bias.grad


# (batch, in, out): above the oneDNN threshold (256*127*256 MACs) and below it (256*32*1)
SHAPES = [(256, 127, 256), (256, 256, 128), (256, 32, 1), (37, 64, 32)]


@needs_onednn
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
def test_onednn_linear_matches_f_linear_values_and_gradients(shape, relu, with_bias):
    batch, n_in, n_out = shape
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, n_in, generator=gen)
    weight = torch.randn(n_out, n_in, generator=gen) / n_in**0.5
    bias = torch.randn(n_out, generator=gen) if with_bias else None
    upstream = torch.randn(batch, n_out, generator=gen)
    set_cpu_linear("onednn")
    ours = _grads(lambda a, w, b: linear(a, w, b, relu=relu), x, weight, bias, upstream)
    ref = _grads(lambda a, w, b: _reference(a, w, b, relu), x, weight, bias, upstream)
    for got, want in zip(ours, ref, strict=True):
        if want is None:
            assert got is None
            continue
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)


@needs_onednn
def test_onednn_linear_takes_views_and_leading_dims():
    gen = torch.Generator().manual_seed(1)
    base = torch.randn(256, 3, 128, generator=gen)
    weight = torch.randn(64, 128, generator=gen)
    view = base[:, 1]  # [256, 128], non-contiguous (stride 384)
    assert not view.is_contiguous()
    torch.testing.assert_close(linear(view, weight), F.linear(view, weight), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(linear(base, weight), F.linear(base, weight), rtol=1e-5, atol=1e-4)
    assert linear(base, weight).shape == (256, 3, 64)


@needs_onednn
def test_onednn_path_is_the_one_taken_and_it_is_deterministic():
    gen = torch.Generator().manual_seed(2)
    x, weight = torch.randn(256, 127, generator=gen), torch.randn(256, 127, generator=gen)
    assert ONEDNN_MIN_MACS <= 256 * 127 * 256
    set_cpu_linear("onednn")
    with torch.profiler.profile() as prof:
        first, second = linear(x, weight), linear(x, weight)
        linear(x[:, :32], weight[:1, :32])  # below the threshold: torch's own call
    ops = [event.key for event in prof.key_averages()]
    assert "mkldnn::_linear_pointwise" in ops and "aten::linear" in ops
    assert torch.equal(first, second)
    set_cpu_linear("torch")
    assert torch.equal(linear(x, weight), F.linear(x, weight))  # 'torch' is F.linear itself
    # the two paths sum in a different order: equal maths, not always equal bits
    assert torch.allclose(first, F.linear(x, weight), rtol=1e-5, atol=1e-4)


def test_unknown_kernel_name_is_refused():
    with pytest.raises(ValueError, match="cpu_linear must be one of"):
        set_cpu_linear("mkl")


@pytest.mark.parametrize("avx512", [True, False])
def test_auto_picks_onednn_on_avx512_and_blas_elsewhere(monkeypatch, avx512):
    """`auto` is a function of the CPU (never of a timing), recorded resolved."""
    monkeypatch.setattr(kernels, "has_avx512", lambda: avx512)
    want = "onednn" if avx512 and kernels.onednn_available() else "blas"
    assert resolve_cpu_linear("auto") == want
    set_cpu_linear("auto")
    assert cpu_linear() == want
    assert resolve_cpu_linear("torch") == "torch" and resolve_cpu_linear("blas") == "blas"


def test_onednn_without_onednn_falls_back_to_blas(monkeypatch):
    monkeypatch.setattr(kernels, "onednn_available", lambda: False)
    assert resolve_cpu_linear("onednn") == "blas"


def test_blas_path_is_one_node_of_torch_products_only():
    """`blas`: the fused stack (one autograd node) whose every product is torch's own call, so a
    forward equals F.linear's bits and no oneDNN op runs, above the oneDNN threshold too."""
    x, layers = _stack_case((256,), True)
    set_cpu_linear("blas")
    with torch.profiler.profile() as prof:
        out = linear_stack(x, layers)
        out.pow(2).sum().backward()
    ops = [event.key for event in prof.key_averages()]
    assert type(out.grad_fn).__name__ == "_DenseStackBackward"
    assert "mkldnn::_linear_pointwise" not in ops
    gen = torch.Generator().manual_seed(2)
    a, weight = torch.randn(256, 127, generator=gen), torch.randn(256, 127, generator=gen)
    assert torch.equal(linear(a, weight, relu=True), torch.relu(F.linear(a, weight)))


def test_mlp_fused_forward_equals_its_modules_one_by_one():
    torch.manual_seed(0)
    mlp = MLP(20, [16, 8])
    x = torch.randn(5, 20)
    step_by_step = x
    for module in mlp:
        step_by_step = module(step_by_step)  # Linear (kernels.linear) then nn.ReLU
    assert torch.equal(mlp(x), step_by_step)


def _stack_case(lead: tuple[int, ...], x_needs_grad: bool):
    """Input and a tower-like stack: 127 -> 256 -> 128 (oneDNN) -> 32 (below the threshold,
    torch's call) -> 1 (no ReLU), one layer without bias."""
    gen = torch.Generator().manual_seed(7)
    sizes = [127, 256, 128, 32, 1]
    x = torch.randn(*lead, sizes[0], generator=gen).requires_grad_(x_needs_grad)
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:], strict=False)):
        weight = (torch.randn(n_out, n_in, generator=gen) / n_in**0.5).requires_grad_()
        bias = None if i == 1 else torch.randn(n_out, generator=gen).requires_grad_()
        layers.append((weight, bias, i < len(sizes) - 2))
    return x, layers


def _stack_grads(run, x, layers):
    inputs = [x] * x.requires_grad + [t for w, b, _ in layers for t in (w, b) if t is not None]
    out = run(x, layers)
    grads = torch.autograd.grad(out.pow(2).sum(), inputs)
    return out.detach(), grads


@pytest.mark.parametrize("kernel", ["onednn", "blas", "torch"])
@pytest.mark.parametrize("lead", [(256,), (4, 64)])
@pytest.mark.parametrize("x_needs_grad", [True, False])
def test_linear_stack_gives_the_bits_of_linear_layer_by_layer(kernel, lead, x_needs_grad):
    """One autograd node for the whole stack computes exactly what a chain of `linear` calls
    does: the same output and gradients, bit for bit (the committed results rely on it)."""
    if kernel == "onednn" and not kernels.onednn_available():
        pytest.skip("torch built without oneDNN")
    set_cpu_linear(kernel)
    x, layers = _stack_case(lead, x_needs_grad)

    def one_by_one(a, stack):
        for weight, bias, relu in stack:
            a = linear(a, weight, bias, relu=relu)
        return a

    got, got_grads = _stack_grads(linear_stack, x, layers)
    want, want_grads = _stack_grads(one_by_one, x, layers)
    assert got.shape == (*lead, 1)
    assert torch.equal(got, want)
    assert len(got_grads) == len(want_grads)
    for g, w in zip(got_grads, want_grads, strict=True):
        assert torch.equal(g, w)


@needs_onednn
def test_linear_stack_is_one_autograd_node_on_onednn():
    set_cpu_linear("onednn")
    x, layers = _stack_case((256,), True)
    out = linear_stack(x, layers)
    assert type(out.grad_fn).__name__ == "_DenseStackBackward"
    set_cpu_linear("torch")
    assert type(linear_stack(x, layers).grad_fn).__name__ != "_DenseStackBackward"


def test_schema_rejects_an_unknown_cpu_linear(base_params):
    import copy

    from mtlrec.config import validate
    from mtlrec.errors import MtlrecError

    params = copy.deepcopy(base_params)
    params["runtime"]["cpu_linear"] = "onednnn"
    with pytest.raises(MtlrecError, match="cpu_linear"):
        validate(params)


@needs_onednn
def test_models_train_alike_on_every_kernel_path():
    """Three Adam steps of MMOE from the same weights: every kernel path gives the same losses up to
    float rounding (they are the same maths)."""
    features = FeatureSpec(dense=("a",), sparse=(("f", 10), ("g", 7)))
    gen = torch.Generator().manual_seed(3)
    dense = torch.randn(512, 1, generator=gen)
    sparse = torch.stack([torch.randint(0, 10, (512,), generator=gen),
                          torch.randint(0, 7, (512,), generator=gen)], 1)
    labels = torch.randint(0, 2, (512, 2), generator=gen).float()
    hparams = {"embed_dim": 4, "num_experts": 3, "expert_hidden": [256, 128],
               "tower_hidden": [64, 32], "reg_emb": 3e-4, "reg_dnn": 3e-4}
    losses = {}
    for name in ("onednn", "blas", "torch"):
        set_cpu_linear(name)
        torch.manual_seed(0)
        model = build_model("mmoe", features, 2, hparams)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        losses[name] = []
        for _ in range(3):
            loss = F.binary_cross_entropy_with_logits(model(dense, sparse), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses[name].append(loss.item())
    assert cpu_linear() == "torch"
    assert losses["onednn"] == pytest.approx(losses["torch"], rel=1e-5)
    assert losses["blas"] == pytest.approx(losses["torch"], rel=1e-5)


@needs_onednn
def test_second_order_gradients_fail_loudly_on_fused_paths_and_work_on_torch():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(256, 127, generator=gen)
    weight = torch.randn(256, 127, generator=gen).requires_grad_()
    for name in ("onednn", "blas", "torch"):
        set_cpu_linear(name)
        (grad,) = torch.autograd.grad(linear(x, weight, relu=True).pow(2).sum(), weight,
                                      create_graph=True)
        if name != "torch":
            with pytest.raises(RuntimeError, match="once_differentiable"):
                grad.sum().backward()
        else:
            grad.sum().backward()  # MAML-style double backward
            assert weight.grad is not None


@pytest.mark.parametrize("setting", ["onednn", "blas", "torch"])
@pytest.mark.parametrize("name", sorted(__import__("mtlrec.models", fromlist=["MODELS"]).MODELS))
def test_per_sample_gradients_with_torch_func_on_every_model(name, setting):
    """vmap(grad(loss)) runs on every registered model with either kernel setting (the speed-only
    Functions step aside under torch.func) and equals one backward pass per row."""
    from test_models import batch, make
    from torch.func import functional_call, grad, vmap

    from mtlrec.kernels import set_cpu_linear
    from mtlrec.train.objectives import BinaryCrossEntropy

    objective = BinaryCrossEntropy()
    set_cpu_linear(setting)
    try:
        model = make(name, reg=1e-3)
        dense, sparse, labels = batch(6)
        labels = labels[:, :2]
        params = {k: v.detach() for k, v in model.named_parameters()}

        def loss(p, d, s, y):
            logits = functional_call(model, p, (d.unsqueeze(0), s.unsqueeze(0)))
            return objective.task_losses(logits, y.unsqueeze(0)).sum()

        per_row = vmap(grad(loss), in_dims=(None, 0, 0, 0))(params, dense, sparse, labels)
        for row in (0, 5):
            model.zero_grad(set_to_none=True)
            objective.task_losses(model(dense[row:row + 1], sparse[row:row + 1]),
                                  labels[row:row + 1]).sum().backward()
            for key, param in model.named_parameters():
                want = param.grad if param.grad is not None else torch.zeros_like(param)
                assert torch.allclose(per_row[key][row], want, atol=1e-6), (key, row)
    finally:
        set_cpu_linear("onednn")


def test_flush_denormal_zeroes_subnormal_results_and_is_recorded():
    from mtlrec.provenance import provenance

    tiny = torch.tensor([1e-37])  # normal; / 1000 is subnormal
    set_flush_denormal(False)
    assert (tiny / 1000).item() > 0 and not flush_denormal()
    assert provenance(torch.device("cpu"), 1)["flush_denormal"] is False
    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU has no flush-to-zero mode")
    set_flush_denormal(True)
    assert (tiny / 1000).item() == 0 and flush_denormal()
    record = provenance(torch.device("cpu"), 1)
    assert record["flush_denormal"] is True and record["cpu"]
    assert (tiny * 2).item() == pytest.approx(2e-37)  # normal values are untouched
