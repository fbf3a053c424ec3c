# Set-up and jobs. `make demo` and `make test` each create the local virtual environment (.venv)
# on first use, so both work from a fresh clone.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install demo test clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -e '.[test]'
	touch $@

demo: install
	$(PY) -m kdsr_pdd demo

test: install
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) experiments results tb_logger datasets/demo
