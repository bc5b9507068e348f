"""Adam with torch's fused kernel, called without the bookkeeping of `torch.optim.Adam.step`.

`torch.optim.Adam(fused=True).step` spends more time in Python (finding the parameters with
gradients, lazily creating state, grouping tensors by device and dtype, checking hooks) than in
its one fused kernel at this project's sizes (~280k parameters: the bookkeeping is ~0.1 ms of a
~4 ms step). `LeanAdam` is the same optimizer (same class hierarchy, constructor, state and
state_dict, so checkpoints and resumes are unchanged) whose `step` makes, once every parameter with
a gradient has its state, exactly the calls torch's fused path makes: `_foreach_add_` on the step
counters, then `_fused_adam_` with the same arguments and tensor order. The result is bit for bit
torch's (tests/test_optim.py checks it over many steps, with parameters that skip steps). Anything
else (the first step, a closure, amsgrad, a tensor lr, parameters on several devices or dtypes,
a parameter without state) goes through `torch.optim.Adam.step` as it is.
"""

from __future__ import annotations

import torch


class LeanAdam(torch.optim.Adam):
    """torch.optim.Adam(fused=True) with a direct call of the fused kernel (see the module doc)."""

    def __init__(self, params, lr: float = 1e-3, **kwargs) -> None:
        kwargs.setdefault("fused", True)
        super().__init__(params, lr=lr, **kwargs)

    def _fast_groups(self) -> list[tuple[dict, list[torch.Tensor]]] | None:
        """[(group, parameters with gradients)] when every group can take the direct call."""
        groups = []
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if (not group["fused"] or group["amsgrad"] or group["maximize"]
                    or group["differentiable"] or group["capturable"]
                    or group["decoupled_weight_decay"] or isinstance(group["lr"], torch.Tensor)
                    or any(p not in self.state for p in params)):
                return None
            if params:
                first = params[0]
                if any(p.device != first.device or p.dtype != first.dtype or p.grad.is_sparse
                       for p in params):
                    return None
            groups.append((group, params))
        return groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        """torch's zero_grad; `set_to_none` (the loop's call) as a plain loop."""
        if not set_to_none:
            super().zero_grad(set_to_none=False)
            return
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None

    def step(self, closure=None):  # noqa: D401 - torch's signature
        groups = self._fast_groups() if closure is None else None
        if groups is None:
            return super().step(closure)
        with torch.no_grad():
            for group, params in groups:
                if not params:
                    continue
                states = [self.state[p] for p in params]
                steps = [s["step"] for s in states]
                beta1, beta2 = group["betas"]
                torch._foreach_add_(steps, 1)
                torch._fused_adam_(
                    params, [p.grad for p in params], [s["exp_avg"] for s in states],
                    [s["exp_avg_sq"] for s in states], [], steps, amsgrad=False,
                    lr=group["lr"], beta1=beta1, beta2=beta2,
                    weight_decay=group["weight_decay"], eps=group["eps"], maximize=False,
                    grad_scale=None, found_inf=None)
        return None
