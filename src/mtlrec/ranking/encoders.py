"""Encoder registry of the ranking experiments (PMTRec): a new encoder is one file in
mtlrec/models plus one line here. Each takes (data: RankingData, **params.encoders.<name>)."""

from __future__ import annotations

from typing import Any

from mtlrec.errors import MtlrecError
from mtlrec.models.lightgcn import LightGCN
from mtlrec.models.mf import MF, RankingEncoder
from mtlrec.ranking.data import RankingData

ENCODERS: dict[str, type[RankingEncoder]] = {
    "mf": MF,
    "lightgcn": LightGCN,
}


def build_encoder(name: str, data: RankingData, hparams: dict[str, Any]) -> RankingEncoder:
    if name not in ENCODERS:
        raise MtlrecError(f"unknown encoder '{name}' (known: {sorted(ENCODERS)})")
    return ENCODERS[name](data, **hparams)
