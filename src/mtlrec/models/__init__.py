"""Model registry: a new model is one new file plus one line here.

Every model takes (features: FeatureSpec, num_tasks: int, **params.models.<name>) and returns
logits [B, num_tasks] from forward(dense, sparse). Tests iterate over MODELS.
"""

from __future__ import annotations

from typing import Any

from mtlrec.errors import MtlrecError
from mtlrec.models.csrec import CSRec
from mtlrec.models.layers import FeatureSpec, MultiTaskModel
from mtlrec.models.maml import MAML
from mtlrec.models.mmoe import MMOE
from mtlrec.models.mptrec import MPTRec
from mtlrec.models.ple import PLE
from mtlrec.models.shared_bottom import SharedBottom
from mtlrec.models.single_task import SingleTask
from mtlrec.models.sparse_sharing import SparseSharing
from mtlrec.models.stem import STEM

MODELS: dict[str, type[MultiTaskModel]] = {
    "single_task": SingleTask,
    "shared_bottom": SharedBottom,
    "mmoe": MMOE,
    "ple": PLE,
    "mptrec": MPTRec,
    "stem": STEM,
    "sparse_sharing": SparseSharing,
    "csrec": CSRec,
    "maml": MAML,
}


def build_model(name: str, features: FeatureSpec, num_tasks: int,
                hparams: dict[str, Any]) -> MultiTaskModel:
    """Instantiate the registered model `name` with its params section."""
    if name not in MODELS:
        raise MtlrecError(f"unknown model '{name}' (known: {sorted(MODELS)})")
    if num_tasks < MODELS[name].min_tasks:
        raise MtlrecError(f"{name} needs at least {MODELS[name].min_tasks} tasks, got {num_tasks}")
    try:
        return MODELS[name](features, num_tasks, **hparams)
    except TypeError as exc:
        raise MtlrecError(f"models.{name}: {exc}") from exc
