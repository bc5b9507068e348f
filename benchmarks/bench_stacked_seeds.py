"""Would training the seeds of one model together, as one stacked model, be faster? A measurement
for the speed issue, not a training path: the pipeline still trains one seed per run.

S copies of a model (one per seed) are stacked with torch.func.stack_module_state and trained on the
same batches (the official loaders never shuffle, so every seed sees the same rows in the same
order) through vmap(functional_call(...)): one batched matmul per layer instead of S small ones.
Printed: samples/s per seed of S solo models stepped one after another vs the stacked model, the
speed-up, and the largest difference between a stacked seed's loss after the steps and its solo run
(batched matmuls sum in another order, so the two are close, not bit-identical). The stacked path
uses plain-op versions of layers.lookup, layers.mix, the L2 term and the dense layers (their
autograd Functions have no vmap rule), so it runs torch's batched matmul (MKL) while the solo models
run the pipeline's default dense-layer kernels (oneDNN on the CPU).

Usage: python benchmarks/bench_stacked_seeds.py [--model mmoe] [--seeds 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import torch
from bench_throughput import census_splits  # the same Census splits as the throughput bench
from torch.func import functional_call, stack_module_state, vmap

from mtlrec.config import load_params
from mtlrec.kernels import set_cpu_linear
from mtlrec.models import build_model, layers
from mtlrec.models.layers import FeatureSpec, multitask_bce

REPO = Path(__file__).resolve().parents[1]


class LossOf(torch.nn.Module):
    """forward(dense, sparse, labels) -> the model's BCE + L2 loss (what functional_call calls)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, dense, sparse, labels):
        return multitask_bce(self.model(dense, sparse), labels) + self.model.l2_penalty()


class PlainL2:
    """The L2 term through its plain ops (`layers.l2_value`), in place of its autograd node."""

    @staticmethod
    def apply(reg_emb: float, reg_dnn: float, n_tables: int, *tensors: torch.Tensor):
        return layers.l2_value(reg_emb, reg_dnn, tensors[:n_tables], tensors[n_tables:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mmoe", choices=["shared_bottom", "mmoe", "ple"])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    params = load_params([REPO / "params.yaml"])
    with tempfile.TemporaryDirectory() as tmp:
        splits = census_splits(Path(tmp))
    train, spec = splits.train, FeatureSpec.from_schema(splits.schema)
    solos = []
    for seed in range(args.seeds):
        torch.manual_seed(seed)
        solos.append(LossOf(build_model(args.model, spec, 2, params["models"][args.model])))
    stacked_models = copy.deepcopy(solos)
    batches = [slice(i * args.batch, (i + 1) * args.batch) for i in range(args.steps)]

    def run_solo() -> list[float]:
        optimizers = [torch.optim.Adam(m.parameters(), lr=1e-3, fused=True) for m in solos]
        losses = []
        for model, optimizer in zip(solos, optimizers, strict=True):
            for idx in batches:
                loss = model(train.dense[idx], train.sparse[idx], train.labels[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            losses.append(float(loss.detach()))
        return losses

    weights, buffers = stack_module_state(stacked_models)  # each [S, ...], leaves
    base = copy.deepcopy(stacked_models[0]).to("meta")

    def one(w, b, dense, sparse, labels):
        return functional_call(base, (w, b), (dense, sparse, labels))

    batched = vmap(one, in_dims=(0, 0, None, None, None))

    def run_stacked() -> list[float]:
        # our custom autograd Functions have no vmap rule: plain-op versions for this path
        layers.lookup = lambda table, index: torch.nn.functional.embedding(index, table)
        layers.mix = lambda weights, choices: (
            weights.unsqueeze(-1) * torch.stack(list(choices), dim=1)).sum(1)
        layers._L2Penalty = PlainL2
        set_cpu_linear("torch")  # linear and linear_stack as plain ops, which vmap can batch
        optimizer = torch.optim.Adam(list(weights.values()), lr=1e-3, fused=True)
        for idx in batches:
            losses = batched(weights, buffers, train.dense[idx], train.sparse[idx],
                             train.labels[idx])  # [S]
            optimizer.zero_grad(set_to_none=True)
            losses.sum().backward()  # seeds share no weight: each gets its own gradient
            optimizer.step()
        return losses.tolist()

    start = time.perf_counter()
    solo_losses = run_solo()
    solo_s = time.perf_counter() - start
    start = time.perf_counter()
    stacked_losses = run_stacked()
    stacked_s = time.perf_counter() - start
    samples = args.seeds * args.steps * args.batch
    gap = max(abs(a - b) for a, b in zip(solo_losses, stacked_losses, strict=True))
    print(f"{args.model}, {args.seeds} seeds, batch {args.batch}, {args.steps} steps, "
          f"{args.threads} thread(s)")
    print(f"solo one after another: {samples / solo_s:9.0f} samples/s")
    print(f"stacked (vmap):         {samples / stacked_s:9.0f} samples/s "
          f"({solo_s / stacked_s:.2f}x)")
    print(f"largest |loss difference| after {args.steps} steps: {gap:.2e}")


if __name__ == "__main__":
    main()
