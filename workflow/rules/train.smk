# One training run per (experiment, model or variant, seed): best-validation checkpoint +
# metrics.json (+ timing.json). Masked models (Sparse Sharing, CSRec) also take the seed's masks.
rule train:
    input:
        unpack(lambda w: dag.train_inputs(config, w.experiment, w.run, w.seed)),
    output:
        model=f"{dag.run_dir('{experiment}', '{run}', '{seed}')}/model.pt",
        metrics=f"{dag.run_dir('{experiment}', '{run}', '{seed}')}/metrics.json",
    wildcard_constraints:
        experiment=dag.experiments_of_kind(config, ranking=False),
    params:
        tracked=lambda w: dag.param_values(config, dag.run_keys(config, w.experiment, w.run)),
        cmd=lambda w: command(dag.train_cmd(config, w.experiment, w.run, w.seed)),
    threads: config["runtime"]["num_threads"]
    resources:
        mem_mb=lambda w: dag.train_mem_mb(config, w.experiment),
    conda:
        "../envs/mtlrec.yaml"
    log:
        "logs/train/{experiment}/{run}/seed={seed}.log",
    shell:
        "{params.cmd} > {log} 2>&1"


# Stage 2: the experiment's new task learnt on the frozen pre-trained run of the same seed
# (prompt tuning, the fine-tuned baselines, MAML's fine-tuning): runs/<e>/newtask-<method>/...
rule newtask:
    input:
        unpack(lambda w: dag.newtask_inputs(config, w.experiment, w.method, w.seed)),
    output:
        model=f"{dag.run_dir('{experiment}', 'newtask-{method}', '{seed}')}/model.pt",
        metrics=f"{dag.run_dir('{experiment}', 'newtask-{method}', '{seed}')}/metrics.json",
    params:
        tracked=lambda w: dag.param_values(
            config, dag.newtask_keys(config, w.experiment, w.method)
        ),
        cmd=lambda w: command(dag.newtask_cmd(config, w.experiment, w.method, w.seed)),
    threads: config["runtime"]["num_threads"]
    resources:
        mem_mb=4000,
    conda:
        "../envs/mtlrec.yaml"
    log:
        "logs/newtask/{experiment}/{method}/seed={seed}.log",
    shell:
        "{params.cmd} > {log} 2>&1"
