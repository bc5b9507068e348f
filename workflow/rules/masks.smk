# Per-task subnetwork masks (iterative magnitude pruning) for Sparse Sharing and CSRec, one set
# per (experiment, seed); the masked runs of that seed train on them. A high priority starts them
# first: each gates two training runs, and started last they would leave a core idle at the end.
rule masks:
    input:
        unpack(lambda w: dag.masks_inputs(config, w.experiment)),
    output:
        masks=f"{dag.masks_dir('{experiment}', '{seed}')}/masks.pt",
        report=f"{dag.masks_dir('{experiment}', '{seed}')}/masks.json",
    params:
        tracked=lambda w: dag.param_values(config, dag.run_keys(config, w.experiment, None)),
        cmd=lambda w: command(dag.masks_cmd(config, w.experiment, w.seed)),
    threads: config["runtime"]["num_threads"]
    priority: 10
    resources:
        mem_mb=4000,
    conda:
        "../envs/mtlrec.yaml"
    log:
        "logs/masks/{experiment}/seed={seed}.log",
    shell:
        "{params.cmd} > {log} 2>&1"
