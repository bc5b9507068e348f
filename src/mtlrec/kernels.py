"""The dense layer's matrix products, with a faster CPU path than torch's default BLAS call.

On the CPU, torch runs fp32 `F.linear` and its backward through MKL's sgemm. On AMD processors MKL
takes its AVX2 code path (MKL does not use AVX-512 on non-Intel CPUs), half the speed that oneDNN,
which torch also ships, gets from the same core with AVX-512: on this project's 2-core AMD EPYC
(Zen 5) a 1-thread [256, 160] x [160, 256] product runs at ~110 GFLOP/s through MKL and ~220
through oneDNN (benchmarks/bench_throughput.py prints both ceilings).

`linear(x, weight, bias, relu)` is the one entry point every model layer uses, and
`linear_stack(x, layers)` runs a stack of them (an MLP, a tower) as one autograd node with exactly
the same products (the same bits: one node instead of one per layer saves the autograd engine's
per-node cost, a sizeable part of a small training step). Which kernels they run is the
`runtime.cpu_linear` param, set once per process with `set_cpu_linear`:
- `onednn`: forward and both backward products through oneDNN's fp32 matmul (the
  `mkldnn._linear_pointwise` op torch's own compiler uses), with the ReLU fused into the forward;
  the bias gradient is a column sum. Full fp32 (oneDNN's strict fp math: no bf16/tf32 shortcuts).
- `blas`: the same one-node Functions, every product through torch's own BLAS call (MKL's
  sgemm on x86). On CPUs without AVX-512 oneDNN's matmul is the slower GEMM (a Zen 3 EPYC, AVX2:
  75 against MKL's 92.5 GFLOP/s on one thread), while the fused nodes still save per-op costs.
- `torch`: `F.linear` (+ `torch.relu`), torch's own path on every device, every op its own node.
- `auto` (default): `onednn` where torch reports AVX-512 (`torch.backends.cpu.
  get_cpu_capability()`, the ISA its own kernels dispatch to), `blas` elsewhere. The rule is a
  function of the CPU, never of a timing, so a given machine always makes the same choice (and
  the same bits); measured by benchmarks/bench_throughput.py on both kinds of CPU (README, Speed).
On CUDA every setting gives `torch`; where torch has no oneDNN, `onednn` gives `blas`.

The same switch covers every other speed-only autograd Function of the package, all in this module:
the embedding lookup (`lookup`: one `index_add_` backward), the gate mix (`mix`) and the L2 term
(`l2_penalty`: one node). With `torch` (and on CUDA) each of them is the plain chain of torch ops
it stands for. Under a `torch.func` transform (vmap, grad, jacrev: per-sample or per-row gradient
methods need them) the custom Functions are skipped automatically and the plain ops run, so
`vmap(grad(loss))` works on every model with either setting (tests/test_kernels.py).

Subnormal floats (below 1.2e-38) are the other CPU speed trap. Training makes them: Adam's first
moment of an embedding row no batch touches decays by 0.9 a step, and the weights of dead ReLU
units decay under L2, so after an epoch or two many products meet subnormal operands, which
Intel cores handle in microcode at ~100x the cost of a normal one (AMD's Zen cores do not pay
this). Measured on an Intel Xeon (family 6 model 207, one thread): Census Shared Bottom epochs took
3-4 s for two epochs, then 38-47 s from the third on. `runtime.flush_denormal: true` (default)
sets the CPU's flush-to-zero and denormals-are-zero modes for the training thread
(`set_flush_denormal`): epochs stay at 3.4 s. Only values below 1.2e-38 change (to zero); on
that machine a 5-epoch run wrote the same metrics.json with and without it, and its checkpoint
differed only in weights below 1e-30. torch sets the mode on the calling thread only: with
`num_threads` > 1 its worker threads may keep gradual underflow.

The CPU paths compute the same maths with different GEMM kernels (and so a different
summation order), so their results differ in the last bits (~1e-7 relative per product); each
path is deterministic on a given machine and thread count, and metrics.json records the path
that ran (`linear_kernels`). The results committed in runs/ were made with `onednn` on an
AVX-512 CPU, where `auto` gives `onednn` (see README, "Speed"). The fused paths are first-order
only: a method that differentiates through gradients (create_graph=True, e.g. MAML) gets a
clear error from them and runs with `runtime.cpu_linear: torch`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

CPU_LINEAR_CHOICES = ("auto", "onednn", "blas", "torch")
FUSED_PATHS = ("onednn", "blas")  # the settings under which the one-node Functions run


@cache  # asked on every layer call: look once per process
def onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def has_avx512() -> bool:
    """Whether torch's CPU kernels dispatch to AVX-512 on this machine."""
    return torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def resolve_cpu_linear(name: str) -> str:
    """A `runtime.cpu_linear` setting -> the path it runs here: 'auto' is 'onednn' on AVX-512
    CPUs and 'blas' elsewhere; 'onednn' is 'blas' where torch has no oneDNN."""
    if name not in CPU_LINEAR_CHOICES:
        raise ValueError(f"cpu_linear must be one of {CPU_LINEAR_CHOICES}, got {name!r}")
    if name == "auto":
        name = "onednn" if has_avx512() else "blas"
    if name == "onednn" and not onednn_available():
        name = "blas"
    return name


