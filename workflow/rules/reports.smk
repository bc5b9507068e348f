# Per experiment: Table 2 (LaTeX, Markdown, CSV), the ablation table and plot, the EM label
# history, the t-SNE figure, and the report notebook executed with papermill; for a new-task
# experiment Tables 3 and 4, the stage-2 ablation (Fig. 5) and the label correlations.
rule table2:
    input:
        lambda w: dag.report_inputs(config, w.experiment, "table2"),
    output:
        **registered_outputs("table2"),
    params:
        tracked=lambda w: dag.param_values(config, dag.report_keys(config, w.experiment, "table2")),
        cmd=lambda w: command(dag.report_cmd(config, w.experiment, "table2")),
    conda:
        "../envs/mtlrec.yaml"
    log:
        "logs/table2/{experiment}.log",
    shell:
        "{params.cmd} > {log} 2>&1"


rule ablation:
    input:
        lambda w: dag.report_inputs(config, w.experiment, "ablation"),
    output:
        **registered_outputs("ablation"),
    params:
        tracked=lambda w: dag.param_values(config, dag.report_keys(config, w.experiment, "ablation")),
        cmd=lambda w: command(dag.report_cmd(config, w.experiment, "ablation")),
    conda:
        "../envs/mtlrec.yaml"
    log:
        "logs/ablation/{experiment}.log",
    shell:
        "{params.cmd} > {log} 2>&1"


rule em:
    input:
        lambda w: dag.report_inputs(config, w.experiment, "em"),
    output:
        **registered_outputs("em"),
    params:
        tracked=lambda w: dag.param_values(config, dag.report_keys(config, w.experiment, "em")),
        cmd=lambda w: command(dag.report_cmd(config, w.experiment, "em")),
    conda:
        "../envs/mtlrec.yaml"
    log:
        "logs/em/{experiment}.log",
    shell:
        "{params.cmd} > {log} 2>&1"


rule tsne:
    input:
        lambda w: dag.report_inputs(config, w.experiment, "tsne"),
    output:
        **registered_outputs("tsne"),
    params:
        tracked=lambda w: dag.param_values(config, dag.report_keys(config, w.experiment, "tsne")),
        cmd=lambda w: command(dag.report_cmd(config, w.experiment, "tsne")),
    # the t-SNE runs exactly this many threads (its result depends on the count)
    threads: lambda w: config["report"][w.experiment]["tsne"]["threads"]
    conda:
        "../envs/mtlrec.yaml"
    log:
        "logs/tsne/{experiment}.log",
    shell:
        "{params.cmd} > {log} 2>&1"


rule notebook:
    input:
        lambda w: dag.report_inputs(config, w.experiment, "notebook"),
        notebook=f"{REPO}/notebooks/report.ipynb",
    output:
        **registered_outputs("notebook"),
    params:
        cmd=lambda w: command(dag.report_cmd(config, w.experiment, "notebook")),
    conda:
        "../envs/mtlrec.yaml"
    log:
        "logs/notebook/{experiment}.log",
    shell:
        "{params.cmd} > {log} 2>&1"


rule table3:
    input:
        lambda w: dag.report_inputs(config, w.experiment, "table3"),
    output:
        **registered_outputs("table3"),
    params:
        tracked=lambda w: dag.param_values(config, dag.report_keys(config, w.experiment, "table3")),
        cmd=lambda w: command(dag.report_cmd(config, w.experiment, "table3")),
    conda:
        "../envs/mtlrec.yaml"
    log:
        "logs/table3/{experiment}.log",
    shell:
        "{params.cmd} > {log} 2>&1"


rule table4:
    input:
        lambda w: dag.report_inputs(config, w.experiment, "table4"),
    output:
        **registered_outputs("table4"),
    params:
        tracked=lambda w: dag.param_values(config, dag.report_keys(config, w.experiment, "table4")),
        cmd=lambda w: command(dag.report_cmd(config, w.experiment, "table4")),
    conda:
        "../envs/mtlrec.yaml"
    log:
        "logs/table4/{experiment}.log",
    shell:
        "{params.cmd} > {log} 2>&1"


rule newtask_ablation:
    input:
        lambda w: dag.report_inputs(config, w.experiment, "newtask_ablation"),
    output:
        **registered_outputs("newtask_ablation"),
    params:
        tracked=lambda w: dag.param_values(config, dag.report_keys(config, w.experiment, "newtask_ablation")),
        cmd=lambda w: command(dag.report_cmd(config, w.experiment, "newtask_ablation")),
    conda:
        "../envs/mtlrec.yaml"
    log:
        "logs/newtask_ablation/{experiment}.log",
    shell:
        "{params.cmd} > {log} 2>&1"


rule correlations:
    input:
        lambda w: dag.report_inputs(config, w.experiment, "correlations"),
    output:
        **registered_outputs("correlations"),
    params:
        tracked=lambda w: dag.param_values(config, dag.report_keys(config, w.experiment, "correlations")),
        cmd=lambda w: command(dag.report_cmd(config, w.experiment, "correlations")),
    conda:
        "../envs/mtlrec.yaml"
    log:
        "logs/correlations/{experiment}.log",
    shell:
        "{params.cmd} > {log} 2>&1"


# A tuned experiment's search (#17): each model's chosen grid point, the cap counts, tuned
# against default test metrics (paired t-test), and every point's validation scores.
rule tuning:
    input:
        lambda w: dag.report_inputs(config, w.experiment, "tuning"),
    output:
        **registered_outputs("tuning"),
    params:
        tracked=lambda w: dag.param_values(config, dag.report_keys(config, w.experiment, "tuning")),
        cmd=lambda w: command(dag.report_cmd(config, w.experiment, "tuning")),
    conda:
        "../envs/mtlrec.yaml"
    log:
        "logs/tuning/{experiment}.log",
    shell:
        "{params.cmd} > {log} 2>&1"
