# Two commands on a fresh machine: `make demo` and `make test`. Each sets itself up (idempotent: a
# stamp file per dependency group, redone only when pyproject.toml changes) and then runs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install --disable-pip-version-check -q
CORE   := $(VENV)/.zoo-core
NATTEN := $(VENV)/.zoo-natten
MM     := $(VENV)/.zoo-mm

.PHONY: setup mm demo test test-slow clean

setup: $(CORE)

$(CORE): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.14.1 torchvision==0.29.1
	$(PIP) -e '.[test,export]'
	touch $@

demo: setup
	$(PY) tools/demo.py

# OpenMMLab stack (mmdet/mmseg + mmcv with ops) for zoo.integrations; see tools/install_mm.sh
mm: $(MM)

$(MM): $(CORE) tools/install_mm.sh
	bash tools/install_mm.sh $(PY)
	touch $@

# NATTEN (fused neighborhood-attention kernels, optional; its wheel builds in ~15 s, tests skip its parity checks without it)
natten: $(NATTEN)

$(NATTEN): $(CORE)
	$(PIP) --no-build-isolation 'natten>=0.21,<0.22'
	touch $@

test: setup $(NATTEN) $(MM)
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-slow: setup $(NATTEN) $(MM)
	$(PY) -m pytest -q --runslow $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
