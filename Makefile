# Fresh machine, nothing but Python 3.10+ and make:  `make demo`  or  `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The torch build to install; override for another platform, e.g. TORCH="torch torchvision".
TORCH ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.lossbench-installed

.PHONY: setup demo test bench clean

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

# Speed benchmarks, small counts, the reference workload first (python -m benchmarks calibrate prints it alone;
# without --quick: the full sizes; --gpu for CUDA).
bench: $(STAMP)
	$(BIN)/python -m benchmarks --quick

clean:
	rm -rf $(VENV) runs .pytest_cache
