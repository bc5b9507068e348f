"""Command line: the one entry point that every Snakemake rule and DVC stage calls.

    mtlrec fetch  census --params params.yaml --out data/raw/census
    mtlrec encode census --params params.yaml --raw data/raw/census --out data/encoded/census
    mtlrec masks  --params params.yaml --seed 1 --data data/encoded/census --out DIR
    mtlrec train  --params params.yaml --model mmoe --seed 1 --data data/encoded/census --out DIR
                  [--masks DIR/masks.pt]   (Sparse Sharing, CSRec)
    mtlrec table  table2 --params params.yaml --runs runs --out results/tables
    mtlrec check  --params params.yaml [--params overlay.yaml]

`--params` may be given several times: later files overlay earlier ones. Errors in data or params
print one line (no traceback) and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mtlrec.errors import MtlrecError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mtlrec", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--params", action="append", default=None,
                       help="params file(s); later ones overlay earlier ones (default params.yaml)")
        return p

    p = add("fetch", "place the raw files of a dataset, verified by sha256")
    p.add_argument("dataset")
    p.add_argument("--out", type=Path, required=True)
    p = add("encode", "raw files -> parquet + schema.json")
    p.add_argument("dataset")
    p.add_argument("--raw", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p = add("masks", "per-task subnetwork masks by iterative magnitude pruning")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p = add("train", "train one model with one seed")
    p.add_argument("--model", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--masks", type=Path, help="masks.pt of `mtlrec masks` (masked models)")
    p = add("table", "render a results table from metrics.json files")
    p.add_argument("table", choices=["table2"])
    p.add_argument("--runs", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p = add("report", "ablation table and plot, EM label history, or t-SNE figure")
    p.add_argument("kind", choices=["ablation", "em", "tsne"])
    p.add_argument("--runs", type=Path, required=True)
    p.add_argument("--tables", type=Path, required=True)
    p.add_argument("--figures", type=Path, required=True)
    p.add_argument("--data", type=Path, help="encoded data folder (t-SNE)")
    add("check", "validate params files and print the merged result")
    return parser


def _dispatch(args: argparse.Namespace) -> None:
    from mtlrec.config import load_params

    params = load_params(args.params or ["params.yaml"])
    if args.command == "fetch":
        from mtlrec.data.sources import fetch

        section = params["data"].get(args.dataset)
        if section is None:
            raise MtlrecError(f"unknown dataset '{args.dataset}' (known: {sorted(params['data'])})")
        for path in fetch(args.dataset, args.out, section["mirror"]):
            print(f"verified {path}")
    elif args.command == "encode":
        from mtlrec.data.encode import encode_census

        if args.dataset != "census":
            raise MtlrecError(f"encode: dataset '{args.dataset}' is not supported yet")
        cfg = params["data"]["census"]
        schema = encode_census(args.raw, args.out, cfg["fit_encoders_on"], cfg["max_train_rows"],
                               cfg["max_test_rows"])
        print(f"encoded {schema['rows']} rows, {len(schema['sparse'])} sparse + "
              f"{len(schema['dense'])} dense fields -> {args.out}")
    elif args.command == "train":
        from mtlrec.train.run import run_training

        metrics = run_training(params, args.model, args.seed, args.data, args.out, args.masks)
        aucs = ", ".join(f"{t} {v:.4f}" for t, v in metrics["test_auc"].items())
        best = metrics["best_epoch"]
        print(f"{args.model} seed={args.seed}: test AUC {aucs} (best epoch {best})")
    elif args.command == "masks":
        from mtlrec.train.pruning import find_masks

        result = find_masks(params, args.seed, args.data, args.out)
        rates = ", ".join(f"{t} {r:.0%}" for t, r in result["kept_prune_rate"].items())
        print(f"masks seed={args.seed}: pruned {rates}; shared by all tasks "
              f"{result['overlap_share']:.0%} -> {args.out}")
    elif args.command == "table":
        from mtlrec.report.tables import make_table2

        make_table2(params, args.runs, args.out)
        print(f"wrote {args.out}/table2_{params['report']['table2']['dataset']}.{{tex,md,csv}}")
    elif args.command == "report":
        _report(args, params)
    elif args.command == "check":
        import yaml

        print(yaml.safe_dump(params, sort_keys=False), end="")


def _report(args: argparse.Namespace, params: dict) -> None:
    if args.kind == "ablation":
        from mtlrec.report.figures import make_ablation

        make_ablation(params, args.runs, args.tables, args.figures)
    elif args.kind == "em":
        from mtlrec.report.figures import make_em_report

        make_em_report(params, args.runs, args.tables, args.figures)
    else:
        from mtlrec.report.tsne import make_tsne

        if args.data is None:
            raise MtlrecError("report tsne needs --data (the encoded data folder)")
        make_tsne(params, args.data, args.runs, args.figures)
    print(f"wrote the {args.kind} report")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        _dispatch(args)
    except MtlrecError as exc:
        print(f"mtlrec: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mtlrec: interrupted; finished epochs are kept and the run resumes", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
