"""Command line: the one entry point that every Snakemake rule and DVC stage calls.

    mtlrec fetch  DATASET --params params.yaml --out data/raw/DATASET
    mtlrec encode DATASET --params params.yaml --raw data/raw/DATASET --out data/encoded/DATASET
    mtlrec labels DATASET TASK --params params.yaml --raw data/raw/DATASET
                  --out data/labels/DATASET/TASK
    mtlrec masks  --params params.yaml --experiment EXP --seed 1 --data data/encoded/DATASET
                  --out DIR
    mtlrec train  --params params.yaml --experiment EXP --model mmoe --seed 1
                  --data data/encoded/DATASET --out DIR [--masks DIR/masks.pt]  (masked models)
                  [--point NAME | --choice runs/EXP/tuning/RUN/choice.json]  (tuned experiment)
    mtlrec tune-select --params params.yaml --experiment EXP --run mmoe --runs runs
                  --out runs/EXP/tuning/mmoe/choice.json   (a tuned experiment's choice)
    mtlrec newtask --params params.yaml --experiment EXP --method prompt --seed 1
                  --data data/encoded/DATASET --backbone runs/EXP/mptrec/seed=1 --out DIR
    mtlrec new-task --task race --column race --equals White --backbone runs/EXP/mptrec/seed=1
                  (a researcher's new task on a pre-trained run: prompt-tuned score and cost)
    mtlrec rank   --params params.yaml --experiment EXP --run pmtrec --seed 1
                  --data data/interactions/DATASET --out DIR   (a ranking run, PMTRec)
    mtlrec table  table2|table3|table4 --params params.yaml --experiment EXP --runs runs --out DIR
    mtlrec report ablation|newtask_ablation|correlations|em|tsne|rank_* --params params.yaml
                  --experiment EXP --runs runs ...
    mtlrec publish latex|check|html [--paper mptrec|pmtrec]  (over every experiment in build)
    mtlrec check  --params params.yaml [--params overlay.yaml]
    mtlrec dag    dvc --params params.yaml [--out dvc.yaml]   (writes dvc.yaml from the DAG)

`--params` may be given several times: later files overlay earlier ones. Errors in data or params
print one line (no traceback) and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mtlrec.errors import MtlrecError


def _parser() -> argparse.ArgumentParser:
    from mtlrec import __version__

    parser = argparse.ArgumentParser(prog="mtlrec", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"mtlrec {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--params", action="append", default=None,
                       help="params file(s); later ones overlay earlier ones (default params.yaml)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override one params key after the files (YAML value), e.g. "
                            "--set train.lr=0.01; repeatable")
        return p

    p = add("fetch", "place the raw files of a dataset, verified by sha256")
    p.add_argument("dataset")
    p.add_argument("--out", type=Path, required=True)
    p = add("encode", "raw files -> parquet + schema.json")
    p.add_argument("dataset")
    p.add_argument("--raw", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p = add("labels", "one task's 0/1 labels from the raw files (its declared rule)")
    p.add_argument("dataset")
    p.add_argument("task")
    p.add_argument("--raw", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)

    def add_run(name: str, help_text: str) -> argparse.ArgumentParser:
        """A job of one experiment and seed on the encoded data and labels."""
        p = add(name, help_text)
        p.add_argument("--experiment", required=True)
        p.add_argument("--seed", type=int, required=True)
        p.add_argument("--data", type=Path, required=True)
        p.add_argument("--labels", type=Path, help="labels folder (default: data/labels/"
                                                   "<dataset> beside data/encoded/<dataset>)")
        p.add_argument("--out", type=Path, required=True)
        return p

    add_run("masks", "per-task subnetwork masks by iterative magnitude pruning")
    p = add_run("train", "train one model with one seed")
    p.add_argument("--model", required=True, help="a model, a variant, or full-<one of them>")
    p.add_argument("--masks", type=Path, help="masks.pt of `mtlrec masks` (masked models)")
    tuned = p.add_mutually_exclusive_group()
    tuned.add_argument("--point", help="a tuned experiment: train this grid point (its name)")
    tuned.add_argument("--choice", type=Path, help="a tuned experiment: train the point this "
                                                    "choice.json names (mtlrec tune-select)")
    p = add("tune-select", "a tuned experiment's choice for one run: the grid point with the best "
                           "validation score -> choice.json")
    p.add_argument("--experiment", required=True)
    p.add_argument("--run", required=True, help="a model or variant of the experiment")
    p.add_argument("--runs", type=Path, required=True, help="the runs folder (runs)")
    p.add_argument("--out", type=Path, required=True, help="the choice file to write")
    p = add_run("newtask", "learn an experiment's new task on a frozen pre-trained run (stage 2)")
    p.add_argument("--method", required=True, help="a new_task.methods entry")
    p.add_argument("--backbone", type=Path, required=True, help="the pre-trained run's folder")
    p = add("rank", "train one ranking run (PMTRec or a baseline pool) with one seed")
    p.add_argument("--experiment", required=True)
    p.add_argument("--run", required=True, help="a rank_methods entry, or <method>-<option><value>")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--data", type=Path, required=True, help="data/interactions/<dataset>")
    p.add_argument("--out", type=Path, required=True)
    p = add("new-task", "a new task (column + rule) on a pre-trained run: prompt-tune it and "
                        "report its score, cost and the existing tasks' scores")
    p.add_argument("--task", required=True, help="the new task's name")
    p.add_argument("--column", required=True, help="the raw column its label comes from")
    rule = p.add_mutually_exclusive_group(required=True)
    rule.add_argument("--equals", help="label 1 where the column equals this value")
    rule.add_argument("--above", type=float, help="label 1 where the column is above this")
    rule.add_argument("--below", type=float, help="label 1 where the column is below this")
    p.add_argument("--backbone", type=Path, required=True,
                   help="a pre-trained run folder (runs/<experiment>/<run>/seed=<s>)")
    p.add_argument("--method", default="prompt", help="a new_task.methods entry (prompt)")
    p.add_argument("--out", type=Path, help="output folder (default: runs/<experiment>/"
                                            "new-task-<task>/<method>/seed=<s>)")
    p = add("table", "render a results table from metrics.json files")
    p.add_argument("table", choices=["table2", "table3", "table4"])
    p.add_argument("--experiment", required=True)
    p.add_argument("--runs", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p = add("report", "ablation table and plot, EM label history, or t-SNE figure")
    p.add_argument("kind", choices=["ablation", "newtask_ablation", "correlations", "em", "tsne",
                                    "tuning",
                                    "rank_table2", "rank_table3", "rank_ablation",
                                    "rank_sensitivity", "rank_curves"])
    p.add_argument("--experiment", required=True)
    p.add_argument("--runs", type=Path, required=True)
    p.add_argument("--tables", type=Path, required=True)
    p.add_argument("--figures", type=Path, required=True)
    p.add_argument("--data", type=Path, help="encoded data folder (t-SNE)")
    p.add_argument("--labels", type=Path, help="labels folder (correlations)")
    p = add("publish", "over every experiment in build: the LaTeX document of all tables, the "
                       "reproduction check, or one paper's HTML report")
    p.add_argument("what", choices=["latex", "check", "html"])
    p.add_argument("--paper", choices=["mptrec", "pmtrec"], help="the paper (html)")
    p.add_argument("--root", type=Path, default=Path("."),
                   help="the output root holding results/ and runs/ (default: .)")
    add("check", "validate params files and print the merged result")
    p = add("dag", "write the pipeline DAG in another tool's format")
    p.add_argument("format", choices=["dvc"])
    p.add_argument("--out", type=Path, help="file to write (default: standard output)")
    return parser


def _dispatch(args: argparse.Namespace) -> None:
    from mtlrec.config import load_params

    params = load_params(args.params or ["params.yaml"])
    if args.set:
        from mtlrec.config import apply_overrides

        params = apply_overrides(params, args.set)
    if args.command == "fetch":
        from mtlrec.data.datasets import fetch_dataset

        for path in fetch_dataset(params, args.dataset, args.out):
            print(f"verified {path}")
    elif args.command == "encode":
        from mtlrec.data.datasets import encode_dataset

        schema = encode_dataset(params, args.dataset, args.raw, args.out)
        if "interactions" in schema:
            relations = ", ".join(f"{r} {v['rows']:,}" for r, v in schema["relations"].items())
            print(f"encoded {schema['interactions']:,} interactions of {schema['users']:,} users"
                  f" x {schema['items']:,} items; relations: {relations or 'none'} -> {args.out}")
        else:
            print(f"encoded {schema['rows']} rows, {len(schema['sparse'])} sparse + "
                  f"{len(schema['dense'])} dense fields -> {args.out}")
    elif args.command == "labels":
        from mtlrec.data.datasets import write_task_labels

        info = write_task_labels(params, args.dataset, args.task, args.raw, args.out)
        rates = ", ".join(f"{split} {rate:.2%}" for split, rate in info["positive_rate"].items())
        print(f"labels of {args.task}: positive {rates} -> {args.out}")
    elif args.command == "newtask":
        from mtlrec.newtask.run import run_new_task

        metrics = run_new_task(params, args.experiment, args.method, args.seed, args.data,
                               args.backbone, args.out, args.labels)
        _print_new_task(metrics)
    elif args.command == "new-task":
        from mtlrec.newtask.direct import add_new_task

        _print_new_task(add_new_task(params, args))
    elif args.command == "train":
        from mtlrec.train.run import run_training
        from mtlrec.train.tuning import tuned_params

        params, tuning = tuned_params(params, args.experiment, args.model, point=args.point,
                                      choice=args.choice)
        metrics = run_training(params, args.experiment, args.model, args.seed, args.data,
                               args.out, args.masks, args.labels, tuning)
        scores = metrics[f"test_{metrics['metric']}"]
        aucs = ", ".join(f"{t} {v:.4f}" for t, v in scores.items())
        best = metrics["best_epoch"]
        print(f"{args.model} seed={args.seed}: test {metrics['metric']} {aucs} "
              f"(best epoch {best})")
    elif args.command == "tune-select":
        from mtlrec.provenance import write_json_atomic
        from mtlrec.train.tuning import select

        chosen = select(params, args.experiment, args.run, args.runs)
        write_json_atomic(args.out, chosen)
        scores = [row["score"] for row in chosen["points"].values()]
        print(f"{args.experiment}/{args.run}: chose {chosen['choice']} of {len(scores)} points "
              f"(validation score {chosen['points'][chosen['choice']]['score']:.4f}, range "
              f"{min(scores):.4f}-{max(scores):.4f}) -> {args.out}")
    elif args.command == "rank":
        from mtlrec.ranking.run import run_ranking

        metrics = run_ranking(params, args.experiment, args.run, args.seed, args.data, args.out)
        shown = ", ".join(f"{k} {metrics['test'][k]:.4f}" for k in ("recall@20", "ndcg@20")
                          if k in metrics["test"])
        print(f"{args.experiment}/{args.run} seed={args.seed}: test {shown} "
              f"(best epoch {metrics['best_epoch']} of {metrics['epochs_run']})")
    elif args.command == "masks":
        from mtlrec.train.pruning import find_masks

        result = find_masks(params, args.experiment, args.seed, args.data, args.out, args.labels)
        rates = ", ".join(f"{t} {r:.0%}" for t, r in result["kept_prune_rate"].items())
        print(f"masks seed={args.seed}: pruned {rates}; shared by all tasks "
              f"{result['overlap_share']:.0%} -> {args.out}")
    elif args.command == "table":
        if args.table == "table2":
            from mtlrec.report.tables import make_table2 as make
        elif args.table == "table3":
            from mtlrec.report.newtask import make_table3 as make
        else:
            from mtlrec.report.newtask import make_table4 as make
        make(params, args.experiment, args.runs, args.out)
        print(f"wrote {args.out}/{args.table}_{args.experiment}.{{tex,md,csv}}")
    elif args.command == "report":
        _report(args, params)
    elif args.command == "publish":
        _publish(args, params)
    elif args.command == "check":
        import yaml

        print(yaml.safe_dump(params, sort_keys=False), end="")
        from mtlrec.workflow import dvc_yaml_is_current

        if not dvc_yaml_is_current(params):
            print("mtlrec: note: dvc.yaml does not match these params (a run, experiment or "
                  "dataset was added or removed): run `mtlrec dag dvc --out dvc.yaml`",
                  file=sys.stderr)
    elif args.command == "dag":
        from mtlrec.workflow import render_dvc_yaml

        text = render_dvc_yaml(params)
        if args.out is None:
            print(text, end="")
        else:
            from mtlrec.provenance import write_text_atomic

            write_text_atomic(args.out, text)


def _print_new_task(metrics: dict) -> None:
    name = metrics["metric"]
    new = metrics["new_task"]
    scores = metrics[f"existing_test_{name}"] or {}
    existing = ", ".join(f"{t} {v:.4f}" for t, v in scores.items()) or "n/a (all weights train)"
    cost = metrics["cost"]
    print(f"{metrics['method']} seed={metrics['seed']}: new task {new} test {name} "
          f"{metrics[f'test_{name}'][new]:.4f} (best epoch {metrics['best_epoch']}); "
          f"trained {cost['trained_params']:,} params "
          f"({cost['trained_params'] / cost['full_params']:.1%} of full 3-task training), "
          f"{cost['trained_flops_per_batch'] / 1e6:.1f}M FLOPs per batch; existing tasks "
          f"unchanged: {existing}")


def _publish(args: argparse.Namespace, params: dict) -> None:
    from mtlrec import workflow
    from mtlrec.report import publish

    outputs = {key: args.root / path for key, path in workflow.publish_outputs(params).items()}
    if args.what == "latex":
        publish.make_paper_tables(params, args.root, outputs["latex"])
        print(f"wrote {outputs['latex']}")
    elif args.what == "check":
        print(publish.make_reproduction(params, args.root, outputs["check_md"],
                                        outputs["check_csv"]))
    else:
        from mtlrec.report.html import make_html

        if args.paper is None:
            raise MtlrecError("publish html needs --paper (mptrec or pmtrec)")
        make_html(params, args.paper, args.root, outputs["check_md"],
                  outputs[f"html_{args.paper}"])
        print(f"wrote {outputs[f'html_{args.paper}']}")


def _report(args: argparse.Namespace, params: dict) -> None:
    if args.kind.startswith("rank_"):
        from mtlrec.report.ranking import make_rank_report

        make_rank_report(params, args.experiment, args.kind, args.runs, args.tables,
                         args.figures)
    elif args.kind in ("newtask_ablation", "correlations"):
        from mtlrec.report import newtask

        if args.kind == "correlations":
            if args.labels is None:
                raise MtlrecError("report correlations needs --labels (the labels folder)")
            newtask.make_correlations(params, args.experiment, args.labels, args.tables)
        else:
            newtask.make_newtask_ablation(params, args.experiment, args.runs, args.tables,
                                          args.figures)
    elif args.kind == "tuning":
        from mtlrec.report.tuning import make_tuning_table

        make_tuning_table(params, args.experiment, args.runs, args.tables, args.figures)
    elif args.kind == "ablation":
        from mtlrec.report.figures import make_ablation

        make_ablation(params, args.experiment, args.runs, args.tables, args.figures)
    elif args.kind == "em":
        from mtlrec.report.figures import make_em_report

        make_em_report(params, args.experiment, args.runs, args.tables, args.figures)
    else:
        from mtlrec.report.tsne import make_tsne

        if args.data is None:
            raise MtlrecError("report tsne needs --data (the encoded data folder)")
        make_tsne(params, args.experiment, args.data, args.runs, args.figures)
    print(f"wrote the {args.kind} report")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        _dispatch(args)
    except MtlrecError as exc:
        print(f"mtlrec: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file system fault no reader anticipated: still one line
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"mtlrec: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mtlrec: interrupted; finished epochs are kept and the run resumes", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
