# Shared helpers: validate the config once, fix the output root, and hand the merged params to the
# package (every rule calls `mtlrec ... --params PARAMS_FILE` and reads only its section).

import yaml

from mtlrec.config import check_cross_references, resolve_model, validate
from mtlrec.errors import MtlrecError
from mtlrec.models import MODELS

try:
    validate(config)
    check_cross_references(config)
except MtlrecError as exc:
    raise WorkflowError(str(exc)) from None

ROOT = config["paths"]["root"].rstrip("/")
OUT = "" if ROOT == "." else f"{ROOT}/"  # prefix of every output path ('' for the repo root)
PARAMS_FILE = f"{OUT}.mtlrec/params.resolved.yaml"
REPORT = config["report"]
TABLE2 = REPORT["table2"]
DATASET = TABLE2["dataset"]
SEEDS = config["train"]["seeds"]


def run_files(dataset, run_names, seeds, name):
    """The `name` file (metrics.json, model.pt) of every (run, seed) pair."""
    return expand(
        f"{OUT}runs/{dataset}/{{run}}/seed={{seed}}/{name}", run=run_names, seed=seeds
    )


def mask_input(wildcards):
    """{'masks': masks.pt of the run's seed} for a model that trains on masks, else {}."""
    model, _ = resolve_model(config, wildcards.model)
    if not MODELS[model].needs_masks:
        return {}
    return {"masks": f"{OUT}runs/{wildcards.dataset}/masks/seed={wildcards.seed}/masks.pt"}


def write_resolved_params(path, params):
    """Write the merged config (params.yaml + profile overlays + --config) if it changed."""
    text = yaml.safe_dump(params, sort_keys=True)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    if not os.path.exists(path) or open(path).read() != text:
        tmp = f"{path}.tmp"
        with open(tmp, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)


write_resolved_params(PARAMS_FILE, config)
