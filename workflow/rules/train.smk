# One training run per (model or variant, seed): best-validation checkpoint + metrics.json
# (+ timing.json). A variant (params `variants`) is a registered model with some keys replaced.
# Models that train on subnetwork masks (Sparse Sharing, CSRec) also take that seed's masks.
rule train:
    input:
        unpack(mask_input),
        train=f"{OUT}data/encoded/{{dataset}}/train.parquet",
        test=f"{OUT}data/encoded/{{dataset}}/test.parquet",
        schema=f"{OUT}data/encoded/{{dataset}}/schema.json",
    output:
        model=f"{OUT}runs/{{dataset}}/{{model}}/seed={{seed}}/model.pt",
        metrics=f"{OUT}runs/{{dataset}}/{{model}}/seed={{seed}}/metrics.json",
    params:
        model_section=lambda w: resolve_model(config, w.model),
        train_section=config["train"],
        runtime_section=config["runtime"],
        data=f"{OUT}data/encoded/{{dataset}}",
        out=f"{OUT}runs/{{dataset}}/{{model}}/seed={{seed}}",
        masks=lambda w, input: f"--masks {input.masks}" if "masks" in input.keys() else "",
    wildcard_constraints:
        seed=r"\d+",
    threads: config["runtime"]["num_threads"]
    resources:
        mem_mb=4000,
    log:
        f"{OUT}logs/train/{{dataset}}/{{model}}/seed={{seed}}.log",
    shell:
        "mtlrec train --params {PARAMS_FILE} --model {wildcards.model} --seed {wildcards.seed}"
        " --data {params.data} --out {params.out} {params.masks} > {log} 2>&1"
