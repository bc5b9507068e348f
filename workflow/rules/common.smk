# Shared set-up: validate the config once, run every job inside the output root (params
# paths.root), and hand the merged params to the package (each job calls
# `mtlrec ... --params PARAMS_FILE` and reads only its sections). Every path, command and params
# key comes from mtlrec.workflow, the one definition of the DAG (dvc.yaml is rendered from it).

import re

import yaml

from mtlrec import workflow as dag
from mtlrec.config import check_cross_references, deep_merge, validate
from mtlrec.errors import MtlrecError

def stack_profile_overlay(config, workflow):
    """A profile names its params overlay twice: as its `configfile` and as the config key
    `mtlrec_profile_params`. A `--configfile` on the command line replaces the profile's
    configfile list, so the overlay is merged here again: params.yaml < the profile's overlay <
    each --configfile < --config. Without the key (no profile) the config is left as it is."""
    overlay = config.pop("mtlrec_profile_params", None)
    if overlay is None:
        return
    users = [f for f in workflow.overwrite_configfiles
             if os.path.abspath(f) != os.path.abspath(overlay)]
    merged = {}
    for path in ["params.yaml", overlay, *users]:
        with open(path) as handle:
            merged = deep_merge(merged, yaml.safe_load(handle) or {})
    settings = {k: v for k, v in (workflow.config_settings.overwrite_config or {}).items()
                if k != "mtlrec_profile_params"}
    merged = deep_merge(merged, settings)
    config.clear()
    config.update(merged)


stack_profile_overlay(config, workflow)

try:
    validate(config)
    check_cross_references(config)
except MtlrecError as exc:
    raise WorkflowError(str(exc)) from None

REPO = workflow.basedir  # the Snakefile's folder: notebooks/, resources/
PARAMS_FILE = ".mtlrec/params.resolved.yaml"  # relative to the output root
# the datasets encoded in parts (reader `stream`): their own encode/labels rules (data.smk)
STREAMED = "|".join(re.escape(d) for d in config["datasets"] if dag.is_streamed(config, d)) or "(?!)"


workdir: config["paths"]["root"]


def command(template):
    """A workflow.py command template with this run's params file and repository filled in."""
    return dag.fill(template, PARAMS_FILE, REPO)


def write_resolved_params(path, params):
    """Write the merged config (params.yaml + profile overlays + --config) if it changed."""
    text = yaml.safe_dump(params, sort_keys=True)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    if not os.path.exists(path) or open(path).read() != text:
        tmp = f"{path}.tmp"
        with open(tmp, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)


# Written when the workflow starts running jobs, not when it is only parsed: a dry run (say with
# another configfile) must not change the params the jobs of a running pipeline read.
onstart:
    write_resolved_params(PARAMS_FILE, config)


wildcard_constraints:
    dataset=r"[A-Za-z][A-Za-z0-9_]*",
    experiment=r"[A-Za-z][A-Za-z0-9_]*",
    run=r"(?!masks$)(?!newtask-)[A-Za-z][A-Za-z0-9_-]*",
    method=r"[A-Za-z][A-Za-z0-9_]*",
    task=r"[A-Za-z][A-Za-z0-9_]*",
    seed=r"\d+",


def registered_outputs(kind):
    """A report's outputs, its figures registered for `snakemake --report` (captioned by
    workflow/report/figure.rst, grouped by experiment)."""
    outputs = dag.report_outputs("{experiment}", kind)
    return {name: report(path, caption="../report/figure.rst", category="{experiment}",
                         labels={"figure": kind})
            if name == "png" else path for name, path in outputs.items()}
