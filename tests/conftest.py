"""Shared fixtures: real Census data (a small head of the bundled raw files) and tiny params."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import torch
import yaml

from mtlrec.data.datasets import declared_tasks, encode_dataset, write_task_labels
from mtlrec.data.sources import fetch
from mtlrec.data.splits import default_labels_dir
from mtlrec.provenance import use_deterministic_kernels

REPO = Path(__file__).resolve().parents[1]


def device_under_test() -> torch.device:
    """Tests run on $MTLREC_TEST_DEVICE (default cpu), so the suite runs unchanged on a GPU."""
    return torch.device(os.environ.get("MTLREC_TEST_DEVICE", "cpu"))


def kill_then_resume(monkeypatch, module, name: str, epoch_arg: int, kill_at_epoch: int, run,
                     resume: Path, carried_seconds: float) -> dict:
    """Run `run()` as a process killed in epoch `kill_at_epoch` (module.name, a per-epoch or
    per-batch function whose positional argument `epoch_arg` is the epoch, raises
    KeyboardInterrupt there), set the resume file's elapsed seconds to `carried_seconds` (as if
    the killed process had run that long), then run again to the end. Returns the killed
    process's saved loop state."""
    real = getattr(module, name)

    def killed(*args):
        if args[epoch_arg] == kill_at_epoch:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(module, name, killed)
    with pytest.raises(KeyboardInterrupt):
        run()
    monkeypatch.setattr(module, name, real)
    saved = torch.load(resume, weights_only=True)
    killed_state = dict(saved["state"])
    saved["state"]["seconds"] = carried_seconds
    torch.save(saved, resume)
    run()
    return killed_state


@pytest.fixture(scope="session", autouse=True)
def deterministic_gpu_kernels() -> None:
    """On a GPU the suite runs with the kernels a training run uses there (deterministic ones)."""
    use_deterministic_kernels(device_under_test())


@pytest.fixture(scope="session")
def base_params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


@pytest.fixture
def tiny_params(base_params) -> dict:
    params = copy.deepcopy(base_params)
    params["train"].update(seeds=[7], epochs=2, patience=2, batch_size=256)
    params["display"]["progress"] = False
    params["runtime"]["device"] = str(device_under_test())
    return params


def encode_census(raw: Path, out: Path, fit_on: str, max_train_rows: int | None,
                  max_test_rows: int | None, labels: bool = True) -> dict:
    """The Census dataset of params.yaml encoded with these options (a head of the files), and
    the labels of its declared tasks in the pipeline's layout (`default_labels_dir(out)`)."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["datasets"]["census"].update(fit_encoders_on=fit_on, max_train_rows=max_train_rows,
                                        max_test_rows=max_test_rows)
    for task in declared_tasks(params["datasets"]["census"]) if labels else []:
        write_task_labels(params, "census", task, raw, default_labels_dir(out) / task)
    return encode_dataset(params, "census", raw, out)


SPLIT = {"val_fraction": 0.5}  # the Census split protocol of params.yaml


@pytest.fixture(scope="session")
def raw_census(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("raw") / "census"
    fetch("census", out)
    return out


@pytest.fixture(scope="session")
def encoded_census(tmp_path_factory, raw_census) -> Path:
    out = tmp_path_factory.mktemp("root") / "data" / "encoded" / "census"
    encode_census(raw_census, out, "train", max_train_rows=3000, max_test_rows=2000)
    return out
