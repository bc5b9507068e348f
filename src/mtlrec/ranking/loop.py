"""The ranking training loop (PMTRec Algorithm 1): per batch, every task's loss, each task's
gradient of the embedding table, a gradient pool (mtlrec.train.pooling) combining them, Adam with
weight decay; early stopping on the main task's validation metric (patience counted in
evaluations), best state restored, per-epoch curves, resumable per-epoch state.

The loop owns none of the seams: the encoder (mtlrec.models.mf / lightgcn) maps table rows to
embeddings, the tasks (mtlrec.ranking.tasks) draw their rows and give their losses, the pool
combines the per-task gradients, the metrics (mtlrec.ranking.metrics) score the ranking.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from mtlrec.errors import MtlrecError
from mtlrec.models.mf import RankingEncoder
from mtlrec.ranking.data import RankingData
from mtlrec.ranking.metrics import parse_metric, rank_metrics
from mtlrec.ranking.tasks import RankBatch, TaskSample
from mtlrec.train.resume import restore_state, save_state


@dataclass
class RankTrainConfig:
    batch_size: int
    epochs: int
    patience: int  # evaluations without improvement of the main metric before stopping
    lr: float
    weight_decay: float
    eval_every: int
    eval_batch_users: int
    ks: list[int]
    metric: str  # the early-stopping metric, e.g. recall@20
    progress: bool = True

    @classmethod
    def from_params(cls, section: dict[str, Any], metric: str, progress: bool
                    ) -> RankTrainConfig:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in section.items() if k in names and k != "metric"},
                   metric=metric, progress=progress)


@dataclass
class RankState:
    epoch: int = 0
    best_epoch: int = 0
    best_score: float = -math.inf
    best_state: dict[str, torch.Tensor] | None = None
    bad_evals: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False
    seconds: float = 0.0  # wall time in fit() so far, over every process that ran this training
    carried_seconds: float = 0.0  # the part of `seconds` spent by earlier, interrupted processes


def gather_rows(samples: list[TaskSample], sparse: bool
                ) -> tuple[torch.Tensor | None, list[dict[str, torch.Tensor]]]:
    """The table rows the batch touches (sorted, unique; None = the whole table) and, per task,
    each named row set as indices into the tensor the losses read (the touched rows, or the
    whole output table)."""
    if not sparse:
        return None, [s.rows for s in samples]
    names = [(t, name) for t, s in enumerate(samples) for name in s.rows]
    ids = torch.cat([samples[t].rows[name] for t, name in names])
    rows, inverse = torch.unique(ids, return_inverse=True)
    local: list[dict[str, torch.Tensor]] = [{} for _ in samples]
    for (t, name), part in zip(names, torch.split(inverse, [len(samples[t].rows[name])
                                                             for t, name in names]), strict=True):
        local[t][name] = part
    return rows, local


def task_gradients(model: RankingEncoder, tasks: list[Any], samples: list[TaskSample],
                   per_task: bool) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """(rows, G, losses): G [T, R, d] per-task gradients of the touched rows (or [1, R, d], the
    gradient of the summed loss, when the pool needs no per-task gradients); rows None = all."""
    rows, local = gather_rows(samples, model.sparse_rows)
    base = (model.weight if rows is None else model.weight[rows]).detach().requires_grad_(True)
    out = model(base)  # [R, d]
    losses = torch.stack([task.loss({n: out[i] for n, i in idx.items()}, sample)
                          for task, sample, idx in zip(tasks, samples, local, strict=True)])
    if not per_task:
        grads = torch.autograd.grad(losses.sum(), base)[0].unsqueeze(0)
    else:
        grads = torch.stack([torch.autograd.grad(loss, base, retain_graph=t < len(tasks) - 1)[0]
                             for t, loss in enumerate(losses)])
    return rows, grads, losses.detach()


def train_step(model: RankingEncoder, tasks: list[Any], pool: Any, batch: RankBatch,
               data: RankingData, optimizer: torch.optim.Optimizer, generator: torch.Generator,
               epoch: int) -> torch.Tensor:
    """One batch: sample, per-task gradients, pool, Adam step. Returns the task losses [T]."""
    samples = [task.sample(batch, data, generator) for task in tasks]
    rows, grads, losses = task_gradients(model, tasks, samples, pool.per_task)
    combined = pool.pool(grads, epoch)  # [R, d]
    if rows is None:
        model.weight.grad = combined
    else:  # the table's gradient: zero but at the touched rows (its buffer reused: no new
        grad = model.weight.grad  # [N, d] allocation, and its page faults, per step)
        if grad is None:
            grad = model.weight.grad = torch.zeros_like(model.weight)
        else:
            grad.zero_()
        grad.index_copy_(0, rows, combined)
    optimizer.step()
    return losses


def evaluate(model: RankingEncoder, data: RankingData, split: str, cfg: RankTrainConfig
             ) -> dict[str, float]:
    """Full-ranking metrics on `split` (val or test), the training items excluded."""
    with torch.no_grad():
        table = model.output_table()
    truth = getattr(data, split)
    return rank_metrics(table[:data.users], table[data.users:], truth, [data.train], cfg.ks,
                        cfg.eval_batch_users)


def on_terminal() -> bool:
    return sys.stderr.isatty()


def fit(model: RankingEncoder, tasks: list[Any], task_names: list[str], pool: Any,
        data: RankingData, cfg: RankTrainConfig, seed: int, resume_path: Path | None = None,
        resume_key: str | None = None, label: str = "") -> RankState:
    """Train until `cfg.epochs` or `cfg.patience` evaluations without a better validation
    `cfg.metric`; on return the model holds the best weights. Curve entries: epoch, per-task
    training losses, and at evaluated epochs the validation metrics. A run resumed from
    `resume_path` carries on its `seconds` (the wall time of every process's epochs)."""
    entered = time.perf_counter()
    parse_metric(cfg.metric)
    optimizer = torch.optim.Adam([model.weight], lr=cfg.lr, weight_decay=cfg.weight_decay,
                                 fused=True)
    generator = torch.Generator().manual_seed(seed)
    state = RankState()
    if resume_path is not None:
        saved = restore_state(resume_path, resume_key, label, model, optimizer, generator)
        state = RankState(**saved) if saved is not None else state
    state.carried_seconds = state.seconds  # 0 for a fresh start
    n = len(data.train_user)
    n_batches = math.ceil(n / cfg.batch_size)
    bars = cfg.progress and on_terminal()
    bar = tqdm(total=cfg.epochs, initial=state.epoch, desc=label, disable=not bars, unit="epoch")
    started = time.perf_counter()
    while state.epoch < cfg.epochs and not state.stopped_early:
        epoch = state.epoch + 1
        order = torch.randperm(n, generator=generator)
        totals = torch.zeros(len(tasks), dtype=torch.float64)
        for b in range(n_batches):
            idx = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            batch = RankBatch(data.train_user[idx], data.train_item[idx], data.train_rating[idx])
            totals += train_step(model, tasks, pool, batch, data, optimizer, generator, epoch)
        losses = (totals / n_batches).tolist()
        if not all(math.isfinite(v) for v in losses):
            raise MtlrecError(f"{label} diverged: a task loss of epoch {epoch} is not finite "
                              f"({losses}; lr {cfg.lr}); lower the learning rate")
        entry: dict[str, Any] = {"epoch": epoch,
                                 "train_loss": dict(zip(task_names, losses, strict=True))}
        if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
            val = evaluate(model, data, "val", cfg)
            entry["val"] = {k: v for k, v in val.items() if k != "users"}
            if val[cfg.metric] > state.best_score:
                state.best_score, state.best_epoch, state.bad_evals = val[cfg.metric], epoch, 0
                state.best_state = copy.deepcopy(model.state_dict())
            else:
                state.bad_evals += 1
            state.stopped_early = state.bad_evals >= cfg.patience
        state.history.append(entry)
        state.epoch = epoch
        bar.update(1)
        if cfg.progress and not bars:
            score = entry.get("val", {}).get(cfg.metric)
            shown = f" val {cfg.metric} {score:.4f}" if score is not None else ""
            print(f"{label}: epoch {epoch}/{cfg.epochs} loss "
                  f"{'/'.join(f'{v:.4f}' for v in losses)}{shown} best epoch {state.best_epoch} "
                  f"({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
        state.seconds = state.carried_seconds + time.perf_counter() - entered
        if resume_path is not None:
            save_state(resume_path, resume_key, model, optimizer, vars(state), generator)
    bar.close()
    if state.best_state is not None:
        model.load_state_dict(state.best_state)
    return state
