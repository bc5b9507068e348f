# Per-task subnetwork masks (iterative magnitude pruning) for Sparse Sharing and CSRec, one
# set per (dataset, seed); Sparse Sharing and CSRec runs of that seed train on them.
# A high priority starts them first: each gates two training runs, and started last they would
# leave one core idle at the end of the job.
rule masks:
    input:
        train=f"{OUT}data/encoded/{{dataset}}/train.parquet",
        test=f"{OUT}data/encoded/{{dataset}}/test.parquet",
        schema=f"{OUT}data/encoded/{{dataset}}/schema.json",
    output:
        masks=f"{OUT}runs/{{dataset}}/masks/seed={{seed}}/masks.pt",
        report=f"{OUT}runs/{{dataset}}/masks/seed={{seed}}/masks.json",
    params:
        pruning_section=config["pruning"],
        train_section=config["train"],
        runtime_section=config["runtime"],
        data=f"{OUT}data/encoded/{{dataset}}",
        out=f"{OUT}runs/{{dataset}}/masks/seed={{seed}}",
    wildcard_constraints:
        seed=r"\d+",
    threads: config["runtime"]["num_threads"]
    priority: 10
    resources:
        mem_mb=4000,
    log:
        f"{OUT}logs/masks/{{dataset}}/seed={{seed}}.log",
    shell:
        "mtlrec masks --params {PARAMS_FILE} --seed {wildcards.seed}"
        " --data {params.data} --out {params.out} > {log} 2>&1"
