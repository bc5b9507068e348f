# Raw files, verified by sha256 (bundled copy, local mirror, or the original URL).
rule fetch_census:
    output:
        train=f"{ROOT}/data/raw/census/census-income.data.gz",
        test=f"{ROOT}/data/raw/census/census-income.test.gz",
    params:
        section=config["data"]["census"]["mirror"],
        out=f"{ROOT}/data/raw/census",
    log:
        f"{ROOT}/logs/fetch_census.log",
    shell:
        "mtlrec fetch census --params {PARAMS_FILE} --out {params.out} > {log} 2>&1"


# Encoded features: parquet per split + schema.json (vocab sizes, feature types) that models read.
rule encode_census:
    input:
        train=rules.fetch_census.output.train,
        test=rules.fetch_census.output.test,
    output:
        train=f"{ROOT}/data/encoded/census/train.parquet",
        test=f"{ROOT}/data/encoded/census/test.parquet",
        schema=f"{ROOT}/data/encoded/census/schema.json",
    params:
        section=config["data"]["census"],
        raw=f"{ROOT}/data/raw/census",
        out=f"{ROOT}/data/encoded/census",
    log:
        f"{ROOT}/logs/encode_census.log",
    shell:
        "mtlrec encode census --params {PARAMS_FILE} --raw {params.raw} --out {params.out}"
        " > {log} 2>&1"
