# Fresh machine, nothing but Python 3.10+ and make:  `make demo`  or  `make test`  (`make docs`: the site).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The torch build to install; override for another platform, e.g. TORCH="torch torchvision".
TORCH ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.lossbench-installed
DOCS_STAMP := $(VENV)/.lossbench-docs-installed

.PHONY: setup demo test bench docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/lossbench sweep recipes/quickstart.yaml --jobs 2

test: $(STAMP)
	$(BIN)/python -m pytest -n auto

$(DOCS_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[docs]'
	touch $@

# The documentation site, strict (nitpicky, warnings are errors) and offline, into docs/_build/html.
docs: $(DOCS_STAMP)
	$(BIN)/python -m sphinx -b html -E -n -W --keep-going -q docs docs/_build/html

# Speed benchmarks, small counts, the reference workload first (python -m benchmarks calibrate prints it alone;
# without --quick: the full sizes; --gpu for CUDA).
bench: $(STAMP)
	$(BIN)/python -m benchmarks --quick

clean:
	rm -rf $(VENV) runs .pytest_cache docs/_build docs/reference/generated
