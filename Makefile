# One command each: `make install`, then `snakemake --cores all` (or `make reproduce`), `make test`.
PYTHON ?= python3
VENV ?= .venv
PIP := $(VENV)/bin/pip

.PHONY: install install-bench reproduce reproduce-census reproduce-from-raw report snakemake-report ci-run test lint bench dvc-yaml clean-ci

install:  ## a virtual environment with the pinned CPU stack and the project (editable)
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade "pip>=24"
	$(PIP) install --quiet -c requirements/constraints.txt -e ".[dev]"
	$(VENV)/bin/python -c "import torch, mtlrec; print('mtlrec', mtlrec.__version__, '| torch', torch.__version__)"

install-bench: install  ## adds torch-rechub for the comparison benchmark
	$(PIP) install --quiet -c requirements/constraints.txt -e ".[dev,bench]"

reproduce:  ## whatever is missing of every table, report and page (README: what a clone needs)
	$(VENV)/bin/snakemake --cores all

CENSUS := results/tables/table2_census.md results/tables/ablation_census.md \
	results/figures/em_clusters_census.png results/figures/tsne_census.png

reproduce-census:  ## MPT-Rec Table 2 on Census (60 runs) from raw data, ~50 min on 2 cores
	$(VENV)/bin/snakemake $(CENSUS) --cores all --forceall

reproduce-from-raw:  ## everything again from the raw downloads, ignoring what exists (multi-day on 2 cores)
	$(VENV)/bin/snakemake --cores all --forceall

report:  ## the LaTeX document, the reproduction check and the HTML pages over what is built (no training)
	$(VENV)/bin/mtlrec publish latex
	$(VENV)/bin/mtlrec publish check
	$(VENV)/bin/mtlrec publish html --paper mptrec
	$(VENV)/bin/mtlrec publish html --paper pmtrec

snakemake-report:  ## Snakemake's report (registered figures and pages); needs every output built
	$(VENV)/bin/snakemake --report results/report/snakemake_report.html

ci-run:  ## the whole DAG on the tiny CI profile, into ci-out/
	$(VENV)/bin/snakemake --cores all --profile workflow/profiles/ci

test:
	$(VENV)/bin/pytest

lint:
	$(VENV)/bin/ruff check src tests benchmarks examples

dvc-yaml:  ## regenerate dvc.yaml from params.yaml and the DAG (after adding a run/experiment/dataset)
	$(VENV)/bin/mtlrec dag dvc --out dvc.yaml

bench:
	$(VENV)/bin/python benchmarks/bench_throughput.py

clean-ci:
	rm -rf ci-out
