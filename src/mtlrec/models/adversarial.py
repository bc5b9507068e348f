"""Gradient reversal (Ganin & Lempitsky, "Unsupervised Domain Adaptation by Backpropagation",
ICML 2015) and the DANN schedule of its coefficient."""

from __future__ import annotations

import math

import torch


class _ReverseGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: float) -> torch.Tensor:
        ctx.alpha = alpha
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.alpha * grad, None


def reverse_gradient(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """Identity in the forward pass; multiplies the gradient by -alpha in the backward pass."""
    return _ReverseGrad.apply(x, alpha)


def dann_alpha(progress: float) -> float:
    """alpha = 2 / (1 + exp(-10 p)) - 1 for training progress p in [0, 1] (DANN, eq. 14)."""
    return 2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0


def schedule_progress(kind: str, epoch: int, step: int, steps_per_epoch: int, epochs: int,
                      batch_size: int) -> float:
    """Training progress p for the GRL schedule.

    - `dann`: p = global step / total steps, rising once from 0 to 1 (the paper's reference, DANN).
    - `official`: the MPT-Rec code's p = (step + (epoch - 1) * batch_size) / (epochs * batch_size),
      which uses the batch size where DANN uses the number of batches, so alpha rises and falls back
      every epoch (docs/spec/mptrec.md section 1.3, bug #1).
    """
    if kind == "dann":
        return ((epoch - 1) * steps_per_epoch + step) / (epochs * steps_per_epoch)
    if kind == "official":
        return (step + (epoch - 1) * batch_size) / (epochs * batch_size)
    raise ValueError(f"unknown alpha schedule '{kind}'")
