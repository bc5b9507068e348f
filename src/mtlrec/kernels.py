"""The dense layer's matrix products, with a faster CPU path than torch's default BLAS call.

On the CPU, torch runs fp32 `F.linear` and its backward through MKL's sgemm. On AMD processors MKL
takes its AVX2 code path (MKL does not use AVX-512 on non-Intel CPUs), half the speed that oneDNN,
which torch also ships, gets from the same core with AVX-512: on this project's 2-core AMD EPYC
(Zen 5) a 1-thread [256, 160] x [160, 256] product runs at ~110 GFLOP/s through MKL and ~220
through oneDNN (benchmarks/bench_throughput.py prints both ceilings).

`linear(x, weight, bias, relu)` is the one entry point every model layer uses. Which kernels it runs
is the `runtime.cpu_linear` param, set once per process with `set_cpu_linear`:
- `onednn` (default): forward and both backward products through oneDNN's fp32 matmul (the
  `mkldnn._linear_pointwise` op torch's own compiler uses), with the ReLU fused into the forward;
  the bias gradient is a column sum. Full fp32 (oneDNN's strict fp math: no bf16/tf32 shortcuts).
- `torch`: `F.linear` (+ `torch.relu`), torch's own path on every device.
On CUDA, or where torch has no oneDNN, both give `torch`. The two CPU paths compute the same
maths with a different summation order, so their results differ in the last bits (~1e-7
relative per product); each path is deterministic on a given machine and thread count. The
results committed in runs/ were made with `onednn` (see README, "Speed"). The oneDNN path is
first-order only: a method that differentiates through gradients (create_graph=True, e.g. MAML)
gets a clear error from it and runs with `runtime.cpu_linear: torch`.
"""

from __future__ import annotations

from functools import cache

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

CPU_LINEAR_CHOICES = ("onednn", "torch")
_settings = {"cpu_linear": "onednn"}


@cache  # asked on every layer call: look once per process
def onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def set_cpu_linear(name: str) -> None:
    """Pick the CPU kernels of `linear` for this process: 'onednn' or 'torch'."""
    if name not in CPU_LINEAR_CHOICES:
        raise ValueError(f"cpu_linear must be one of {CPU_LINEAR_CHOICES}, got {name!r}")
    _settings["cpu_linear"] = name


def cpu_linear() -> str:
    """The kernels `linear` runs on CPU tensors now ('torch' where oneDNN is missing)."""
    return _settings["cpu_linear"] if onednn_available() else "torch"


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
    (measured: a [256, 32] x [32, 1] product takes 2 us through MKL, 11 through oneDNN)."""
    if a.shape[0] * a.shape[1] * b.shape[0] >= ONEDNN_MIN_MACS:
        return torch.ops.mkldnn._linear_pointwise(a, b, bias, "relu" if relu else "none", [], "")
    return torch_linear(a, b, bias, relu)


class _OneDnnLinear(torch.autograd.Function):
    """y = x W^T + b (then ReLU when `relu`) with oneDNN products forward and backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                relu: bool) -> torch.Tensor:
        # x [B, in], weight [out, in], bias [out] -> [B, out]
        x, weight = x.contiguous(), weight.contiguous()
        out = _matmul_t(x, weight, bias, relu)
        ctx.save_for_backward(x, weight, out if relu else None)
        ctx.relu = relu
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, weight, out = ctx.saved_tensors
        grad = grad.contiguous()
        if ctx.relu:
            grad = torch.ops.aten.threshold_backward(grad, out, 0.0)  # torch's ReLU backward
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _matmul_t(grad, weight.t())  # [B, out] @ [out, in] -> [B, in]
        if ctx.needs_input_grad[1]:
            grad_w = _matmul_t(grad.t(), x.t())  # [out, B] @ [B, in] -> [out, in]
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum(0)  # [out]
        return grad_x, grad_w, grad_b, None


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
           relu: bool = False) -> torch.Tensor:
    """x [..., in], weight [out, in], bias [out] -> x W^T + b [..., out], ReLU'd when `relu`."""
    if (x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() >= 2
            and cpu_linear() == "onednn"):
        lead = x.shape[:-1]
        out = _OneDnnLinear.apply(x.reshape(-1, x.shape[-1]), weight, bias, relu)
        return out.reshape(*lead, weight.shape[0])
    return torch_linear(x, weight, bias, relu)
