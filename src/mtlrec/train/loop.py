"""The multi-task training loop: Adam, the model's gradient combiner over the objective's losses,
epoch hooks, early stopping on the sum of the experiment's validation metric over tasks, best
state restored, per-epoch curves, a progress bar, and resumable per-epoch checkpoints.

The loop composes the seams and owns none of them: the model gives `LossTerms`
(mtlrec.models.layers), the objective the per-task losses (mtlrec.train.objectives), the combiner
the update (mtlrec.train.combiners), the hooks the work between epochs (mtlrec.train.hooks), the
metric the validation score (mtlrec.evaluate.metrics)."""

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

from mtlrec.data.splits import Splits
from mtlrec.errors import MtlrecError
from mtlrec.evaluate.metrics import Metric, predict_with_labels
from mtlrec.models.layers import Batch, MultiTaskModel, StepInfo
from mtlrec.train.combiners import get_combiner
from mtlrec.train.objectives import Objective
from mtlrec.train.optim import LeanAdam
from mtlrec.train.resume import restore_state, save_state


@dataclass
class TrainConfig:
    batch_size: int
    eval_batch_size: int
    epochs: int
    patience: int
    lr: float
    shuffle: bool
    progress: bool = True  # a display flag (params `display.progress`), not a result's input

    @classmethod
    def from_params(cls, section: dict[str, Any], display: dict[str, Any] | None = None
                    ) -> TrainConfig:
        names = cls.__dataclass_fields__
        progress = bool((display or {}).get("progress", True))
        return cls(**{k: v for k, v in section.items() if k in names and k != "progress"},
                   progress=progress)


@dataclass
class TrainState:
    epoch: int = 0  # epochs finished
    best_epoch: int = 0
    best_score: float = -math.inf
    best_state: dict[str, torch.Tensor] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False
    seconds: float = 0.0  # wall time in fit() so far, over every process that ran this training
    carried_seconds: float = 0.0  # the part of `seconds` spent by earlier, interrupted processes


def make_optimizer(model: torch.nn.Module, lr: float, device: torch.device) -> torch.optim.Adam:
    """Adam with the fused kernel (one kernel for all parameters) on CPU and CUDA, called
    directly (`LeanAdam`: torch's Adam, the same bits, less Python per step)."""
    return LeanAdam(model.parameters(), lr=lr, fused=device.type in ("cpu", "cuda"))


def prepare_training(model: MultiTaskModel, num_train_rows: int) -> list[Any]:
    """The model's epoch hooks, each told that training begins (e.g. initial EM labels)."""
    hooks = model.epoch_hooks()
    for hook in hooks:
        hook.before_training(model, num_train_rows)
    return hooks


def train_step(model: MultiTaskModel, batch: Batch, info: StepInfo, objective: Objective,
               optimizer: torch.optim.Optimizer) -> torch.Tensor:
    """One batch through the model's gradient combiner (the loop's step, for callers such as
    the benchmarks); returns the detached loss."""
    return get_combiner(model.combiner).step(model, batch, info, objective, optimizer)


def on_terminal() -> bool:
    """Progress bars on a terminal; plain lines in a log file (no tqdm escape codes there)."""
    return sys.stderr.isatty()


def train_epoch(model: MultiTaskModel, optimizer: torch.optim.Optimizer, splits: Splits,
                cfg: TrainConfig, generator: torch.Generator, epoch: int,
                objective: Objective) -> float:
    """One pass over the training split, each batch stepped by the model's gradient combiner;
    returns the mean step loss."""
    model.train()
    combiner = get_combiner(model.combiner)
    train = splits.train
    batches = train.batches(cfg.batch_size, cfg.shuffle, generator)
    n_batches = math.ceil(len(train) / cfg.batch_size)
    total = torch.zeros((), device=train.device)
    bars = cfg.progress and on_terminal()
    for step, rows in enumerate(tqdm(batches, total=n_batches, desc=f"epoch {epoch}",
                                     disable=not bars, leave=False, mininterval=2.0)):
        batch = Batch(rows.dense, rows.sparse, rows.labels, rows.row_id)
        info = StepInfo(epoch, step, n_batches, cfg.epochs, cfg.batch_size)
        total += combiner.step(model, batch, info, objective, optimizer)
    return float(total) / n_batches


