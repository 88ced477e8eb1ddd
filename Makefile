# Two entry points for a fresh machine: `make demo` and `make test`.
# Each creates .venv and installs what it needs; torch==2.13.0 takes the CPU wheel on disk.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

.stamp-install: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[embedded,report,test]'
	touch $@

demo: .stamp-install
	$(BIN)/anomon demo

test: .stamp-install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

bench: .stamp-install
	$(BIN)/python bench/nsl_kdd.py

clean:
	rm -rf $(VENV) .stamp-install models reports
