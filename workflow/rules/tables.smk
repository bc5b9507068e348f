# Table 2 (multi-task AUC, mean ± std over seeds, paper value beside): LaTeX, Markdown, CSV.
rule table2:
    input:
        run_files(DATASET, TABLE2["models"], SEEDS, "metrics.json"),
    output:
        tex=f"{OUT}results/tables/table2_{DATASET}.tex",
        md=f"{OUT}results/tables/table2_{DATASET}.md",
        csv=f"{OUT}results/tables/table2_{DATASET}.csv",
    params:
        section=TABLE2,
        runs=f"{OUT}runs",
        out=f"{OUT}results/tables",
    log:
        f"{OUT}logs/table2_{DATASET}.log",
    shell:
        "mtlrec table table2 --params {PARAMS_FILE} --runs {params.runs} --out {params.out}"
        " > {log} 2>&1"
