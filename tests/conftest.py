"""Shared fixtures: real Census data (a small head of the bundled raw files) and tiny params."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import torch
import yaml

from mtlrec.data.encode import encode_census
from mtlrec.data.sources import fetch
from mtlrec.provenance import use_deterministic_kernels

REPO = Path(__file__).resolve().parents[1]


def device_under_test() -> torch.device:
    """Tests run on $MTLREC_TEST_DEVICE (default cpu), so the suite runs unchanged on a GPU."""
    return torch.device(os.environ.get("MTLREC_TEST_DEVICE", "cpu"))


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
    params["train"].update(seeds=[7], epochs=2, patience=2, progress=False, batch_size=256)
    params["runtime"]["device"] = str(device_under_test())
    return params


@pytest.fixture(scope="session")
def raw_census(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("raw") / "census"
    fetch("census", out)
    return out


@pytest.fixture(scope="session")
def encoded_census(tmp_path_factory, raw_census) -> Path:
    out = tmp_path_factory.mktemp("encoded") / "census"
    encode_census(raw_census, out, "train", max_train_rows=3000, max_test_rows=2000)
    return out
