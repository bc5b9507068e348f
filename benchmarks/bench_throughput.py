"""Training and inference throughput on the real Census data, as ratios against references measured
in the same run (absolute numbers on shared machines drift; ratios do not).

References:
- ceiling: the fp32 GFLOP/s of a 1024 x 1024 matmul, taken through both kernels torch has on the
  CPU (torch.mm = MKL's sgemm, and oneDNN's matmul, which `runtime.cpu_linear: onednn` uses; MKL
  runs its AVX2 path on AMD processors); the higher of the two is the machine's fp32 ceiling, and
  divided by the FLOPs of one training sample (torch.utils.flop_counter: forward + backward) it
  is the samples/second a perfect implementation would reach;
- torch-rechub 0.9.0 (optional: `make install-bench`): its MMOE/PLE with the same sizes (its MMOE
  for the MPT-Rec row), fed once by our index batching ("model only"), once through its
  TorchDataset + DataLoader with a plain loop ("library path"), and once trained as the library
  trains it: its `MTLTrainer.train_one_epoch` on that DataLoader, with the same L2 terms as ours
  ("trainer", the reference docs/spec/toolchain.md and the speed issue quote).
Our side runs each model through its gradient combiner (`train_step`), as the training loop
does, once per dense-layer kernel setting in `--kernels` (the default `auto` resolves to onednn
on AVX-512 CPUs and to blas elsewhere, printed in the header;
torch = F.linear, the code before it).

`--device cuda` times the same models on a GPU (data on the GPU, synchronised timers; the ceiling
is a fp32 torch.mm there, TF32 off); torch-rechub and the kernel settings are CPU-only columns.

Usage: python benchmarks/bench_throughput.py [--threads N] [--repeats 2] [--steps 150]
       [--kernels onednn,blas,torch] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from mtlrec.config import load_params
from mtlrec.data.batches import TensorSplit
from mtlrec.data.datasets import encode_dataset, write_task_labels
from mtlrec.data.sources import fetch
from mtlrec.data.splits import default_labels_dir, load_splits
from mtlrec.kernels import cpu_linear, resolve_cpu_linear, set_cpu_linear
from mtlrec.models import build_model
from mtlrec.models.layers import Batch, FeatureSpec, StepInfo
from mtlrec.train.loop import make_optimizer, prepare_training, train_step
from mtlrec.train.objectives import BinaryCrossEntropy

REPO = Path(__file__).resolve().parents[1]
BCE = BinaryCrossEntropy()
MODELS = ("mmoe", "ple", "mptrec")
RECHUB_REFERENCE = {"mmoe": "mmoe", "ple": "ple", "mptrec": "mmoe"}  # rechub has no MPT-Rec
BATCHES = (256, 2048)


def census_splits(workdir: Path):
    raw, encoded = workdir / "raw", workdir / "data" / "encoded" / "census"
    fetch("census", raw)
    params = load_params([REPO / "params.yaml"])
    encode_dataset(params, "census", raw, encoded)
    for task in ("income", "marital"):  # the labels stage, in the pipeline's layout
        write_task_labels(params, "census", task, raw, default_labels_dir(encoded) / task)
    return load_splits(encoded, ["income", "marital"], 1, {"val_fraction": 0.5})


def synchronize() -> None:
    """Wait for queued GPU work (a no-op on the CPU), so a timer measures finished work."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def time_it(fn: Callable[[], int], repeats: int) -> float:
    """Best-of-`repeats` samples/second of fn (which returns how many samples it processed)."""
    fn()  # warm-up
    rates = []
    for _ in range(repeats):
        synchronize()
        start = time.perf_counter()
        n = fn()
        synchronize()
        rates.append(n / (time.perf_counter() - start))
    return max(rates)


def ours_train_fn(model, data: TensorSplit, batch: int, steps: int) -> Callable[[], int]:
    """Our training path: the model's gradient combiner with the loop's optimizer (as
    mtlrec.train.loop runs it)."""
    optimizer = make_optimizer(model, 1e-3, data.labels.device)
    n = len(data)
    prepare_training(model, n)
    per_epoch = n // batch

    def run() -> int:
        model.train()
        for step in range(steps):
            start = (step * batch) % (n - batch)
            idx = slice(start, start + batch)
            piece = Batch(data.dense[idx], data.sparse[idx], data.labels[idx], data.row_id[idx])
            train_step(model, piece, StepInfo(1 + step // per_epoch, step % per_epoch,
                                              per_epoch, 30, batch), BCE, optimizer)
        return steps * batch

    return run


def train_fn(model, data: TensorSplit, batch: int, steps: int, loss_of) -> Callable[[], int]:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    n = len(data)

    def run() -> int:
        model.train()
        for step in range(steps):
            start = (step * batch) % (n - batch)
            idx = slice(start, start + batch)
            loss = loss_of(model, data, idx)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return steps * batch

    return run


