"""PMTRec speed on the real Epinions data (or another ranking dataset), ratios in the same run.

1. Training: one epoch's batches (or the first --batches of it) of PMTRec against EW on the same
   batches, alternating, each --repeats times: ms per batch and the ratio (target <= 1.5x). The
   PMTRec step is split into its parts (sampling, per-task backward passes, the pooling itself,
   the Adam step) so the floor is visible.
2. Evaluation: full ranking of every test user (mtlrec.ranking.metrics.rank_metrics: the
   two-step top K on catalogues of 64k items or more) against its one-top-K path and the plain
   reference of the same sizes, a matmul into a reused buffer + one top-k over all items per
   user batch: users/s, the ratios, and whether both paths give the same metrics.

    python benchmarks/bench_pmtrec.py --dataset epinions [--mirror ../shared/data] [--eval-only]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import yaml

from mtlrec.data.datasets import encode_dataset, fetch_dataset
from mtlrec.models.mf import MF
from mtlrec.ranking.data import load_ranking
from mtlrec.ranking.loop import task_gradients, train_step
from mtlrec.ranking.metrics import rank_metrics
from mtlrec.ranking.tasks import RankBatch, build_task
from mtlrec.train.pooling import build_pool

REPO = Path(__file__).resolve().parents[1]


def _data(dataset: str, mirror: str | None, workdir: Path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    section = params["datasets"][dataset]
    if mirror:
        section["mirror"] = mirror
    fetch_dataset(params, dataset, workdir / "raw")
    encode_dataset(params, dataset, workdir / "raw", workdir / "enc")
    tasks = [build_task(dataset, t, d) for t, d in section["tasks"].items()
             if t in ("bpr", "social", "category", "directau", "rating")]
    relations = [t.relation for t in tasks if getattr(t, "relation", None)]
    data = load_ranking(workdir / "enc", section["split"], 1685480945, relations)
    return params, data, tasks


def _batches(data, size: int, count: int, seed: int = 0) -> list[RankBatch]:
    order = torch.randperm(len(data.train_user), generator=torch.Generator().manual_seed(seed))
    out = []
    for b in range(min(count, len(order) // size)):
        idx = order[b * size:(b + 1) * size]
        out.append(RankBatch(data.train_user[idx], data.train_item[idx], data.train_rating[idx]))
    return out


def _epoch_ms(data, tasks, pool, batches, lr: float, wd: float) -> float:
    torch.manual_seed(0)
    model = MF(data, 32)
    optimizer = torch.optim.Adam([model.weight], lr=lr, weight_decay=wd, fused=True)
    gen = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for batch in batches:
        train_step(model, tasks, pool, batch, data, optimizer, gen, 5)
    return (time.perf_counter() - start) / len(batches) * 1e3


def _parts_ms(data, tasks, pool, batches, lr: float, wd: float) -> dict[str, float]:
    """The PMTRec step taken apart (same work as train_step)."""
    model = MF(data, 32)
    optimizer = torch.optim.Adam([model.weight], lr=lr, weight_decay=wd, fused=True)
    gen = torch.Generator().manual_seed(0)
    parts = {"sample": 0.0, "losses+backward": 0.0, "pool": 0.0, "scatter+adam": 0.0}
    for batch in batches:
        t0 = time.perf_counter()
        samples = [t.sample(batch, data, gen) for t in tasks]
        t1 = time.perf_counter()
        rows, grads, _ = task_gradients(model, tasks, samples, pool.per_task)
        t2 = time.perf_counter()
        combined = pool.pool(grads, 5)
        t3 = time.perf_counter()
        if model.weight.grad is None:
            model.weight.grad = torch.zeros_like(model.weight)
        model.weight.grad.zero_()
        model.weight.grad.index_copy_(0, rows, combined)
        optimizer.step()
        t4 = time.perf_counter()
        for key, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            parts[key] += dt
    return {k: v / len(batches) * 1e3 for k, v in parts.items()}


def _plain_users_per_s(user_emb, item_emb, users: torch.Tensor, k: int, batch: int) -> float:
    """The plain full ranking: a matmul into one reused buffer + one top-k over all items."""
    item_t = item_emb.t().contiguous()
    buffer = item_emb.new_empty(batch, item_emb.shape[0])
    start = time.perf_counter()
    for s in range(0, len(users), batch):
        part = users[s:s + batch]
        scores = torch.matmul(user_emb[part], item_t, out=buffer[:len(part)])
        torch.topk(scores, k, dim=1)
    return len(users) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="epinions")
    parser.add_argument("--mirror", default=None)
    parser.add_argument("--batches", type=int, default=60, help="batches per timing")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--eval-only", action="store_true", help="skip the training timings")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        params, data, tasks = _data(args.dataset, args.mirror, Path(tmp))
    train = params["rank_train"]
    print(f"{args.dataset}: {data.users:,} users, {data.items:,} items, "
          f"{len(data.train_user):,} training interactions; tasks "
          f"{[type(t).__name__ for t in tasks]}; {args.threads} thread(s)")
    if not args.eval_only:
        batches = _batches(data, train["batch_size"], args.batches)
        pools = {"ew": build_pool("ew", len(tasks), {}),
                 "pmtrec": build_pool("pmtrec", len(tasks), params["pools"]["pmtrec"])}
        times: dict[str, list[float]] = {name: [] for name in pools}
        for _ in range(args.repeats):
            for name, pool in pools.items():
                times[name].append(_epoch_ms(data, tasks, pool, batches, train["lr"],
                                             train["weight_decay"]))
        ew, pm = statistics.median(times["ew"]), statistics.median(times["pmtrec"])
        n_batches = -(-len(data.train_user) // train["batch_size"])
        print(f"training, ms per batch of {train['batch_size']} (median of {args.repeats}): "
              f"EW {ew:.1f}, PMTRec {pm:.1f} -> PMTRec / EW = {pm / ew:.2f}x (target <= 1.5x); "
              f"an epoch ({n_batches} batches): EW {ew * n_batches / 1e3:.1f} s, PMTRec "
              f"{pm * n_batches / 1e3:.1f} s")
        parts = _parts_ms(data, tasks, pools["pmtrec"], batches, train["lr"], train["weight_decay"])
        print("PMTRec step parts, ms: " + ", ".join(f"{k} {v:.2f}" for k, v in parts.items()))
    torch.manual_seed(0)
    table = MF(data, 32).weight.detach()
    users_emb, items_emb = table[:data.users], table[data.users:]
    users = torch.nonzero(data.test.degree() > 0).flatten()
    k = max(train["ks"])
    batch = train["eval_batch_users"]
    timings: dict[str, list[float]] = {"two-step": [], "one top-k": [], "plain": []}
    results = {}
    for _ in range(args.repeats):
        for name, min_items in (("two-step", 1), ("one top-k", 10**12)):
            start = time.perf_counter()
            results[name] = rank_metrics(users_emb, items_emb, data.test, [data.train],
                                         train["ks"], batch, two_step_min_items=min_items)
            timings[name].append(len(users) / (time.perf_counter() - start))
        timings["plain"].append(_plain_users_per_s(users_emb, items_emb, users, k, batch))
    rate = {name: statistics.median(values) for name, values in timings.items()}
    print(f"full-ranking evaluation of {len(users):,} test users x {data.items:,} items "
          f"(batches of {batch}, median of {args.repeats}), users/s: two-step top-{k} "
          f"{rate['two-step']:,.0f}, one top-{k} {rate['one top-k']:,.0f}, plain matmul + "
          f"top-{k} {rate['plain']:,.0f} -> two-step / one top-k "
          f"{rate['two-step'] / rate['one top-k']:.2f}x, two-step / plain "
          f"{rate['two-step'] / rate['plain']:.2f}x; {len(users) / rate['two-step']:.1f} s per "
          f"evaluation; same metrics: {results['two-step'] == results['one top-k']}")


if __name__ == "__main__":
    main()
