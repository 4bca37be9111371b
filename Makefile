# Two commands do all setup on a fresh machine: `make demo` and `make test`.
# TORCH_SPEC pins the CPU build that CI installs from local disk; GPU users can run
# `make TORCH_SPEC= test` inside an environment that already has their CUDA torch.
VENV ?= .venv
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= text,image,tabular,serve,postgres,ann,plot,dev
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell echo '$(EXTRAS) $(TORCH_SPEC)' | cksum | cut -d' ' -f1)
PYTEST_ARGS ?=

.PHONY: demo test lint venv bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@if [ -n "$(TORCH_SPEC)" ]; then $(PY) -m pip install -q --disable-pip-version-check "$(TORCH_SPEC)"; fi
	$(PY) -m pip install -q --disable-pip-version-check -e ".[$(EXTRAS)]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m modalrec demo

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks

clean:
	rm -rf runs .cache .pytest_cache
