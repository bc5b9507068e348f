"""PMTRec's ranking side: the per-row pooling against Algorithm 1's dense formula, the sparse-row
gradients against full-table autograd, every pool of the registry on touched rows vs the full
table, the top-K metrics against a brute-force count, the readers, encoding and sampling."""

from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import REPO, kill_then_resume

from mtlrec.config import apply_overrides, validate
from mtlrec.errors import MtlrecError
from mtlrec.models.lightgcn import LightGCN
from mtlrec.models.mf import MF
from mtlrec.ranking.data import CSR, RankingData, encode_interactions, k_core, load_ranking
from mtlrec.ranking.loop import task_gradients, train_step
from mtlrec.ranking.metrics import ITEM_BLOCK, rank_metrics, top_items
from mtlrec.ranking.readers import InteractionTables, Relation, read_user_files
from mtlrec.ranking.tasks import BPR, DirectAU, LinkBPR, RankBatch, RatingMSE
from mtlrec.train.pooling import POOLS, PMTRecPool, build_pool

MIRROR = Path(os.environ.get("MTLREC_DATA_MIRROR", REPO.parent / "shared" / "data"))
SECTION = {"reader": "interactions", "min_core": 0, "max_users": None,
           "split": {"train": 0.6, "val": 0.2, "seed": None}, "tasks": {}}


# ------------------------------------------------------------------------------ fixtures
def _toy_tables(seed: int = 0, users: int = 40, items: int = 60, n: int = 700
                ) -> InteractionTables:
    rng = np.random.default_rng(seed)
    inter = pd.DataFrame({"user": rng.integers(1, users + 1, n) * 3,  # gaps in the raw ids
                          "item": rng.integers(1, items + 1, n) + 1000,
                          "rating": rng.integers(1, 6, n).astype(np.float32)})
    trust = pd.DataFrame({"a": rng.integers(1, users + 1, 150) * 3,
                          "b": rng.integers(1, users + 1, 150) * 3})
    cats = pd.DataFrame({"a": np.arange(1, items + 1) + 1000, "b": rng.integers(0, 5, items)})
    return InteractionTables(inter, {"trust": Relation("user", "links", trust),
                                     "category": Relation("item", "groups", cats)})


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> RankingData:
    out = tmp_path_factory.mktemp("toy")
    encode_interactions("toy", SECTION, _toy_tables(), out)
    return load_ranking(out, SECTION["split"], 3, ["trust", "category"])


def _tasks() -> list:
    return [BPR(), LinkBPR("trust"), LinkBPR("category")]


def _batch(data: RankingData, size: int = 64, seed: int = 0) -> RankBatch:
    idx = torch.randperm(len(data.train_user), generator=torch.Generator().manual_seed(seed))
    idx = idx[:size]
    return RankBatch(data.train_user[idx], data.train_item[idx], data.train_rating[idx])


# --------------------------------------------------------------- PMTRec vs Algorithm 1
def algorithm1_dense(grads: torch.Tensor, alpha: float, tau: float, epoch: int,
                     mask_absent: bool = False) -> torch.Tensor:
    """Algorithm 1 written out row by row over the whole table, loops and all."""
    tasks, rows, _ = grads.shape
    out = torch.zeros(grads.shape[1:], dtype=torch.float64)
    for r in range(rows):
        norms = [float(grads[t, r].double().norm()) for t in range(tasks)]
        norms[0] *= alpha ** epoch
        logits = [n / tau for n in norms]
        if mask_absent:
            logits = [lg if n > 0 else -math.inf for lg, n in zip(logits, norms, strict=True)]
            if all(n == 0 for n in norms):
                logits = [0.0] * tasks
        top = max(logits)
        exps = [math.exp(lg - top) if lg > -math.inf else 0.0 for lg in logits]
        for t in range(tasks):
            out[r] += exps[t] / sum(exps) * grads[t, r].double()
    return out


