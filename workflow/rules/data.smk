# Raw files of a dataset, verified by sha256 (bundled copy, local mirror, the original URL, or a
# user's table), then encoded: parquet per split + schema.json (vocab sizes, fields); each task's
# labels apart (its declared rule), so declaring a new task adds jobs and changes no file.
rule fetch:
    output:
        directory(dag.raw_dir("{dataset}")),
    params:
        tracked=lambda w: dag.param_values(config, dag.dataset_keys(config, w.dataset, "fetch")),
        cmd=lambda w: command(dag.fetch_cmd(w.dataset)),
    conda:
        "../envs/mtlrec.yaml"
    log:
        "logs/fetch/{dataset}.log",
    shell:
        "{params.cmd} > {log} 2>&1"


rule encode:
    input:
        raw=dag.raw_dir("{dataset}"),
    output:
        **dag.encoded_files("{dataset}"),
    params:
        tracked=lambda w: dag.param_values(config, dag.dataset_keys(config, w.dataset, "encode")),
        cmd=lambda w: command(dag.encode_cmd(w.dataset)),
    conda:
        "../envs/mtlrec.yaml"
    log:
        "logs/encode/{dataset}.log",
    shell:
        "{params.cmd} > {log} 2>&1"


rule encode_parts:  # a streamed dataset (reader `stream`): one folder of parts per split
    input:
        raw=dag.raw_dir("{dataset}"),
    output:
        **{k: (v if k == "schema" else directory(v))
           for k, v in dag.encoded_parts("{dataset}").items()},
    wildcard_constraints:
        dataset=STREAMED,
    params:
        tracked=lambda w: dag.param_values(config, dag.dataset_keys(config, w.dataset, "encode")),
        cmd=lambda w: command(dag.encode_cmd(w.dataset)),
    conda:
        "../envs/mtlrec.yaml"
    log:
        "logs/encode/{dataset}.log",
    shell:
        "{params.cmd} > {log} 2>&1"


rule labels_parts:
    input:
        raw=dag.raw_dir("{dataset}"),
    output:
        **{k: (v if k == "info" else directory(v))
           for k, v in dag.label_parts("{dataset}", "{task}").items()},
    wildcard_constraints:
        dataset=STREAMED,
    params:
        tracked=lambda w: dag.param_values(
            config, dag.dataset_keys(config, w.dataset, f"labels:{w.task}")
        ),
        cmd=lambda w: command(dag.labels_cmd(w.dataset, w.task)),
    conda:
        "../envs/mtlrec.yaml"
    log:
        "logs/labels/{dataset}/{task}.log",
    shell:
        "{params.cmd} > {log} 2>&1"


ruleorder: encode_parts > encode
ruleorder: labels_parts > labels


rule labels:
    input:
        raw=dag.raw_dir("{dataset}"),
    output:
        **dag.label_outputs("{dataset}", "{task}"),
    params:
        tracked=lambda w: dag.param_values(
            config, dag.dataset_keys(config, w.dataset, f"labels:{w.task}")
        ),
        cmd=lambda w: command(dag.labels_cmd(w.dataset, w.task)),
    conda:
        "../envs/mtlrec.yaml"
    log:
        "logs/labels/{dataset}/{task}.log",
    shell:
        "{params.cmd} > {log} 2>&1"