def set_cpu_linear(name: str) -> None:
    """Pick the CPU kernels of `linear` for this process: 'auto', 'onednn', 'blas' or 'torch'
    (recorded resolved: `cpu_linear()` says which path runs)."""
    _settings["cpu_linear"] = resolve_cpu_linear(name)


# cpu_linear: the params default until set_cpu_linear; flush_denormal: as applied
_settings: dict[str, str | bool] = {"cpu_linear": resolve_cpu_linear("auto"),
                                    "flush_denormal": False}


def set_flush_denormal(on: bool) -> None:
    """Flush subnormal floats to zero on this thread's CPU (FTZ + DAZ), or restore gradual
    underflow; recorded as applied (False where the CPU has no such mode)."""
    _settings["flush_denormal"] = bool(torch.set_flush_denormal(on)) and on


def flush_denormal() -> bool:
    """Whether this thread now flushes subnormal floats to zero (`set_flush_denormal`)."""
    return bool(_settings["flush_denormal"])


def cpu_linear() -> str:
    """The kernels `linear` runs on CPU tensors now: 'onednn', 'blas' or 'torch'."""
    return str(_settings["cpu_linear"])


ONEDNN_MIN_MACS = 1 << 20  # below this, oneDNN's ~10 us per call costs more than it saves


def torch_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                 relu: bool = False) -> torch.Tensor:
    """`linear`'s maths through torch's own ops (F.linear, then ReLU when `relu`)."""
    out = F.linear(x, weight, bias)
    return torch.relu(out) if relu else out


def _matmul_t(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None,
              relu: bool = False) -> torch.Tensor:
    """a [M, K], b [N, K] -> a @ b.T (+ bias, then ReLU when `relu`) [M, N].

    Each operand is contiguous or the transpose of a contiguous matrix (other strides send oneDNN
    to a slow reference kernel). Products of at least ONEDNN_MIN_MACS multiply-adds run through
    oneDNN, smaller ones through torch's BLAS call, where oneDNN's fixed cost per call dominates
    (measured: a [256, 32] x [32, 1] product takes 2 us through MKL, 11 through oneDNN). On the
    `blas` path every product is torch's own call."""
    if (a.shape[0] * a.shape[1] * b.shape[0] >= ONEDNN_MIN_MACS
            and _settings["cpu_linear"] == "onednn"):
        return torch.ops.mkldnn._linear_pointwise(a, b, bias, "relu" if relu else "none", [], "")
    return torch_linear(a, b, bias, relu)


