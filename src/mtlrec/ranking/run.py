"""One ranking run (an experiment, a method or one of its sensitivity points, a seed): encoded
interactions -> model.pt, metrics.json (deterministic), timing.json (wall times).

A run name is a `rank_methods` entry, or `<method>-<key><value>` (a sensitivity point: the
method with pool option <key> set to <value>, e.g. `pmtrec-alpha1.04`, `pmtrec-tau1e-06`).
A method names its pool, optionally its encoder, the positions of the experiment's auxiliary
tasks it keeps (`aux`, 1-based: [] = the main task alone) and pool options (`set`) over
`pools.<pool>` and the experiment's own `pools` overrides.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import Any

from mtlrec.config import deep_merge, experiment_section, section
from mtlrec.errors import MtlrecError
from mtlrec.kernels import set_flush_denormal
from mtlrec.provenance import (
    check_writable,
    provenance,
    resolve_device,
    save_torch_atomic,
    set_seed,
    write_json_atomic,
)
from mtlrec.ranking.data import load_ranking
from mtlrec.ranking.encoders import build_encoder
from mtlrec.ranking.loop import RankTrainConfig, evaluate, fit
from mtlrec.ranking.tasks import build_task
from mtlrec.train.pooling import build_pool

RESUME_FILE = "resume.pt"
POINT = re.compile(r"^(?P<method>[A-Za-z][A-Za-z0-9_]*)-(?P<key>[a-z_]+)(?P<value>[-+.0-9e]+)$")


def resolve_rank_run(params: dict[str, Any], experiment: str, run: str) -> dict[str, Any]:
    """{method, pool, pool_options, encoder, encoder_options, tasks}: everything a run trains."""
    methods = params["rank_methods"]
    point = POINT.match(run)
    name, extra = run, {}
    if run not in methods and point:
        name = point["method"]
        extra = {point["key"]: float(point["value"])}
    if name not in methods:
        raise MtlrecError(f"unknown ranking method '{run}' (rank_methods: {sorted(methods)}, "
                          "or <method>-<option><value>)")
    spec = methods[name]
    exp = experiment_section(params, experiment)
    pool = spec["pool"]
    options = deep_merge(params["pools"].get(pool, {}), exp.get("pools", {}).get(pool, {}))
    options = deep_merge(options, {**spec.get("set", {}), **extra})
    if extra and next(iter(extra)) not in params["pools"].get(pool, {}):
        raise MtlrecError(f"run '{run}': pools.{pool} has no option '{next(iter(extra))}'")
    main, aux = exp["tasks"][0], exp["tasks"][1:]
    keep = spec.get("aux")
    if keep is not None:
        bad = [k for k in keep if not 1 <= k <= len(aux)]
        if bad:
            raise MtlrecError(f"rank_methods.{name}.aux: {bad} out of 1..{len(aux)} "
                              f"(experiments.{experiment} has auxiliary tasks {aux})")
        aux = [aux[k - 1] for k in keep]
    encoder = spec.get("encoder", exp["encoder"])
    return {"method": name, "pool": pool, "pool_options": options, "encoder": encoder,
            "encoder_options": dict(params["encoders"][encoder]), "tasks": [main, *aux]}


def run_ranking(params: dict[str, Any], experiment: str, run: str, seed: int, data_dir: Path,
                out_dir: Path) -> dict[str, Any]:
    """Train run `run` of ranking experiment `experiment` with `seed`; write out_dir/{model.pt,
    metrics.json, timing.json}. Reads `rank_train`, `runtime`, `display`, the experiment, its
    dataset's split and tasks, the method, its pool's and encoder's sections."""
    exp = experiment_section(params, experiment)
    if exp.get("kind") != "ranking":
        raise MtlrecError(f"experiments.{experiment} is not a ranking experiment")
    train = section(params, "rank_train")
    runtime = section(params, "runtime")
    dataset = section(params, f"datasets.{exp['dataset']}")
    spec = resolve_rank_run(params, experiment, run)
    check_writable(out_dir)
    started = time.perf_counter()
    import torch

    torch.set_num_threads(runtime["num_threads"])
    set_flush_denormal(runtime["flush_denormal"])
    if resolve_device(runtime["device"]).type != "cpu":  # the ranking loop is CPU-only so far
        print("mtlrec: note: ranking runs train on the CPU (runtime.device is ignored here)",
              file=sys.stderr)
    device = torch.device("cpu")
    set_seed(seed)
    declarations = {t: dataset["tasks"][t] for t in spec["tasks"]}
    tasks = [build_task(exp["dataset"], t, d) for t, d in declarations.items()]
    relations = [t.relation for t in tasks if getattr(t, "relation", None)]
    data = load_ranking(data_dir, dataset["split"], seed, relations)
    model = build_encoder(spec["encoder"], data, spec["encoder_options"])
    pool = build_pool(spec["pool"], len(tasks), spec["pool_options"])
    progress = bool(params.get("display", {}).get("progress", True))
    cfg = RankTrainConfig.from_params(train, exp["metric"], progress)
    key = resume_key(params, experiment, run, seed, data_dir)
    state = fit(model, tasks, spec["tasks"], pool, data, cfg, seed, out_dir / RESUME_FILE,
                key, label=f"{experiment}/{run} seed={seed}")
    test = evaluate(model, data, "test", cfg)
    best = next(e for e in state.history if e["epoch"] == state.best_epoch)
    metrics = {
        "model": run, "experiment": experiment, "dataset": exp["dataset"], "seed": seed,
        "kind": "ranking", "tasks": spec["tasks"], "method": spec["method"],
        "pool": spec["pool"], "pool_options": spec["pool_options"],
        "encoder": spec["encoder"], "metric": exp["metric"],
        "test": {k: v for k, v in test.items() if k != "users"},
        "val": best["val"], "test_users": test["users"],
        "best_epoch": state.best_epoch, "epochs_run": state.epoch,
        "stopped_early": state.stopped_early,
        "data": {k: data.schema[k] for k in ("users", "items", "interactions")}
        | {"train": len(data.train_user), "relations": {r: data.schema["relations"][r]["rows"]
                                                        for r in relations}},
        "num_params": model.weight.numel(),
        "curves": state.history,
        "params": {"rank_train": train, "runtime": runtime,
                   f"experiments.{experiment}": exp,
                   f"datasets.{exp['dataset']}.split": dataset["split"],
                   f"datasets.{exp['dataset']}.tasks": declarations,
                   "method": params["rank_methods"][spec["method"]]},
        "provenance": provenance(device, runtime["num_threads"]),
    }
    wall = time.perf_counter() - started + state.carried_seconds  # + interrupted processes
    save_torch_atomic(out_dir / "model.pt", model.state_dict())
    write_json_atomic(out_dir / "timing.json", {
        "wall_time_s": round(wall, 3), "epochs": state.epoch,
        "seconds_per_epoch": round(wall / max(state.epoch, 1), 3)})
    write_json_atomic(out_dir / "metrics.json", metrics)
    (out_dir / RESUME_FILE).unlink(missing_ok=True)
    return metrics


def resume_key(params: dict[str, Any], experiment: str, run: str, seed: int,
               data_dir: Path) -> str:
    from mtlrec.train.resume import fingerprint
    from mtlrec.workflow import rank_keys

    files = [data_dir / "schema.json", data_dir / "interactions.parquet",
             *sorted((data_dir / "relations").glob("*.parquet"))]
    return fingerprint(params, rank_keys(params, experiment, run), files, "rank",
                       run=run, seed=seed, experiment=experiment)