def evaluate(model: MultiTaskModel, split: Any, batch_size: int, objective: Objective,
             metric: Metric) -> list[float]:
    """The metric per task on one split (a BatchSource); non-finite predictions are an error."""
    scores, labels = predict_with_labels(model, split, batch_size, objective)
    if not torch.isfinite(scores).all():
        raise MtlrecError("the model's predictions are not finite (NaN or inf): training diverged;"
                          " lower train.lr")
    return metric.per_task(scores, labels)


def fit(model: MultiTaskModel, splits: Splits, cfg: TrainConfig, seed: int, objective: Objective,
        metric: Metric, resume_path: Path | None = None, label: str = "",
        resume_key: str | None = None) -> TrainState:
    """Train with early stopping on the sum over tasks of `metric` on the validation split; on
    return the model holds the best-validation weights. Curve entries: epoch, train_loss,
    val_<metric> and the epoch hooks' fields.

    When `resume_path` is given, the full training state is saved there after every epoch and a run
    interrupted mid-way continues from its last finished epoch with identical results (and its
    `seconds` carry on, so a resumed run's wall time counts every process's epochs), provided
    the saved `resume_key` (a fingerprint of everything that decides the run) is this run's; a
    state saved under another key is discarded. A non-finite epoch loss stops the run
    (MtlrecError naming the epoch and the learning rate).
    """
    entered = time.perf_counter()
    device = splits.train.device
    optimizer = make_optimizer(model, cfg.lr, device)
    generator = torch.Generator().manual_seed(seed)
    state = TrainState()
    hooks = prepare_training(model, len(splits.train))
    if resume_path is not None:
        saved = restore_state(resume_path, resume_key, label, model, optimizer, generator)
        state = TrainState(**saved) if saved is not None else state
    state.carried_seconds = state.seconds  # 0 for a fresh start
    bar = tqdm(total=cfg.epochs, initial=state.epoch, desc=label or "train",
               disable=not (cfg.progress and on_terminal()), unit="epoch")
    log_lines = cfg.progress and not on_terminal()
    started = time.perf_counter()
    while state.epoch < cfg.epochs and not state.stopped_early:
        epoch = state.epoch + 1
        loss = train_epoch(model, optimizer, splits, cfg, generator, epoch, objective)
        if not math.isfinite(loss):
            raise MtlrecError(f"{label or 'training'} diverged: the mean training loss of epoch "
                              f"{epoch} is {loss} (train.lr {cfg.lr}); lower the learning rate")
        extra: dict[str, Any] = {}
        for hook in hooks:
            extra.update(hook.after_epoch(model, epoch, splits.train, cfg.eval_batch_size))
        val_scores = evaluate(model, splits.val, cfg.eval_batch_size, objective, metric)
        score = metric.selection_score(val_scores)
        improved = score > state.best_score
        if improved:
            state.best_score, state.best_epoch = score, epoch
            state.best_state = copy.deepcopy(model.state_dict())
        state.history.append({"epoch": epoch, "train_loss": loss, f"val_{metric.name}": val_scores,
                              **extra})
        state.epoch = epoch
        state.stopped_early = epoch - state.best_epoch >= cfg.patience
        bar.set_postfix(loss=f"{loss:.4f}", val="/".join(f"{a:.4f}" for a in val_scores),
                        best=state.best_epoch)
        bar.update(1)
        if log_lines:
            print(f"{label or 'train'}: epoch {epoch}/{cfg.epochs} loss {loss:.4f} val "
                  f"{metric.name} {'/'.join(f'{a:.4f}' for a in val_scores)} best epoch "
                  f"{state.best_epoch} ({time.perf_counter() - started:.0f} s)", file=sys.stderr,
                  flush=True)
        state.seconds = state.carried_seconds + time.perf_counter() - entered
        if resume_path is not None:
            save_state(resume_path, resume_key, model, optimizer, vars(state), generator)
    bar.close()
    if state.best_state is not None:
        model.load_state_dict(state.best_state)
    return state
