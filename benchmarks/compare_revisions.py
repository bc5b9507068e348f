"""Training throughput of the working tree against another git revision, measured in the same run.

A speed change is judged by a ratio taken on the same machine at the same time: this checks the
base revision out into a temporary git worktree and times each model's training step (with that
revision's optimizer, as its training loop runs it) under the base package and under the working
tree's, in alternating child processes, `--pairs` times. Printed per model and pair: samples/s of
both and their ratio (new / base). Single runs on a shared machine drift by ~10 %: read the ratios.

Usage: python benchmarks/compare_revisions.py --base 5e75ec2 [--models mmoe,ple,mptrec]
       [--pairs 2] [--repeats 8] [--steps 150] [--threads 1] [--data data/encoded/census]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Run in a child process whose sys.path starts with the package under test.
MEASURE = """
import json, sys, time, torch
from pathlib import Path
from mtlrec.config import load_params
from mtlrec.models import build_model
from mtlrec.models.layers import Batch, FeatureSpec, StepInfo
from mtlrec.train.loop import make_optimizer
try:  # revisions with the training seams (objectives, combiners, hooks)
    from mtlrec.data.splits import load_splits
    from mtlrec.train.loop import prepare_training, train_step
    from mtlrec.train.objectives import BinaryCrossEntropy
    split_arg, objective = {"val_fraction": 0.5}, BinaryCrossEntropy()
except ImportError:  # older revisions: the model's own prepare / train_step
    from mtlrec.data.batches import load_splits
    split_arg, objective = 0.5, None
    def prepare_training(model, n):
        model.prepare(n)
    def train_step(model, piece, info, objective, optimizer):
        return model.train_step(piece, info, optimizer)
name, data, repeats, steps, threads = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
torch.set_num_threads(threads)
params = load_params([Path(sys.argv[6])])
splits = load_splits(Path(data), ["income", "marital"], 1, split_arg)
train = splits.train
torch.manual_seed(0)
model = build_model(name, FeatureSpec.from_schema(splits.schema), 2, params["models"][name])
optimizer = make_optimizer(model, 1e-3, train.labels.device)
prepare_training(model, len(train))
per_epoch = len(train) // 256
def run():
    model.train()
    for step in range(steps):
        start = (step * 256) % (len(train) - 256)
        idx = slice(start, start + 256)
        piece = Batch(train.dense[idx], train.sparse[idx], train.labels[idx], train.row_id[idx])
        train_step(model, piece, StepInfo(1 + step // per_epoch, step % per_epoch, per_epoch, 30,
                                          256), objective, optimizer)
run()
best = 0.0
for _ in range(repeats):
    begin = time.perf_counter()
    run()
    best = max(best, steps * 256 / (time.perf_counter() - begin))
print(json.dumps({"samples_per_s": best, "package": __import__("mtlrec").__file__}))
"""


def measure(src: Path, name: str, args: argparse.Namespace) -> float:
    """Samples/s of the package under `src` (with the params.yaml of its own checkout: the
    params layout changes between revisions)."""
    env = dict(os.environ, PYTHONPATH=str(src))
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, name, str(args.data), str(args.repeats), str(args.steps),
         str(args.threads), str(src.parent / "params.yaml")],
        env=env, capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if not result["package"].startswith(str(src)):
        raise RuntimeError(f"measured {result['package']}, expected the package under {src}")
    return result["samples_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="git revision to compare against")
    parser.add_argument("--models", default="mmoe,ple,mptrec")
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=8, help="timed passes; the best counts")
    parser.add_argument("--steps", type=int, default=150, help="batch-256 steps per pass")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data", type=Path, default=REPO / "data/encoded/census",
                        help="encoded Census (`snakemake --cores all data/encoded/census/"
                             "schema.json` makes it)")
    args = parser.parse_args()
    if not (args.data / "schema.json").is_file():
        sys.exit(f"no encoded data at {args.data}: run the encode rule first")
    with tempfile.TemporaryDirectory() as tmp:
        worktree = Path(tmp) / "base"
        subprocess.run(["git", "worktree", "add", "--detach", str(worktree), args.base],
                       cwd=REPO, check=True, capture_output=True)
        try:
            print(f"base {args.base} vs working tree; batch 256, {args.threads} thread(s), "
                  f"best of {args.repeats} x {args.steps} steps")
            print(f"{'model':8} {'pair':>4} {'base/s':>9} {'new/s':>9} {'new/base':>8}")
            for name in args.models.split(","):
                for pair in range(1, args.pairs + 1):
                    base = measure(worktree / "src", name, args)
                    new = measure(REPO / "src", name, args)
                    print(f"{name:8} {pair:4d} {base:9.0f} {new:9.0f} {new / base:8.2f}x",
                          flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=REPO,
                           check=True, capture_output=True)


if __name__ == "__main__":
    main()