def _sparse_grads(seed: int = 0) -> torch.Tensor:
    """G [3, 12, 4] where tasks touch different rows (zero rows = untouched)."""
    g = torch.randn(3, 12, 4, generator=torch.Generator().manual_seed(seed)) * 0.01
    g[1, [0, 1, 2, 7]] = 0  # task 1 did not touch these rows
    g[2, [0, 3, 7]] = 0
    g[0, [5, 7]] = 0  # the main task neither; row 7 no task at all
    return g


@pytest.mark.parametrize("mask_absent", [False, True])
def test_pmtrec_touched_rows_equal_algorithm1_over_the_table(mask_absent):
    g = _sparse_grads()
    pool = PMTRecPool(alpha=1.1, tau=0.003, mask_absent=mask_absent)
    dense = algorithm1_dense(g, 1.1, 0.003, epoch=4, mask_absent=mask_absent)
    touched = torch.nonzero(g.abs().sum((0, 2)) > 0).flatten()  # what the loop passes
    sparse = torch.zeros_like(g[0])
    sparse[touched] = pool.pool(g[:, touched], epoch=4)
    torch.testing.assert_close(sparse.double(), dense, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(pool.pool(g, 4).double(), dense, rtol=1e-5, atol=1e-9)


def test_pmtrec_untouched_task_keeps_exp0_weight_unless_masked():
    g = _sparse_grads()
    n0 = float(g[0, 1].norm()) * 1.1 ** 2 / 0.003  # row 1: only the main task and task 2
    n2 = float(g[2, 1].norm()) / 0.003
    literal = PMTRecPool(1.1, 0.003).weights(g, epoch=2)[:, 1]
    z = math.exp(n0) + math.exp(0.0) + math.exp(n2)
    assert literal.tolist() == pytest.approx([math.exp(n0) / z, 1 / z, math.exp(n2) / z])
    masked = PMTRecPool(1.1, 0.003, mask_absent=True).weights(g, epoch=2)[:, 1]
    assert float(masked[1]) == 0.0
    assert float(masked.sum()) == pytest.approx(1.0)


def test_pmtrec_limits_uniform_and_argmax():
    g = _sparse_grads()
    touched = g[:, :7]
    uniform = PMTRecPool(alpha=1.0, tau=1e9).pool(touched, 1)
    torch.testing.assert_close(uniform, touched.sum(0) / 3)
    hard = PMTRecPool(alpha=1.0, tau=1e-9).weights(touched, 1)
    assert torch.equal(hard.argmax(0), touched.norm(dim=-1).argmax(0))


def test_task_focusing_grows_with_the_epoch():
    g = _sparse_grads()[:, 8:]
    early = PMTRecPool(1.2, 0.01).weights(g, epoch=1)[0]
    late = PMTRecPool(1.2, 0.01).weights(g, epoch=30)[0]
    assert bool((late > early).all())


# ------------------------------------------------- the loop's gradients vs full-table autograd
def _full_table_grads(model, tasks, samples) -> torch.Tensor:
    weight = model.weight.detach().clone().requires_grad_(True)
    out = model(weight)
    grads = []
    for task, sample in zip(tasks, samples, strict=True):
        loss = task.loss({n: out[i] for n, i in sample.rows.items()}, sample)
        grads.append(torch.autograd.grad(loss, weight, retain_graph=True)[0])
    return torch.stack(grads)  # [T, N, d]


class _Recorder:
    """An optimiser stand-in that keeps the gradient it was asked to step on."""

    def __init__(self, model):
        self.model = model

    def step(self):
        self.grad = self.model.weight.grad.clone()


@pytest.mark.parametrize("encoder", ["mf", "lightgcn"])
def test_step_gradient_equals_algorithm1_on_full_table_autograd(toy, encoder):
    torch.manual_seed(0)
    model = MF(toy, 8) if encoder == "mf" else LightGCN(toy, 8, layers=2)
    tasks = _tasks()
    batch = _batch(toy)
    gen = torch.Generator().manual_seed(5)  # the step below draws the same samples
    samples = [t.sample(batch, toy, gen) for t in tasks]
    full = _full_table_grads(model, tasks, samples)  # [T, N, d]
    expected = algorithm1_dense(full, 1.08, 1e-3, epoch=3).float()
    recorder = _Recorder(model)
    pool = PMTRecPool(1.08, 1e-3)
    train_step(model, tasks, pool, batch, toy, recorder, torch.Generator().manual_seed(5), 3)
    torch.testing.assert_close(recorder.grad, expected, rtol=1e-4, atol=1e-8)
    if encoder == "mf":  # cost: only the rows the batch touched carry a gradient
        rows, grads, _ = task_gradients(model, tasks, samples, per_task=True)
        assert grads.shape[1] == len(rows) < toy.rows
        torch.testing.assert_close(grads, full[:, rows])


@pytest.mark.parametrize("name", sorted(POOLS))
def test_every_pool_gives_the_same_step_on_touched_rows_as_on_the_table(toy, name,
                                                                       monkeypatch):
    if name == "graddrop":  # one uniform draw per coordinate: fix them so both sizes agree
        import torchjd.aggregation._graddrop as graddrop

        constant = torch.full
        monkeypatch.setattr(graddrop.torch, "rand", lambda shape, dtype=None, device=None,
                            generator=None: constant(shape, 0.37, dtype=dtype or torch.float32))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    model = MF(toy, 8)
    tasks = _tasks()
    samples = [t.sample(_batch(toy), toy, torch.Generator().manual_seed(1)) for t in tasks]
    rows, grads, _ = task_gradients(model, tasks, samples, per_task=True)
    full = _full_table_grads(model, tasks, samples)
    results = []
    for g in (grads, full):
        torch.manual_seed(3)  # random pools (RLW, PCGrad's order) draw the same numbers
        pool = build_pool(name, len(tasks), params["pools"].get(name, {}))
        results.append(pool.pool(g, 2))
    assert torch.isfinite(results[0]).all()
    torch.testing.assert_close(results[0], results[1][rows], rtol=1e-4, atol=1e-7)
    rest = torch.ones(toy.rows, dtype=torch.bool)
    rest[rows] = False
    assert float(results[1][rest].abs().max()) == 0.0


def test_ew_is_the_gradient_of_the_summed_loss(toy):
    model = MF(toy, 8)
    tasks = _tasks()
    samples = [t.sample(_batch(toy), toy, torch.Generator().manual_seed(1)) for t in tasks]
    _, per_task, _ = task_gradients(model, tasks, samples, per_task=True)
    _, summed, _ = task_gradients(model, tasks, samples, per_task=False)
    torch.testing.assert_close(build_pool("ew", 3, {}).pool(summed, 1), per_task.sum(0))


# --------------------------------------------------------------------------- metrics
def brute_force(user_emb, item_emb, truth: dict[int, set], train: dict[int, set], k: int):
    recall = ndcg = hr = 0.0
    users = [u for u in sorted(truth) if truth[u]]
    for u in users:
        scores = [(float(user_emb[u] @ item_emb[i]), i) for i in range(len(item_emb))
                  if i not in train.get(u, set())]
        ranked = [i for _, i in sorted(scores, key=lambda s: -s[0])][:k]
        hits = [1.0 if i in truth[u] else 0.0 for i in ranked]
        recall += sum(hits) / len(truth[u])
        dcg = sum(h / math.log2(p + 2) for p, h in enumerate(hits))
        idcg = sum(1 / math.log2(p + 2) for p in range(min(len(truth[u]), k)))
        ndcg += dcg / idcg
        hr += 1.0 if sum(hits) > 0 else 0.0
    return recall / len(users), ndcg / len(users), hr / len(users)


def _csr(pairs: dict[int, set], rows: int) -> CSR:
    r = np.array([u for u in pairs for _ in pairs[u]], dtype=np.int64)
    c = np.array([i for u in pairs for i in sorted(pairs[u])], dtype=np.int64)
    return CSR.build(r, c, rows)


@pytest.mark.parametrize("two_step_min_items", [10**9, 1], ids=["one-topk", "two-step"])
def test_rank_metrics_equal_brute_force(two_step_min_items):
    rng = np.random.default_rng(0)
    users, items = 23, 41
    user_emb = torch.from_numpy(rng.normal(size=(users, 5))).float()
    item_emb = torch.from_numpy(rng.normal(size=(items, 5))).float()
    train = {u: set(rng.choice(items, rng.integers(0, 8), replace=False).tolist())
             for u in range(users)}
    truth = {u: set(rng.choice([i for i in range(items) if i not in train[u]],
                               rng.integers(0, 5), replace=False).tolist()) for u in range(users)}
    got = rank_metrics(user_emb, item_emb, _csr(truth, users), [_csr(train, users)],
                       [1, 5, 10, 40], batch_users=4, two_step_min_items=two_step_min_items)
    for k in (1, 5, 10, 40):
        recall, ndcg, hr = brute_force(user_emb, item_emb, truth, train, k)
        assert got[f"recall@{k}"] == pytest.approx(recall, abs=1e-12)
        assert got[f"ndcg@{k}"] == pytest.approx(ndcg, abs=1e-12)
        assert got[f"hr@{k}"] == pytest.approx(hr, abs=1e-12)
    assert got["users"] == sum(1 for u in truth if truth[u])


@pytest.mark.parametrize("item_block", [1, 4, 128])
def test_two_step_top_items_equal_one_topk(item_block):
    """The K best blocks hold the K best items: the same ids, in the same order, as one top K
    over every item (distinct scores; padding and excluded items at -inf)."""
    gen = torch.Generator().manual_seed(3)
    items, users, k = 1_000, 7, 40
    padded = -(-items // item_block) * item_block
    item_major = torch.full((padded, users), float("-inf"))
    item_major[:items] = torch.randn(items, users, generator=gen)
    item_major[torch.randperm(items, generator=gen)[:300], 2] = float("-inf")  # excluded
    got = top_items(item_major, k, item_block)
    want = torch.topk(item_major.t()[:, :items], k, dim=1)
    assert torch.equal(got, want.indices)


def test_two_step_rank_metrics_equal_one_topk_on_a_large_catalogue():
    """Both paths of rank_metrics give the same floats where the two-step top K prunes (here
    ~80 blocks of 128 items against K = 40), batches with a short last one."""
    gen = torch.Generator().manual_seed(5)
    users, items = 150, 80 * ITEM_BLOCK - 17
    user_emb = torch.randn(users, 16, generator=gen)
    item_emb = torch.randn(items, 16, generator=gen)
    rows = torch.arange(users).repeat_interleave(12).numpy()
    cols = torch.randint(0, items, (len(rows),), generator=gen).numpy()
    train = CSR.build(rows[::2], cols[::2], users)
    truth = CSR.build(rows[1::2], cols[1::2], users)
    ks = [5, 20, 40]
    one = rank_metrics(user_emb, item_emb, truth, [train], ks, 64, two_step_min_items=10**9)
    two = rank_metrics(user_emb, item_emb, truth, [train], ks, 64, two_step_min_items=1)
    assert one == two
    assert one["recall@40"] > 0  # the case has hits to find


# ---------------------------------------------------------------------- data, sampling
def test_encoding_dedups_maps_ids_and_relations(tmp_path):
    tables = _toy_tables()
    schema = encode_interactions("toy", SECTION, tables, tmp_path)
    frame = pd.read_parquet(tmp_path / "interactions.parquet")
    assert len(frame) == len(tables.interactions.drop_duplicates(["user", "item"]))
    assert frame["user"].max() + 1 == schema["users"] == frame["user"].nunique()
    assert frame["item"].max() + 1 == schema["items"] == frame["item"].nunique()
    links = pd.read_parquet(tmp_path / "relations" / "trust.parquet")
    assert (links["a"] != links["b"]).all() and links["b"].max() < schema["users"]
    assert not links.duplicated().any()


def test_k_core_leaves_no_rare_user_or_item():
    frame = _toy_tables(n=400).interactions.drop_duplicates(["user", "item"])
    core = k_core(frame, 5)
    assert (core["user"].value_counts() >= 5).all() and (core["item"].value_counts() >= 5).all()


def test_split_is_60_20_20_disjoint_and_seeded(toy, tmp_path):
    total = toy.schema["interactions"]
    assert len(toy.train_user) == round(0.6 * total)
    assert int(toy.val.indptr[-1]) == round(0.2 * total)
    encode_interactions("toy", SECTION, _toy_tables(), tmp_path)
    again = load_ranking(tmp_path, SECTION["split"], 3, [])
    other = load_ranking(tmp_path, SECTION["split"], 4, [])
    assert torch.equal(again.train_keys, toy.train_keys)
    assert not torch.equal(other.train_keys, toy.train_keys)
    val_keys = set()
    for u in range(toy.users):
        for i in toy.val.indices[toy.val.indptr[u]:toy.val.indptr[u + 1]].tolist():
            val_keys.add(u * toy.items + i)
    assert not val_keys & set(toy.train_keys.tolist())


def test_samplers_draw_valid_partners_and_negatives(toy):
    batch = _batch(toy, 200)
    gen = torch.Generator().manual_seed(0)
    bpr = BPR().sample(batch, toy, gen)
    neg = bpr.rows["neg"] - toy.users
    assert not toy.is_train_pair(batch.users, neg).any()
    trust = LinkBPR("trust").sample(batch, toy, gen)
    rel = toy.relations["trust"]
    for a, p in zip(trust.rows["anchor"].tolist(), trust.rows["partner"].tolist(), strict=True):
        assert p in rel.forward.indices[rel.forward.indptr[a]:rel.forward.indptr[a + 1]].tolist()
    cat = LinkBPR("category").sample(batch, toy, gen)
    groups = toy.relations["category"].forward
    for a, p in zip(cat.rows["anchor"].tolist(), cat.rows["partner"].tolist(), strict=True):
        ga = set(groups.indices[groups.indptr[a - toy.users]:groups.indptr[a - toy.users + 1]]
                 .tolist())
        gp = set(groups.indices[groups.indptr[p - toy.users]:groups.indptr[p - toy.users + 1]]
                 .tolist())
        assert a != p and ga & gp


def test_directau_and_rating_losses_are_finite_and_differentiable(toy):
    model = MF(toy, 8)
    tasks = [BPR(), DirectAU(gamma=1.0), RatingMSE("unit")]
    samples = [t.sample(_batch(toy), toy, torch.Generator().manual_seed(0)) for t in tasks]
    _, grads, losses = task_gradients(model, tasks, samples, per_task=True)
    assert torch.isfinite(losses).all() and bool((grads.flatten(1).norm(dim=1) > 0).all())
    assert float(samples[2].extra["rating"].max()) <= 1.0


def test_user_files_reader_on_a_tiny_amazon_style_file(tmp_path):
    (tmp_path / "interactions.csv").write_text("user,item,rating\n1,10,5\n2,10,4\n2,11,3\n"
                                               "3,12,1\n")
    (tmp_path / "also_viewed.csv").write_text("a,b\n10,11\n11,12\n")
    section = {**SECTION, "relations": {"also_viewed": {"side": "item", "kind": "links"}}}
    tables = read_user_files("videogames", section, tmp_path)
    assert len(tables.interactions) == 4
    assert tables.relations["also_viewed"].side == "item"
    schema = encode_interactions("videogames", section, tables, tmp_path / "enc")
    assert schema["relations"]["also_viewed"]["rows"] == 2


def test_user_files_missing_file_and_column_are_one_line(tmp_path):
    from mtlrec.ranking.readers import fetch_user_files

    section = {**SECTION, "files": {"interactions": str(tmp_path / "nope.csv")},
               "source_hint": "Amazon 2018 Video_Games 5-core (McAuley et al.)"}
    with pytest.raises(MtlrecError, match=r"nope.csv not found\. Amazon 2018"):
        fetch_user_files("videogames", section, tmp_path / "raw")
    (tmp_path / "interactions.csv").write_text("uid,item\n1,2\n")
    with pytest.raises(MtlrecError, match=r"no column\(s\) \['user'\]"):
        read_user_files("videogames", SECTION, tmp_path)


@pytest.mark.skipif(not (MIRROR / "ciao" / "rating.mat").is_file(), reason="no Ciao mirror")
def test_tang_reader_on_real_ciao(tmp_path):
    from mtlrec.data.datasets import encode_dataset, fetch_dataset

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["datasets"]["ciao"]["mirror"] = str(MIRROR)
    fetch_dataset(params, "ciao", tmp_path / "raw")
    schema = encode_dataset(params, "ciao", tmp_path / "raw", tmp_path / "enc")
    # 284,086 ratings, 1,436 duplicate pairs (PROVENANCE.md); 7,375 users, 105,114 items
    assert schema["interactions"] == 284_086 - 1_436
    assert (schema["users"], schema["items"]) == (7_375, 105_114)
    assert schema["relations"]["trust"]["rows"] == 111_781
    assert schema["relations"]["category"]["groups"] == 28


# ---------------------------------------------------------------------------- params
def test_params_errors_name_the_key(base_params):
    bad = copy.deepcopy(base_params)
    bad["rank_methods"]["pmtrec"]["pool"] = "pmtrecc"
    with pytest.raises(MtlrecError, match="rank_methods.pmtrec.pool"):
        from mtlrec.config import check_cross_references

        validate(bad)
        check_cross_references(bad)
    with pytest.raises(MtlrecError, match="aux"):
        apply_overrides(base_params, ["rank_methods.plus_t2.aux=[3]"])
    with pytest.raises(MtlrecError, match="pools.pmtrec has no option 'beta'"):
        from mtlrec.ranking.run import resolve_rank_run

        resolve_rank_run(base_params, "pmtrec_ciao", "pmtrec-beta0.5")


def test_sweep_points_resolve_to_the_method_with_one_option(base_params):
    from mtlrec.ranking.run import resolve_rank_run

    spec = resolve_rank_run(base_params, "pmtrec_epinions", "pmtrec-tau1e-06")
    assert spec["pool_options"]["tau"] == 1e-06
    assert spec["tasks"] == ["bpr", "social", "category"]
    assert resolve_rank_run(base_params, "pmtrec_epinions", "plus_t2")["tasks"] == [
        "bpr", "category"]


def test_a_ranking_run_is_deterministic(tmp_path, base_params):
    from mtlrec.ranking.run import run_ranking

    data = tmp_path / "enc"
    encode_interactions("toy", SECTION, _toy_tables(), data)
    params = copy.deepcopy(base_params)
    params["datasets"]["toy"] = {**SECTION, "tasks": {
        "bpr": {"loss": "bpr"}, "social": {"loss": "link_bpr", "relation": "trust"},
        "category": {"loss": "link_bpr", "relation": "category"}}}
    params["experiments"]["toy"] = {"kind": "ranking", "dataset": "toy",
                                    "tasks": ["bpr", "social", "category"], "encoder": "mf",
                                    "metric": "recall@20"}
    params["rank_train"].update(epochs=3, patience=2, batch_size=64)
    params["display"]["progress"] = False
    first = run_ranking(params, "toy", "pmtrec", 5, data, tmp_path / "a")
    run_ranking(params, "toy", "pmtrec", 5, data, tmp_path / "b")
    assert (tmp_path / "a" / "metrics.json").read_bytes() == (
        tmp_path / "b" / "metrics.json").read_bytes()
    assert first["epochs_run"] == 3 and set(first["test"]) >= {"recall@20", "ndcg@5", "hr@40"}
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["curves"][0]["epoch"] == 1


def test_an_interrupted_ranking_run_resumes_to_the_same_result_and_is_timed_whole(
        tmp_path, base_params, monkeypatch):
    """Killed during epoch 2, a rerun resumes after epoch 1: the same metrics.json bytes as a
    straight run, and timing.json adds the killed process's seconds (kept in resume.pt)."""
    import mtlrec.ranking.loop as loop
    from mtlrec.ranking.run import run_ranking

    data = tmp_path / "enc"
    encode_interactions("toy", SECTION, _toy_tables(), data)
    params = copy.deepcopy(base_params)
    params["datasets"]["toy"] = {**SECTION, "tasks": {
        "bpr": {"loss": "bpr"}, "social": {"loss": "link_bpr", "relation": "trust"}}}
    params["experiments"]["toy"] = {"kind": "ranking", "dataset": "toy",
                                    "tasks": ["bpr", "social"], "encoder": "mf",
                                    "metric": "recall@20"}
    params["rank_train"].update(epochs=3, patience=3, batch_size=64)
    params["display"]["progress"] = False
    run_ranking(params, "toy", "pmtrec", 5, data, tmp_path / "straight")
    out = tmp_path / "resumed"
    killed = kill_then_resume(  # train_step(model, tasks, pool, batch, data, optimizer, gen, epoch)
        monkeypatch, loop, "train_step", -1, 2,
        lambda: run_ranking(params, "toy", "pmtrec", 5, data, out),
        out / "resume.pt", carried_seconds=500.0)
    assert killed["epoch"] == 1
    straight = (tmp_path / "straight" / "metrics.json").read_bytes()
    assert (out / "metrics.json").read_bytes() == straight
    timing = json.loads((out / "timing.json").read_text())
    assert 500.0 < timing["wall_time_s"] < 500.0 + 300 and timing["epochs"] == 3


def test_amazon_example_overlay_validates_and_plans_its_stages(base_params):
    from mtlrec.config import check_cross_references, deep_merge
    from mtlrec.workflow import stages

    overlay = yaml.safe_load((REPO / "examples" / "amazon_videogames.yaml").read_text())
    params = deep_merge(base_params, overlay)
    validate(params)
    check_cross_references(params)
    names = [stage.name for stage in stages(params)]
    assert names[:2] == ["fetch-videogames", "encode-videogames"]
    assert "rank-pmtrec_videogames-pmtrec" in names and "rank_table2-pmtrec_videogames" in names


def test_a_pool_option_is_tracked_by_the_runs_that_use_it_only(base_params):
    from mtlrec.workflow import rank_keys

    pmtrec = rank_keys(base_params, "pmtrec_ciao", "pmtrec")
    ew = rank_keys(base_params, "pmtrec_ciao", "ew")
    assert "pools.pmtrec" in pmtrec and "pools.pmtrec" not in ew
    assert "rank_train.seeds" not in pmtrec  # adding a seed reruns no other seed
    assert "datasets.ciao.tasks.social" in pmtrec
    assert "datasets.ciao.tasks.social" not in rank_keys(base_params, "pmtrec_ciao", "plus_t2")


def test_a_table_candidate_must_be_one_of_its_methods(base_params):
    with pytest.raises(MtlrecError, match="candidate 'pmtrec' is none of its methods"):
        apply_overrides(base_params, ["report.pmtrec_ciao.rank_table2.methods=[ew, rlw]"])
    apply_overrides(base_params, ["report.pmtrec_ciao.rank_table2.methods=[ew, rlw]",
                                  "report.pmtrec_ciao.rank_table2.candidate=null"])
