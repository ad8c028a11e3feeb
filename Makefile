# geoseg: the two commands a new machine needs.
#   make demo   create .venv if missing, install, run the main job on the bundled synthetic region
#   make test   create .venv if missing, install, run the whole test suite
# Both are idempotent: with .venv in place and pyproject.toml unchanged they skip the install.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.geoseg-installed
export HF_HUB_OFFLINE := 1
export PYTHONUNBUFFERED := 1

.PHONY: demo test install bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -e '.[test]'
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/geoseg demo

test: $(STAMP)
	$(PY) -m pytest -n auto --dist loadfile -q

bench: $(STAMP)
	$(VENV)/bin/geoseg bench --out benchmarks/results/latest.json

clean:
	rm -rf demo runs .pytest_cache .hypothesis
