# Raw files of a dataset, verified by sha256 (bundled copy, local mirror, the original URL, or a
# user's table), then encoded: parquet per split + schema.json (vocab sizes, fields, tasks).
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