def _forward_product(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                     relu: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One layer's forward: (contiguous x, contiguous weight, output) for the backward."""
    x, weight = x.contiguous(), weight.contiguous()
    return x, weight, _matmul_t(x, weight, bias, relu)


def _backward_products(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                       out: torch.Tensor | None, needs: tuple[bool, bool, bool]
                       ) -> tuple[torch.Tensor | None, ...]:
    """One layer's backward from the gradient of its output: (grad x, grad W, grad b), each
    None where `needs` says it is not wanted. `out` is the layer's ReLU'd output (None: no ReLU)."""
    grad = grad.contiguous()
    if out is not None:
        grad = torch.ops.aten.threshold_backward(grad, out, 0.0)  # torch's ReLU backward
    grad_x = grad_w = grad_b = None
    if needs[0]:
        grad_x = _matmul_t(grad, weight.t())  # [B, out] @ [out, in] -> [B, in]
    if needs[1]:
        grad_w = _matmul_t(grad.t(), x.t())  # [out, B] @ [B, in] -> [out, in]
    if needs[2]:
        grad_b = grad.sum(0)  # [out]
    return grad_x, grad_w, grad_b


class _DenseStack(torch.autograd.Function):
    """A stack of dense layers as one autograd node: layer i is y = x W_i^T + b_i, ReLU'd when
    relus[i], its forward and backward products through `_forward_product` /
    `_backward_products`; one node instead of one per layer saves the per-node cost of the autograd
    engine, which at the paper's sizes is a sizeable part of a training step. A single layer
    (`linear`) is a stack of one."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, relus: tuple[bool, ...], *weights_and_biases):
        # x [B, in]; weights_and_biases = (W_0, b_0, W_1, b_1, ...), b_i may be None
        saved: list[torch.Tensor | None] = []
        for i, relu in enumerate(relus):
            weight, bias = weights_and_biases[2 * i], weights_and_biases[2 * i + 1]
            layer_in, weight, x = _forward_product(x, weight, bias, relu)
            saved += [layer_in, weight, x if relu else None]
        ctx.save_for_backward(*saved)
        ctx.has_bias = [weights_and_biases[2 * i + 1] is not None for i in range(len(relus))]
        return x

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        saved = ctx.saved_tensors
        needs = ctx.needs_input_grad  # (x, relus, W_0, b_0, W_1, b_1, ...)
        grads: list[torch.Tensor | None] = [None] * (len(needs) - 2)
        for i in reversed(range(len(ctx.has_bias))):
            layer_in, weight, out = saved[3 * i: 3 * i + 3]
            wants = (i > 0 or needs[0], needs[2 + 2 * i], ctx.has_bias[i] and needs[3 + 2 * i])
            grad, grads[2 * i], grads[2 * i + 1] = _backward_products(grad, layer_in, weight,
                                                                      out, wants)
        return (grad, None, *grads)


def fast_ops_apply(x: torch.Tensor) -> bool:
    """True where the speed-only Functions run on `x`: a CPU tensor, the `onednn` or `blas` path,
    and no torch.func transform active (they are not vmap/grad-aware)."""
    return (x.device.type == "cpu" and _settings["cpu_linear"] in FUSED_PATHS
            and not torch._C._are_functorch_transforms_active())


def _fused_applies(x: torch.Tensor) -> bool:
    return x.dtype == torch.float32 and x.dim() >= 2 and fast_ops_apply(x)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
           relu: bool = False) -> torch.Tensor:
    """x [..., in], weight [out, in], bias [out] -> x W^T + b [..., out], ReLU'd when `relu`."""
    return linear_stack(x, [(weight, bias, relu)])


def linear_stack(x: torch.Tensor, layers: Sequence[tuple[torch.Tensor, torch.Tensor | None, bool]]
                 ) -> torch.Tensor:
    """x [..., in] through dense layers (weight, bias, relu) in turn: the same values as calling
    `linear` layer by layer (and the same bits), as one autograd node on the fused paths."""
    if not _fused_applies(x):
        for weight, bias, relu in layers:
            x = torch_linear(x, weight, bias, relu)
        return x
    flat = [t for weight, bias, _ in layers for t in (weight, bias)]
    relus = tuple(relu for _, _, relu in layers)
    if x.dim() == 2:
        return _DenseStack.apply(x, relus, *flat)
    lead = x.shape[:-1]
    out = _DenseStack.apply(x.reshape(-1, x.shape[-1]), relus, *flat)
    return out.reshape(*lead, out.shape[-1])


# ------------------------------------------------------------------------------ embedding lookup
class _Lookup(torch.autograd.Function):
    """Embedding lookup whose backward is one `index_add_` in row order: the same bits as
    F.embedding's dense backward (which, past 3,000 indices, sorts and runs several times
    slower on the CPU). tests/test_models.py checks the bits."""

    @staticmethod
    def forward(ctx, table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(index)
        ctx.num_rows = table.shape[0]
        return F.embedding(index, table)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (index,) = ctx.saved_tensors
        dim = grad.shape[-1]
        grad_table = grad.new_zeros(ctx.num_rows, dim)
        grad_table.index_add_(0, index.reshape(-1), grad.reshape(-1, dim))
        return grad_table, None


def lookup(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """table [V, E], index [...] -> [..., E]: an embedding lookup (dense gradient). Plain
    F.embedding off the fast path (on a GPU torch's sort-based deterministic backward beats the
    deterministic `index_add_`)."""
    if fast_ops_apply(table):
        return _Lookup.apply(table, index)
    return F.embedding(index, table)


# ------------------------------------------------------------------------------------ gate mix
class _Mix(torch.autograd.Function):
    """sum_n weights[b, n] * choices_n[b, :], with the numbers of einsum("bn,bnd->bd") over the
    stacked choices (a batched [1, n] @ [n, d] matmul) at a fraction of its cost on the CPU, where
    that bmm of tiny matrices is slow, and without stacking the choices in the forward. The
    forward product and the gradients of the choices have no sum of more than n terms taken in a
    different order, so elementwise ops give the bmm's bits; the gradient of `weights` (a length-d
    dot per entry) keeps the bmm. tests/test_models.py checks the bits."""

    @staticmethod
    def forward(ctx, weights: torch.Tensor, *choices: torch.Tensor) -> torch.Tensor:
        # weights [B, n], choices n x [B, d] -> [B, d]
        ctx.save_for_backward(weights, *choices)
        return _mix_sum(weights, choices)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        weights, *choices = ctx.saved_tensors
        grad_weights = None
        if ctx.needs_input_grad[0]:
            stacked = torch.stack(choices, dim=1)  # [B, n, d]
            grad_weights = torch.bmm(grad.unsqueeze(1), stacked.transpose(1, 2)).squeeze(1)
        grad_choices = [weights[:, i:i + 1] * grad if ctx.needs_input_grad[1 + i] else None
                        for i in range(len(choices))]  # n x [B, d]
        return grad_weights, *grad_choices


@cache
def _mix_matches_einsum(n: int, d: int, dtype: torch.dtype) -> bool:
    """Whether this CPU's einsum sums n products of width d in the elementwise order `_Mix` uses,
    checked once per (n, d, dtype) on a probe. It did for n = 2..5 on the AMD EPYC the committed
    runs were made on; on this session's Intel Xeon einsum's bmm reorders the sum for n >= 4
    (measured), so there `mix` keeps einsum for those n: a result never depends on the fast path."""
    g = torch.Generator().manual_seed(n * 1009 + d)
    weights = torch.softmax(torch.randn(16, n, generator=g), -1).to(dtype)
    choices = torch.randn(16, n, d, generator=g).to(dtype)
    with torch.no_grad():
        return torch.equal(_mix_sum(weights, choices.unbind(1)),
                           torch.einsum("bn,bnd->bd", weights, choices))


def _mix_sum(weights: torch.Tensor, choices: Sequence[torch.Tensor]) -> torch.Tensor:
    out = weights[:, :1] * choices[0]
    for i in range(1, len(choices)):
        out = out + weights[:, i:i + 1] * choices[i]  # the order of a sum over dim 1
    return out


def mix(weights: torch.Tensor, choices: Sequence[torch.Tensor]) -> torch.Tensor:
    """weights [B, n], choices n x [B, d] -> [B, d]: the gate's weighted sum of its choices."""
    if fast_ops_apply(weights) and _mix_matches_einsum(len(choices), choices[0].shape[-1],
                                                       weights.dtype):
        return _Mix.apply(weights, *choices)
    return torch.einsum("bn,bnd->bd", weights, torch.stack(list(choices), dim=1))


# ------------------------------------------------------------------------------------ L2 term
def squares_l2(weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """sum ||W||^2 / 2 over `weights`."""
    return torch.stack([w.pow(2).sum() for w in weights]).sum() / 2


def l2_value(reg_emb: float, reg_dnn: float, tables: Sequence[torch.Tensor],
             weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """reg_emb * sum ||T||^2 / 2 + reg_dnn * sum ||W||^2 / 2, term by term in a fixed order."""
    terms = []
    if reg_emb:
        terms.append(reg_emb * torch.stack([t.pow(2).sum() / 2 for t in tables]).sum())
    if reg_dnn:
        terms.append(reg_dnn * squares_l2(weights))
    return torch.stack(terms).sum()


class _L2Penalty(torch.autograd.Function):
    """The L2 term as one autograd node: forward = `l2_value` (the same ops), backward = the
    gradient the chain of those ops gives, g * reg * T per tensor (the halving and the doubling
    are exact), as one node instead of ~4 per tensor. tests/test_models.py checks the bits of
    value and gradients against the op-by-op graph."""

    @staticmethod
    def forward(ctx, reg_emb: float, reg_dnn: float, n_tables: int, *tensors: torch.Tensor
                ) -> torch.Tensor:
        ctx.save_for_backward(*tensors)
        ctx.regs, ctx.n_tables = (reg_emb, reg_dnn), n_tables
        return l2_value(reg_emb, reg_dnn, tensors[:n_tables], tensors[n_tables:])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        tensors = ctx.saved_tensors
        reg_emb, reg_dnn = ctx.regs
        scales = (grad * reg_emb, grad * reg_dnn)  # [] each, as MulBackward computes them
        grads = [t * scales[0 if i < ctx.n_tables else 1] for i, t in enumerate(tensors)]
        return None, None, None, *grads


def l2_penalty(reg_emb: float, reg_dnn: float, tables: Sequence[torch.Tensor],
               weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """`l2_value` (reg_emb or reg_dnn must be non-zero): one autograd node on the fast path, the
    op chain elsewhere (the same numbers)."""
    first = (list(tables) or list(weights))[0]
    if fast_ops_apply(first):
        return _L2Penalty.apply(reg_emb, reg_dnn, len(tables), *tables, *weights)
    return l2_value(reg_emb, reg_dnn, tables, weights)


@contextmanager
def portable_ops() -> Iterator[None]:
    """Plain torch ops (every Function here steps aside) inside the block, e.g. for a backward
    pass that is itself differentiated (second-order MAML)."""
    before = _settings["cpu_linear"]
    _settings["cpu_linear"] = "torch"
    try:
        yield
    finally:
        _settings["cpu_linear"] = before