def infer_fn(forward, data: TensorSplit, batch: int) -> Callable[[], int]:
    @torch.no_grad()
    def run() -> int:
        for start in range(0, len(data), batch):
            forward(slice(start, start + batch))
        return len(data)

    return run


def counted_flops(fn: Callable[[], object]) -> float:
    """FLOPs of fn() by torch.utils.flop_counter, run on torch's own linear (the counter has no
    formula for oneDNN's op; both kernels do the same products); the kernel setting is restored."""
    previous = cpu_linear()
    set_cpu_linear("torch")
    try:
        with FlopCounterMode(display=False) as counter:
            fn()
    finally:
        set_cpu_linear(previous)
    return counter.get_total_flops()


def flops_per_training_sample(model, data: TensorSplit, batch: int) -> float:
    idx = slice(0, batch)
    prepare_training(model, len(data))
    piece = Batch(data.dense[idx], data.sparse[idx], data.labels[idx], data.row_id[idx])
    flops = counted_flops(
        lambda: model.training_losses(piece, StepInfo(1, 0, 1, 1, batch), BCE).total.backward())
    model.zero_grad(set_to_none=True)
    return flops / batch


def matmul_gflops(repeats: int, size: int = 1024, iters: int = 40,
                  kernel: str = "torch", device: str = "cpu") -> float:
    """fp32 GFLOP/s of a size x size matmul through torch.mm (kernel='torch': MKL on the CPU,
    cuBLAS on a GPU) or oneDNN."""
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    if kernel == "onednn":
        def product():  # a @ b.T through oneDNN, as mtlrec.kernels runs it
            return torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "")
    else:
        def product():
            return a @ b

    def run() -> int:
        for _ in range(iters):
            product()
        return iters

    per_second = time_it(run, repeats)
    return per_second * 2 * size**3 / 1e9


def fp32_ceiling(repeats: int, device: str = "cpu") -> tuple[float, dict[str, float]]:
    """(the machine's fp32 matmul GFLOP/s = the best kernel's, {kernel: GFLOP/s})."""
    if device != "cpu":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 products, as the models run them
        return (gflops := matmul_gflops(repeats, size=8192, device=device)), {"cublas": gflops}
    measured = {"mkl": matmul_gflops(repeats)}
    if torch.backends.mkldnn.is_available():
        measured["onednn"] = matmul_gflops(repeats, kernel="onednn")
    return max(measured.values()), measured


def rechub(name: str, schema: dict, params: dict):
    """torch-rechub's model with the same sizes, and a function from our tensors to its dict."""
    from torch_rechub.basic.features import DenseFeature, SparseFeature
    from torch_rechub.models.multi_task import MMOE, PLE

    cfg = params["models"][name]
    features = [DenseFeature(n) for n in schema["dense"]] + [
        SparseFeature(f["name"], f["vocab_size"], embed_dim=cfg["embed_dim"])
        for f in schema["sparse"]
    ]
    towers = [{"dims": cfg["tower_hidden"]}] * 2
    if name == "mmoe":
        model = MMOE(features, ["classification"] * 2, cfg["num_experts"],
                     {"dims": cfg["expert_hidden"]}, towers)
    else:
        model = PLE(features, ["classification"] * 2, cfg["num_levels"],
                    cfg["num_specific_experts"], cfg["num_shared_experts"],
                    {"dims": cfg["expert_hidden"]}, towers)
    names = schema["dense"] + [f["name"] for f in schema["sparse"]]

    def as_dict(data: TensorSplit, idx) -> dict[str, torch.Tensor]:
        columns = torch.cat([data.dense[idx], data.sparse[idx].float()], dim=1)
        return {n: columns[:, i] for i, n in enumerate(names)}

    return model, as_dict


def rechub_loader(data: TensorSplit, names, batch: int, n: int) -> torch.utils.data.DataLoader:
    """torch-rechub's input path over the first n rows: its TorchDataset of per-feature arrays,
    a DataLoader with the default collate, in row order."""
    from torch_rechub.utils.data import TorchDataset

    x = {name: torch.cat([data.dense, data.sparse.float()], 1)[:n, i].numpy()
         for i, name in enumerate(names)}
    return torch.utils.data.DataLoader(TorchDataset(x, data.labels[:n].numpy()),
                                       batch_size=batch, shuffle=False)


def rechub_trainer_path(model, data: TensorSplit, names, batch: int, steps: int, cfg: dict):
    """As the library trains it: `MTLTrainer.train_one_epoch` (per-task losses, its L2 term with
    our coefficients, Adam without weight decay as ours, its progress bar) on its DataLoader."""
    from torch_rechub.trainers import MTLTrainer

    n = steps * batch
    loader = rechub_loader(data, names, batch, n)
    trainer = MTLTrainer(model, ["classification"] * 2,
                         optimizer_params={"lr": 1e-3, "weight_decay": 0.0},
                         regularization_params={"embedding_l2": cfg["reg_emb"],
                                                "dense_l2": cfg["reg_dnn"]})

    def run() -> int:
        sink = io.StringIO()  # its progress bar and loss print, kept off the table
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            trainer.train_one_epoch(loader)
        return n

    return run


