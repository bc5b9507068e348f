# Over every experiment in `build`: results/paper_tables.tex (all LaTeX tables in one document),
# the reproduction check (docs/reproduction.md, results/reproduction.csv) and one HTML report per
# paper (results/report/<paper>.html). The check's one-line summary is printed at the end.
rule publish_latex:
    input:
        dag.publish_inputs(config, "latex"),
    output:
        dag.publish_outputs(config)["latex"],
    params:
        cmd=command(dag.publish_cmd("latex")),
    log:
        "logs/publish/latex.log",
    shell:
        "{params.cmd} > {log} 2>&1"


rule publish_check:
    input:
        dag.publish_inputs(config, "check"),
    output:
        md=dag.publish_outputs(config)["check_md"],
        csv=dag.publish_outputs(config)["check_csv"],
    params:
        tracked=dag.param_values(config, ["reproduction"]),
        cmd=command(dag.publish_cmd("check")),
    log:
        "logs/publish/check.log",
    shell:
        "{params.cmd} > {log} 2>&1"


rule publish_html:
    input:
        lambda w: dag.publish_inputs(config, f"html_{w.paper}"),
    output:
        report(
            "results/report/{paper}.html",
            caption="../report/html.rst",
            category="Reports",
        ),
    params:
        tracked=dag.param_values(config, ["reproduction", "display.names"]),
        cmd=lambda w: command(dag.publish_cmd(f"html_{w.paper}")),
    wildcard_constraints:
        paper="mptrec|pmtrec",
    log:
        "logs/publish/html_{paper}.log",
    shell:
        "{params.cmd} > {log} 2>&1"


onsuccess:
    check = dag.publish_outputs(config)["check_md"]
    if os.path.exists(check):
        for line in open(check):
            if line.startswith("**reproduction check"):
                print(line.strip().strip("*"), f"(every cell: {check})")
