# Two entry points for a fresh machine: `make demo` and `make test`.
# Each creates .venv and installs what it needs; torch==2.13.0 takes the CPU wheel on disk.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test bench bench-quality clean deploy-tools constraints audit

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Versions pinned by constraints.txt: the same packages on every machine and in CI.
.stamp-install: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt -e '.[embedded,report,test]'
	touch $@

demo: .stamp-install
	$(BIN)/anomon demo

# promtool, amtool and prometheus for the deploy/ checks (Debian's packages; CI runs as root).
deploy-tools:
	@command -v promtool >/dev/null && command -v amtool >/dev/null && command -v prometheus >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    prometheus prometheus-alertmanager; }

# Two workers: most tests wait on the broker (group joins, timeouts), so two halve the run
# (597 tests: 17 min 32 s in one process, 9 min 32 s in two, on 2 cores); each worker starts its own broker.
test: .stamp-install deploy-tools
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n 2 --dist worksteal

bench: .stamp-install
	$(BIN)/python bench/suite.py

bench-quality: .stamp-install
	$(BIN)/python bench/quality.py

# After a dependency change in pyproject.toml: re-pin what the venv resolved (review the diff).
constraints: .stamp-install
	{ sed -n '/^#/p' constraints.txt; $(BIN)/pip freeze --exclude-editable | grep -v '^#'; } > constraints.tmp
	mv constraints.tmp constraints.txt

# Known vulnerabilities in the pinned versions. pip-audit asks an online database (PyPI/OSV), so this
# needs network access (with --strict it fails when a package could not be checked); not part of `make test`.
# It lives in its own venv, so that its dependencies never end up in constraints.txt.
audit:
	test -x .venv-audit/bin/pip-audit || { $(PYTHON) -m venv .venv-audit && .venv-audit/bin/pip install --quiet pip-audit; }
	.venv-audit/bin/pip-audit --requirement constraints.txt --no-deps --disable-pip --strict

clean:
	rm -rf $(VENV) .venv-audit .stamp-install models reports
