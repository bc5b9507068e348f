# Ranking experiments (PMTRec): interactions encoded once per dataset, one run per (experiment,
# method or sweep point, seed), then Table 2, the task study (Table 3), the ablation (Fig. 4),
# the alpha/tau sensitivity (Fig. 5) and the validation curves (Fig. 6).
rule encode_interactions:
    input:
        raw=dag.raw_dir("{dataset}"),
    output:
        **dag.interaction_files("{dataset}"),
    params:
        tracked=lambda w: dag.param_values(config, dag.dataset_keys(config, w.dataset, "encode")),
        cmd=lambda w: command(dag.encode_interactions_cmd(w.dataset)),
    conda:
        "../envs/mtlrec.yaml"
    log:
        "logs/encode/{dataset}.log",
    shell:
        "{params.cmd} > {log} 2>&1"


rule rank:
    input:
        unpack(lambda w: dag.rank_inputs(config, w.experiment)),
    output:
        model=f"{dag.run_dir('{experiment}', '{run}', '{seed}')}/model.pt",
        metrics=f"{dag.run_dir('{experiment}', '{run}', '{seed}')}/metrics.json",
    wildcard_constraints:
        experiment=dag.experiments_of_kind(config, ranking=True),
        run=r"[A-Za-z][A-Za-z0-9_]*(-[a-z_]+[-+.0-9e]+)?",
    params:
        tracked=lambda w: dag.param_values(config, dag.rank_keys(config, w.experiment, w.run)),
        cmd=lambda w: command(dag.rank_cmd(config, w.experiment, w.run, w.seed)),
    threads: config["runtime"]["num_threads"]
    resources:
        mem_mb=4000,
    conda:
        "../envs/mtlrec.yaml"
    log:
        "logs/rank/{experiment}/{run}/seed={seed}.log",
    shell:
        "{params.cmd} > {log} 2>&1"


for _kind in dag.RANK_REPORT_KINDS:

    rule:
        name:
            _kind
        input:
            lambda w, kind=_kind: dag.report_inputs(config, w.experiment, kind),
        output:
            **registered_outputs(_kind),
        params:
            tracked=lambda w, kind=_kind: dag.param_values(
                config, dag.report_keys(config, w.experiment, kind)
            ),
            cmd=lambda w, kind=_kind: command(dag.rank_report_cmd(w.experiment, kind)),
        conda:
            "../envs/mtlrec.yaml"
        log:
            f"logs/{_kind}/{{experiment}}.log",
        shell:
            "{params.cmd} > {log} 2>&1"
