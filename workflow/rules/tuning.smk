# Grid search on validation (#17), for a tuned experiment (params `tuning.<experiment>`): every
# grid point of every run is an ordinary training run on the search seed; the choice per run
# (runs/<e>/tuning/<run>/choice.json) is an input of the experiment's own runs (rule train).
rule tune:
    input:
        unpack(lambda w: dag.train_inputs(config, w.experiment, w.run, w.seed, point=w.point)),
    output:
        model=f"{dag.point_run_dir('{experiment}', '{run}', '{point}', '{seed}')}/model.pt",
        metrics=f"{dag.point_run_dir('{experiment}', '{run}', '{point}', '{seed}')}/metrics.json",
    wildcard_constraints:
        experiment=dag.tuned_experiments(config),
        point=r"[A-Za-z0-9_.=,+-]+",
    params:
        tracked=lambda w: dag.param_values(config, dag.run_keys(config, w.experiment, w.run)),
        cmd=lambda w: command(dag.train_cmd(config, w.experiment, w.run, w.seed, w.point)),
    threads: config["runtime"]["num_threads"]
    resources:
        mem_mb=lambda w: dag.train_mem_mb(config, w.experiment),
    conda:
        "../envs/mtlrec.yaml"
    log:
        "logs/tune/{experiment}/{run}/{point}/seed={seed}.log",
    shell:
        "{params.cmd} > {log} 2>&1"


rule tune_select:
    input:
        lambda w: dag.select_inputs(config, w.experiment, w.run),
    output:
        choice=dag.choice_file("{experiment}", "{run}"),
    wildcard_constraints:
        experiment=dag.tuned_experiments(config),
    params:
        tracked=lambda w: dag.param_values(config, [f"tuning.{w.experiment}"]),
        cmd=lambda w: command(dag.select_cmd(w.experiment, w.run)),
    conda:
        "../envs/mtlrec.yaml"
    log:
        "logs/tune_select/{experiment}/{run}.log",
    shell:
        "{params.cmd} > {log} 2>&1"
