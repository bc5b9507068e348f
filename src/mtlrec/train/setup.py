"""What every training command does first: threads, device, seed, and the seed's splits on it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mtlrec.data.splits import Splits, load_splits
from mtlrec.kernels import set_cpu_linear, set_flush_denormal
from mtlrec.provenance import resolve_device, set_seed, use_deterministic_kernels


def start_run(runtime: dict[str, Any], seed: int, data_dir: Path, tasks: list[str],
              split: dict[str, Any], drop_fields: list[str] = (),
              labels_dir: Path | None = None) -> tuple[Splits, torch.device]:
    """Set torch's threads, the CPU kernels (deterministic kernels on a GPU) and every RNG from
    `seed`, then load the seed's train/val/test split (protocol params `split`) of `tasks`
    (without the input fields `drop_fields`) onto the device of `runtime` (a model built right
    after starts from the seed's weights)."""
    torch.set_num_threads(runtime["num_threads"])
    set_cpu_linear(runtime["cpu_linear"])
    set_flush_denormal(runtime["flush_denormal"])
    device = resolve_device(runtime["device"])
    use_deterministic_kernels(device)
    set_seed(seed)
    splits = load_splits(data_dir, tasks, seed, split, drop_fields, labels_dir)
    for name in ("train", "val", "test"):
        setattr(splits, name, getattr(splits, name).to(device))
    return splits, device
