# Raw files, verified by sha256 (bundled copy, local mirror, or the original URL).
rule fetch_census:
    output:
        train=f"{OUT}data/raw/census/census-income.data.gz",
        test=f"{OUT}data/raw/census/census-income.test.gz",
    params:
        mirror=config["data"]["census"]["mirror"],  # a rerun trigger when the source changes
        out=f"{OUT}data/raw/census",
    log:
        f"{OUT}logs/fetch_census.log",
    shell:
        "mtlrec fetch census --params {PARAMS_FILE} --out {params.out} > {log} 2>&1"


# Encoded features: parquet per split + schema.json (vocab sizes, feature types) that models read.
rule encode_census:
    input:
        train=rules.fetch_census.output.train,
        test=rules.fetch_census.output.test,
    output:
        train=f"{OUT}data/encoded/census/train.parquet",
        test=f"{OUT}data/encoded/census/test.parquet",
        schema=f"{OUT}data/encoded/census/schema.json",
    params:
        section=config["data"]["census"],
        raw=f"{OUT}data/raw/census",
        out=f"{OUT}data/encoded/census",
    log:
        f"{OUT}logs/encode_census.log",
    shell:
        "mtlrec encode census --params {PARAMS_FILE} --raw {params.raw} --out {params.out}"
        " > {log} 2>&1"
