# Two entry points for a fresh machine: `make demo` and `make test`.
# Each creates (or reuses) .venv by itself. torch/torchvision are installed first, pinned,
# with pip, so that no resolver downloads a different multi-gigabyte build.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: venv demo test lint bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

demo: venv
	$(VENV)/bin/levelset-rcnn demo

test: venv
	$(PY) -m pytest -q

lint: venv
	$(VENV)/bin/ruff check .

bench: venv
	$(PY) benchmarks/bench_chan_vese.py --json bench_results/chan_vese.json

clean:
	rm -rf $(VENV) build dist src/*.egg-info
