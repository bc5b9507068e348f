"""Ranking tasks (PMTRec, Yang et al. 2024): the main BPR task and the auxiliary tasks, each a loss
computed from embedding rows of the batch. Registered by loss name in LOSSES; a dataset declares
its tasks (`datasets.<d>.tasks.<task>: {loss: ..., relation: ..., options}`) and an experiment
lists which of them it trains (the first is the main task).

Each task draws what it needs for a batch of training interactions (users [B], items [B]) as
named rows of the embedding table (users 0..U-1, items U..U+I-1), then its loss reads those rows'
embeddings. Choices the paper leaves open (docs/spec/pmtrec.md section 1.4; docs/deviations.md):

- `bpr`: -log sigmoid(e_u.e_i - e_u.e_j), one uniform negative j per positive, redrawn (up to
  `tries` times) while it is a training positive of u (the LightGCN convention).
- `link_bpr`: pairwise BPR on a relation: for every anchor of the batch (its users for a user-side
  relation, its items for an item-side one) one partner (a linked entity, or another member of
  one of its groups) and one uniform negative of the same side; anchors without a partner are
  left out.
- `directau`: DirectAU's alignment (positive pairs of L2-normalised embeddings) plus `gamma`
  times its uniformity (within the batch's distinct users and items).
- `rating_mse`: (e_u.e_i - r)^2 over the batch, r the rating divided by the dataset's maximum
  (`target: unit`, default) or as it is (`target: raw`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from mtlrec.errors import MtlrecError
from mtlrec.ranking.data import RankingData


@dataclass
class RankBatch:
    users: torch.Tensor  # [B] training interactions' users
    items: torch.Tensor  # [B] their items (0-based item ids)
    ratings: torch.Tensor  # [B]


@dataclass
class TaskSample:
    rows: dict[str, torch.Tensor]  # name -> global embedding-table rows [n]
    extra: dict[str, torch.Tensor] = field(default_factory=dict)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(-1)  # [n, d], [n, d] -> [n]


class BPR:
    """The main recommendation task."""

    name: ClassVar[str] = "bpr"
    relation: str | None = None

    def __init__(self, tries: int = 10) -> None:
        self.tries = tries

    def sample(self, batch: RankBatch, data: RankingData,
               generator: torch.Generator) -> TaskSample:
        users, items = batch.users, batch.items
        neg = torch.randint(data.items, users.shape, generator=generator)
        for _ in range(self.tries):
            clash = data.is_train_pair(users, neg)
            if not clash.any():
                break
            neg = torch.where(clash, torch.randint(data.items, users.shape, generator=generator),
                              neg)
        return TaskSample({"user": users, "pos": items + data.users, "neg": neg + data.users})

    def loss(self, emb: dict[str, torch.Tensor], sample: TaskSample) -> torch.Tensor:
        u = emb["user"]
        return F.softplus(_dot(u, emb["neg"]) - _dot(u, emb["pos"])).mean()


class LinkBPR:
    """Link prediction on a user-side or item-side relation (trust, category, co-view, ...)."""

    name: ClassVar[str] = "link_bpr"

    def __init__(self, relation: str) -> None:
        self.relation = relation

    def sample(self, batch: RankBatch, data: RankingData,
               generator: torch.Generator) -> TaskSample:
        rel = data.relations[self.relation]
        anchors = batch.users if rel.side == "user" else batch.items
        count = data.users if rel.side == "user" else data.items
        offset = 0 if rel.side == "user" else data.users
        partner, has = rel.forward.sample(anchors, generator)
        if rel.kind == "groups":  # another member of one of the anchor's groups
            partner, has_member = rel.members.sample(partner, generator)
            has &= has_member & (partner != anchors)
        anchors, partner = anchors[has], partner[has]
        neg = torch.randint(count, anchors.shape, generator=generator)
        return TaskSample({"anchor": anchors + offset, "partner": partner + offset,
                           "negative": neg + offset})

    def loss(self, emb: dict[str, torch.Tensor], sample: TaskSample) -> torch.Tensor:
        a = emb["anchor"]
        if a.shape[0] == 0:  # no anchor of the batch has a partner: a zero loss (zero gradient)
            return a.sum() * 0.0
        return F.softplus(_dot(a, emb["negative"]) - _dot(a, emb["partner"])).mean()


class DirectAU:
    """DirectAU (Wang et al. KDD 2022) as one auxiliary task."""

    name: ClassVar[str] = "directau"
    relation: str | None = None

    def __init__(self, gamma: float = 1.0) -> None:
        self.gamma = gamma

    def sample(self, batch: RankBatch, data: RankingData,
               generator: torch.Generator) -> TaskSample:
        users, items = batch.users, batch.items
        return TaskSample({"user": users, "item": items + data.users,
                           "users": torch.unique(users), "items": torch.unique(items) + data.users})

    @staticmethod
    def _uniformity(x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] < 2:
            return x.sum() * 0.0
        return torch.pdist(x, p=2).pow(2).mul(-2).exp().mean().log()

    def loss(self, emb: dict[str, torch.Tensor], sample: TaskSample) -> torch.Tensor:
        u, i = F.normalize(emb["user"], dim=-1), F.normalize(emb["item"], dim=-1)
        align = (u - i).norm(p=2, dim=1).pow(2).mean()
        uniform = (self._uniformity(F.normalize(emb["users"], dim=-1))
                   + self._uniformity(F.normalize(emb["items"], dim=-1))) / 2
        return align + self.gamma * uniform


class RatingMSE:
    """Rating regression on the batch's interactions (the paper's Office T2)."""

    name: ClassVar[str] = "rating_mse"
    relation: str | None = None

    def __init__(self, target: str = "unit") -> None:
        if target not in ("unit", "raw"):
            raise MtlrecError(f"rating_mse: target must be unit or raw, not '{target}'")
        self.target = target

    def sample(self, batch: RankBatch, data: RankingData,
               generator: torch.Generator) -> TaskSample:
        scale = data.max_rating if self.target == "unit" else 1.0
        return TaskSample({"user": batch.users, "item": batch.items + data.users},
                          {"rating": batch.ratings / scale})

    def loss(self, emb: dict[str, torch.Tensor], sample: TaskSample) -> torch.Tensor:
        return (_dot(emb["user"], emb["item"]) - sample.extra["rating"]).pow(2).mean()


LOSSES: dict[str, type] = {
    BPR.name: BPR,
    LinkBPR.name: LinkBPR,
    DirectAU.name: DirectAU,
    RatingMSE.name: RatingMSE,
}


def build_task(dataset: str, task: str, declaration: dict[str, Any]) -> Any:
    """A task object from its declaration `datasets.<dataset>.tasks.<task>`."""
    options = {k: v for k, v in declaration.items() if k != "loss"}
    loss = declaration["loss"]
    if loss not in LOSSES:
        raise MtlrecError(f"datasets.{dataset}.tasks.{task}.loss: unknown '{loss}' "
                          f"(known: {sorted(LOSSES)})")
    try:
        return LOSSES[loss](**options)
    except TypeError as exc:
        raise MtlrecError(f"datasets.{dataset}.tasks.{task}: {exc}") from None

