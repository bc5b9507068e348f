"""Resume state that is only resumed by the run that saved it.

A resume file holds a `key`: the fingerprint of everything that decides the run (the params keys
its stage tracks, the seed, its input files, its code files). `load_checked` returns the payload
when the key matches (saying so), and otherwise deletes the file and says why, so a run never
continues the state of a run with other params, data or code.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import torch


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(params: dict[str, Any], keys: list[str], files: list[Path], stage: str,
                models: tuple[str, ...] = (), **fields: Any) -> str:
    """sha256 over the values of `keys`, the content of `files`, the source files the DAG tracks
    for `stage` (with `models`) and any other `fields` (seed, run name, ...)."""
    from mtlrec.workflow import REPO_ROOT, param_values, stage_code

    code = [REPO_ROOT / name for name in stage_code(stage, models)]
    payload = {
        **fields,
        "params": param_values(params, keys),
        "files": {f"{f.parent.name}/{f.name}": sha256_file(f) for f in files},
        "code": {str(f.relative_to(REPO_ROOT)): sha256_file(f) for f in code if f.is_file()},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def load_checked(path: Path, key: str | None, label: str) -> dict[str, Any] | None:
    """The payload saved at `path` if it carries `key`; else None, the file removed, with a note.
    Loaded with weights_only=True (plain types and tensors only)."""
    if not path.is_file():
        return None
    payload = torch.load(path, weights_only=True, map_location="cpu")
    if payload.get("key") != key:
        print(f"mtlrec: note: {path} was saved by a run with other params, data or code; "
              "starting over", file=sys.stderr)
        path.unlink()
        return None
    return payload


def save_state(path: Path, key: str | None, model: torch.nn.Module,
               optimizer: torch.optim.Optimizer, state: dict[str, Any],
               generator: torch.Generator) -> None:
    """A training loop's resume file: weights, optimiser, loop state (plain types and tensors),
    the batch-order generator and torch's global RNG, under the run's `key`."""
    from mtlrec.provenance import save_torch_atomic

    save_torch_atomic(path, {"key": key, "model": model.state_dict(),
                             "optimizer": optimizer.state_dict(), "state": state,
                             "generator": generator.get_state(),
                             "torch_rng": torch.get_rng_state()})


def restore_state(path: Path, key: str | None, label: str, model: torch.nn.Module,
                  optimizer: torch.optim.Optimizer, generator: torch.Generator
                  ) -> dict[str, Any] | None:
    """Load what `save_state` wrote for this run into model, optimiser and RNGs; return the loop
    state (None when there is no file or it was made for another run)."""
    payload = load_checked(path, key, label)
    if payload is None:
        return None
    print(f"mtlrec: {label or 'run'}: resuming after epoch {payload['state']['epoch']}",
          file=sys.stderr)
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    generator.set_state(payload["generator"])
    torch.set_rng_state(payload["torch_rng"])
    return payload["state"]
