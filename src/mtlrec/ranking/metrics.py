"""Full-ranking top-K metrics (PMTRec section 4.1.3): for every user with held-out items, all items
are scored, the user's training items (and, when asked, other excluded items) removed, and the
top K compared with the held-out items. Recall@K = hits / |held-out|, NDCG@K = DCG / ideal DCG
(binary gains, log2 discounts, the ideal over min(|held-out|, K) items), HR@K = 1 if any hit;
each averaged over the users. Batched over users (scores [B, I], one top-k per batch).
"""

from __future__ import annotations

import torch

from mtlrec.ranking.data import CSR

METRIC_NAMES = ("recall", "ndcg", "hr")


def parse_metric(name: str) -> tuple[str, int]:
    """'recall@20' -> ('recall', 20)."""
    kind, _, k = name.partition("@")
    if kind not in METRIC_NAMES or not k.isdigit() or int(k) < 1:
        from mtlrec.errors import MtlrecError

        raise MtlrecError(f"unknown ranking metric '{name}' (kinds {list(METRIC_NAMES)}, "
                          "written like recall@20)")
    return kind, int(k)


def _rows_of(csr: CSR, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(position in `users`, column) of every entry of those users' rows."""
    start, end = csr.indptr[users], csr.indptr[users + 1]
    counts = end - start
    pos = torch.repeat_interleave(torch.arange(len(users)), counts)
    offsets = torch.arange(int(counts.sum())) - torch.repeat_interleave(
        torch.cumsum(counts, 0) - counts, counts)
    return pos, csr.indices[torch.repeat_interleave(start, counts) + offsets]


@torch.no_grad()
def rank_metrics(user_emb: torch.Tensor, item_emb: torch.Tensor, truth: CSR,
                 exclude: list[CSR], ks: list[int], batch_users: int = 256
                 ) -> dict[str, float]:
    """{'recall@K', 'ndcg@K', 'hr@K', 'users'} over the users with items in `truth`.

    user_emb [U, d], item_emb [I, d]; `exclude`: CSRs whose items are removed from each user's
    ranking (the training items)."""
    users = torch.nonzero(truth.degree() > 0).flatten()
    k_max = max(ks)
    discount = 1.0 / torch.log2(torch.arange(2, k_max + 2, dtype=torch.float64))  # [K]
    ideal = torch.cumsum(discount, 0)  # ideal DCG with n relevant items at n - 1
    totals = {f"{m}@{k}": torch.zeros((), dtype=torch.float64) for m in METRIC_NAMES for k in ks}
    item_emb_t = item_emb.t().contiguous()
    # one score buffer and one relevance mask for all batches: a fresh [B, I] tensor per batch
    # costs page faults that took a third of the time on Epinions (I = 296k)
    buffer = item_emb.new_empty(min(batch_users, max(len(users), 1)), item_emb.shape[0])
    mask = torch.zeros(buffer.shape, dtype=torch.bool)
    for start in range(0, len(users), batch_users):
        batch = users[start:start + batch_users]
        scores = torch.matmul(user_emb[batch], item_emb_t, out=buffer[:len(batch)])  # [B, I]
        for csr in exclude:
            pos, cols = _rows_of(csr, batch)
            scores[pos, cols] = float("-inf")
        top = torch.topk(scores, min(k_max, scores.shape[1]), dim=1).indices  # [B, K]
        relevant = mask[:len(batch)]
        pos, cols = _rows_of(truth, batch)
        relevant[pos, cols] = True
        hits = relevant.gather(1, top).double()  # [B, K]
        relevant[pos, cols] = False
        n_true = truth.degree()[batch].double()  # [B]
        for k in ks:
            h = hits[:, :k]
            totals[f"recall@{k}"] += (h.sum(1) / n_true).sum()
            dcg = (h * discount[:h.shape[1]]).sum(1)
            idcg = ideal[(n_true.clamp(max=k) - 1).long()]
            totals[f"ndcg@{k}"] += (dcg / idcg).sum()
            totals[f"hr@{k}"] += (h.sum(1) > 0).double().sum()
    n = max(len(users), 1)
    result = {name: float(value / n) for name, value in totals.items()}
    result["users"] = len(users)
    return result
