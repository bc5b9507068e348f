# The report notebook, executed with papermill: tables, validation curves, ablation, EM, t-SNE.
rule report:
    input:
        rules.table2.output,
        rules.ablation.output,
        rules.em_report.output,
        rules.tsne.output,
        notebook="notebooks/report.ipynb",
    output:
        f"{OUT}results/report/report_{DATASET}.ipynb",
    log:
        f"{OUT}logs/report.log",
    shell:
        "papermill {input.notebook} {output} -k python3 -p root {ROOT} -p dataset {DATASET}"
        " > {log} 2>&1"
