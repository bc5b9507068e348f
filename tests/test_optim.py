"""LeanAdam is torch's fused Adam, bit for bit: parameters, moments and step counters after many
steps (with parameters that skip steps, as Sparse Sharing's per-task steps do), and its state_dict
is torch's (checkpoints and resumes do not see the difference)."""

from __future__ import annotations

import pytest
import torch
from conftest import device_under_test

from mtlrec.train.optim import LeanAdam


def _params(seed: int) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    shapes = [(64, 33), (64,), (7, 5), (1,), (300, 4)]
    return [torch.nn.Parameter(torch.randn(*s, generator=gen).to(device_under_test()))
            for s in shapes]


def _run(optimizer_cls, steps: int = 25, **kwargs) -> tuple[list[torch.Tensor], dict]:
    params = _params(0)
    optimizer = optimizer_cls(params, lr=3e-3, **kwargs)
    gen = torch.Generator().manual_seed(1)
    for step in range(steps):
        optimizer.zero_grad(set_to_none=True)
        for i, p in enumerate(params):
            if (step + i) % 4 != 3:  # some parameters sit some steps out (grad None)
                p.grad = torch.randn(p.shape, generator=gen).to(p.device)
        optimizer.step()
    return [p.detach().clone() for p in params], optimizer.state_dict()


def _assert_same(a: tuple[list[torch.Tensor], dict], b: tuple[list[torch.Tensor], dict]) -> None:
    for x, y in zip(a[0], b[0], strict=True):
        assert torch.equal(x, y)
    assert a[1]["param_groups"] == b[1]["param_groups"]
    assert a[1]["state"].keys() == b[1]["state"].keys()
    for key, state in a[1]["state"].items():
        for name, value in state.items():
            assert torch.equal(value, b[1]["state"][key][name]), (key, name)


@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_lean_adam_gives_the_bits_of_torch_fused_adam(weight_decay):
    _assert_same(_run(LeanAdam, weight_decay=weight_decay),
                 _run(torch.optim.Adam, fused=True, weight_decay=weight_decay))


def test_lean_adam_takes_the_direct_call_after_the_first_step(monkeypatch):
    calls = []
    torch_step = torch.optim.Adam.step

    def counting_step(self, closure=None):
        calls.append("torch")
        return torch_step(self, closure)

    monkeypatch.setattr(torch.optim.Adam, "step", counting_step)
    _run(LeanAdam, steps=6)
    # torch's step only where a parameter gets its first gradient (its state is created there):
    # step 0 (all but parameter 3) and step 1 (parameter 3); steps 2-5 are direct calls
    assert calls == ["torch", "torch"]


def test_lean_adam_resumes_from_torch_adam_state_and_back():
    params = _params(0)
    for p in params:
        p.grad = torch.ones_like(p)
    reference = torch.optim.Adam(params, lr=1e-3, fused=True)
    reference.step()
    lean = LeanAdam(params, lr=1e-3)
    lean.load_state_dict(reference.state_dict())
    lean.step()
    back = torch.optim.Adam(params, lr=1e-3, fused=True)
    back.load_state_dict(lean.state_dict())
    assert all(float(s["step"]) == 2.0 for s in back.state.values())


def test_lean_adam_falls_back_where_the_direct_call_does_not_apply():
    """amsgrad and the unfused (foreach) path go through torch's own step: still torch's bits."""
    _assert_same(_run(LeanAdam, amsgrad=True), _run(torch.optim.Adam, fused=True, amsgrad=True))
    _assert_same(_run(LeanAdam, fused=False), _run(torch.optim.Adam, fused=False))
