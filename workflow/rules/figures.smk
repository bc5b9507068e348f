# MPT-Rec ablation (Share / Specific / -GAN, Fig. 4): a table and a bar plot.
rule ablation:
    input:
        run_files(REPORT["ablation"]["dataset"], REPORT["ablation"]["models"], SEEDS, "metrics.json"),
    output:
        tex=f"{OUT}results/tables/ablation_{REPORT['ablation']['dataset']}.tex",
        md=f"{OUT}results/tables/ablation_{REPORT['ablation']['dataset']}.md",
        png=f"{OUT}results/figures/ablation_{REPORT['ablation']['dataset']}.png",
    params:
        section=REPORT["ablation"],
    log:
        f"{OUT}logs/ablation.log",
    shell:
        "mtlrec report ablation --params {PARAMS_FILE} --runs {OUT}runs"
        " --tables {OUT}results/tables --figures {OUT}results/figures > {log} 2>&1"


# EM pseudo task labels: cluster sizes per epoch and changes per E-step round.
rule em_report:
    input:
        run_files(REPORT["em"]["dataset"], [REPORT["em"]["model"]], SEEDS, "metrics.json"),
    output:
        md=f"{OUT}results/tables/em_history_{REPORT['em']['dataset']}.md",
        png=f"{OUT}results/figures/em_clusters_{REPORT['em']['dataset']}.png",
    params:
        section=REPORT["em"],
    log:
        f"{OUT}logs/em_report.log",
    shell:
        "mtlrec report em --params {PARAMS_FILE} --runs {OUT}runs"
        " --tables {OUT}results/tables --figures {OUT}results/figures > {log} 2>&1"


# t-SNE of task-sharing vs task-specific representations (Fig. 6), first seed's checkpoints.
rule tsne:
    input:
        run_files(REPORT["tsne"]["dataset"], REPORT["tsne"]["models"], SEEDS[:1], "model.pt"),
        schema=f"{OUT}data/encoded/{REPORT['tsne']['dataset']}/schema.json",
    output:
        png=f"{OUT}results/figures/tsne_{REPORT['tsne']['dataset']}.png",
    params:
        section=REPORT["tsne"],
        data=f"{OUT}data/encoded/{REPORT['tsne']['dataset']}",
    threads: REPORT["tsne"]["threads"]  # the t-SNE runs exactly this many (its result depends on it)
    log:
        f"{OUT}logs/tsne.log",
    shell:
        "mtlrec report tsne --params {PARAMS_FILE} --runs {OUT}runs --data {params.data}"
        " --tables {OUT}results/tables --figures {OUT}results/figures > {log} 2>&1"