def rechub_library_path(model, data: TensorSplit, names, batch: int, steps: int):
    """Its usual input path: TorchDataset of per-feature arrays + DataLoader + default collate."""
    n = steps * batch
    loader = rechub_loader(data, names, batch, n)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def run() -> int:
        model.train()
        for features, labels in loader:
            loss = F.binary_cross_entropy(model(features), labels.float())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return n

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--steps", type=int, default=150, help="training steps per measurement")
    parser.add_argument("--kernels", default="onednn,blas,torch",
                        help="comma-separated runtime.cpu_linear settings to measure ours with")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    args = parser.parse_args()
    on_gpu = args.device != "cpu"
    kernel_settings = ["default"] if on_gpu else args.kernels.split(",")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    params = load_params([REPO / "params.yaml"])
    with tempfile.TemporaryDirectory() as tmp:
        splits = census_splits(Path(tmp))
    train, test = splits.train.to(args.device), splits.test.to(args.device)
    try:
        import torch_rechub  # noqa: F401

        have_rechub = not on_gpu
    except ImportError:
        have_rechub = False
        print("torch-rechub not installed (make install-bench): its columns are skipped")

    gflops, by_kernel = fp32_ceiling(args.repeats, args.device)
    where = torch.cuda.get_device_name(args.device) if on_gpu else "cpu"
    print(f"device {where}; threads {args.threads}; fp32 matmul ceiling {gflops:.1f} GFLOP/s ("
          + ", ".join(f"{k} {v:.1f}" for k, v in by_kernel.items())
          + f"); train rows {len(train)}, inference rows {len(test)}; "
          f"cpu_linear auto -> {resolve_cpu_linear('auto')} (CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()})")
    print(f"{'model':7} {'kernels':7} {'batch':>5} {'MFLOP/sample':>12} {'train/s':>9} "
          f"{'ceiling/s':>9} {'ours/ceil':>9} {'infer/s':>9}")
    features = FeatureSpec.from_schema(splits.schema)
    for name in MODELS:
        for batch in BATCHES:
            steps = max(20, args.steps * 256 // batch)
            ours_by_kernels = {}
            for kernels in kernel_settings:
                if not on_gpu:
                    set_cpu_linear(kernels)
                torch.manual_seed(0)
                model = build_model(name, features, 2, params["models"][name]).to(args.device)
                flops = flops_per_training_sample(model, train, batch)
                ceiling = gflops * 1e9 / flops
                ours = time_it(ours_train_fn(model, train, batch, steps), args.repeats)
                ours_by_kernels[kernels] = ours
                model.eval()
                infer = time_it(infer_fn(lambda i, m=model: m(test.dense[i], test.sparse[i]),
                                         test, batch), args.repeats)
                print(f"{name:7} {kernels:7} {batch:5d} {flops / 1e6:12.3f} {ours:9.0f} "
                      f"{ceiling:9.0f} {ours / ceiling:9.2f} {infer:9.0f}", flush=True)
            if have_rechub:
                rh_model, as_dict = rechub(RECHUB_REFERENCE[name], splits.schema, params)

                def rh_loss(m, data, idx, as_dict=as_dict):
                    return F.binary_cross_entropy(m(as_dict(data, idx)), data.labels[idx])

                rh = time_it(train_fn(rh_model, train, batch, steps, rh_loss), args.repeats)
                names = splits.schema["dense"] + [f["name"] for f in splits.schema["sparse"]]
                rh_lib = time_it(rechub_library_path(rh_model, train, names, batch, steps),
                                 args.repeats)
                rh_cfg = params["models"][RECHUB_REFERENCE[name]]
                rh_trainer = time_it(rechub_trainer_path(rh_model, train, names, batch, steps,
                                                         rh_cfg), args.repeats)
                print(f"{name:7} {'rechub':7} {batch:5d}  model only {rh:.0f}/s, library path "
                      f"{rh_lib:.0f}/s, trainer {rh_trainer:.0f}/s; ours/rechub: " + ", ".join(
                          f"{k} {v / rh:.2f}x / {v / rh_lib:.2f}x / {v / rh_trainer:.2f}x"
                          for k, v in ours_by_kernels.items()), flush=True)
            if len(ours_by_kernels) > 1:
                first, *others = kernel_settings
                print(f"{name:7} {'ratio':7} {batch:5d}  " + ", ".join(
                    f"{first}/{k} {ours_by_kernels[first] / ours_by_kernels[k]:.2f}x"
                    for k in others), flush=True)
    print(f"(best of {args.repeats} repeats each, after one warm-up; ours/ceil against the higher "
          "ceiling; the rechub rows of mptrec are rechub's MMOE, which has no MPT-Rec)")


if __name__ == "__main__":
    main()
