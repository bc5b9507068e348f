# One command each: `make install`, then `snakemake --cores all` (or `make reproduce`), `make test`.
PYTHON ?= python3
VENV ?= .venv
PIP := $(VENV)/bin/pip

.PHONY: install install-bench reproduce ci-run test lint bench dvc-yaml clean-ci

install:  ## a virtual environment with the pinned CPU stack and the project (editable)
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade "pip>=24"
	$(PIP) install --quiet -c requirements/constraints.txt -e ".[dev]"
	$(VENV)/bin/python -c "import torch, mtlrec; print('mtlrec', mtlrec.__version__, '| torch', torch.__version__)"

install-bench: install  ## adds torch-rechub for the comparison benchmark
	$(PIP) install --quiet -c requirements/constraints.txt -e ".[dev,bench]"

reproduce:  ## the paper tables (default profile)
	$(VENV)/bin/snakemake --cores all

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
