# mtlrec: raw data -> encoded features -> training runs -> tables, figures, report notebook.
# `snakemake --cores all` builds every experiment in params `build`; the CI profile runs the same
# DAG on tiny data: `snakemake --cores all --profile workflow/profiles/ci`. The DAG itself (paths,
# commands, params keys, code) is src/mtlrec/workflow.py, shared with dvc.yaml.
from snakemake.utils import min_version

min_version("9.0")


configfile: f"{workflow.basedir}/params.yaml"  # absolute: read again after `workdir` (--report)


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/masks.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/tuning.smk"
include: "workflow/rules/reports.smk"
include: "workflow/rules/ranking.smk"
include: "workflow/rules/publish.smk"


rule all:
    input:
        dag.final_outputs(config),
    default_target: True
