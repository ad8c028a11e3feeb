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

.PHONY: demo test test-min install bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -e '.[test]'
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/geoseg demo

# fiboa's validator pins older pyarrow/fsspec than geoseg's, so it gets a venv of its own;
# tests/io/test_fiboa.py runs it through GEOSEG_FIBOA_PYTHON.
FIBOA := .venv-fiboa
$(FIBOA)/.installed:
	@test -x $(FIBOA)/bin/python || $(PYTHON) -m venv $(FIBOA)
	$(FIBOA)/bin/python -m pip install --disable-pip-version-check -q 'fiboa-cli==0.21.0'
	@touch $@

test: $(STAMP) $(FIBOA)/.installed
	GEOSEG_FIBOA_PYTHON=$(FIBOA)/bin/python $(PY) -m pytest -n auto --dist loadfile -q

# The suite again on the lowest version of every direct dependency that pyproject.toml allows
# (uv's lowest-direct resolution), in its own venv; CI runs it as .ci/min-versions.
MINVENV := .venv-min
test-min: $(FIBOA)/.installed
	@test -x $(MINVENV)/bin/python || $(PYTHON) -m venv $(MINVENV) $(FIBOA)
	$(MINVENV)/bin/python -m pip install --disable-pip-version-check -q uv
	$(MINVENV)/bin/uv pip install -q --python $(MINVENV)/bin/python --resolution lowest-direct -e '.[test]'
	$(MINVENV)/bin/python -m pip list --disable-pip-version-check 2>/dev/null | grep -iE '^(numpy|rasterio|geopandas|shapely|pyproj|pyogrio|pyarrow|dask|distributed|bokeh|segmentation|safetensors|pyyaml|click|rich|scipy|duckdb|matplotlib) '
	GEOSEG_FIBOA_PYTHON=$(FIBOA)/bin/python $(MINVENV)/bin/python -m pytest -n auto --dist loadfile -q -p no:cacheprovider

bench: $(STAMP)
	$(VENV)/bin/geoseg bench --out benchmarks/results/latest.json

clean:
	rm -rf demo runs .pytest_cache .hypothesis $(MINVENV) $(FIBOA)
