# mtlrec: raw data -> encoded features -> training runs -> LaTeX tables.
# `snakemake --cores all` reproduces the paper tables; the CI profile runs the same DAG on tiny data:
# `snakemake --cores all --profile workflow/profiles/ci`.
from snakemake.utils import min_version

min_version("9.0")


configfile: "params.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/masks.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/tables.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        rules.table2.output,
        rules.ablation.output,
        rules.em_report.output,
        rules.tsne.output,
        rules.report.output,
