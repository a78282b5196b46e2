# Two front-door targets: `make demo` and `make test`. Both create .venv and install what they need.
# GPU users: install your CUDA torch into .venv first (or pass TORCH="torch==<ver>"), the CPU pin
# below is only used when .venv has no torch yet.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0+cpu
STAMP := $(VENV)/.installed

.PHONY: demo test lint venv clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	@$(PY) -c "import deepspeed" 2>/dev/null || DS_BUILD_OPS=0 $(PY) -m pip install -q --no-build-isolation "deepspeed>=0.15"
	$(PY) -m pip install -q -e ".[train,quant,serve,cluster,dev]"
	@touch $(STAMP)

venv: $(STAMP)

# The embedded demo: synthetic data -> train (a few CPU minutes, once) -> eval -> export -> two answers.
demo: $(STAMP)
	$(VENV)/bin/lisa demo --out demo_out

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# ruff (pyflakes, pycodestyle, import order; config in pyproject.toml), installed by the dev extra
lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) demo_out vis_output .pytest_cache
