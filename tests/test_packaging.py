"""pyproject.toml and environment.yml declare the same packages; the layout is as documented."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

# conda-forge names that differ from PyPI names.
CONDA_TO_PYPI = {"pytorch": "torch", "distributed": "dask", "python-duckdb": "duckdb"}
# conda-only packages: the interpreter, GDAL (bundled in rasterio's wheels on PyPI), pip itself.
CONDA_ONLY = {"python", "gdal", "pip"}


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pins(reqs: list[str]) -> dict[str, str]:
    out = {}
    for r in reqs:
        m = re.search(r"==\s*([\w.]+)", r)
        if m:
            out[_name(r)] = m.group(1)
    return out


def _pyproject() -> tuple[set[str], dict[str, str]]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    reqs = list(data["project"]["dependencies"]) + [r for v in data["project"]["optional-dependencies"].values() for r in v]
    return {_name(r) for r in reqs}, _pins(reqs)


def _conda() -> tuple[set[str], dict[str, str]]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"]
    reqs = [d for d in env["dependencies"] if isinstance(d, str)]
    pip_section = [d for d in env["dependencies"] if isinstance(d, dict)]
    for section in pip_section:
        reqs += section.get("pip", [])
    names = {CONDA_TO_PYPI.get(_name(r), _name(r)) for r in reqs} - CONDA_ONLY
    pins = {CONDA_TO_PYPI.get(k, k): v for k, v in _pins(reqs).items()}
    return names, pins


def test_environment_yml_lists_what_pyproject_lists():
    py_names, py_pins = _pyproject()
    conda_names, conda_pins = _conda()
    assert py_names == conda_names, (
        f"only in pyproject.toml: {sorted(py_names - conda_names)}; "
        f"only in environment.yml: {sorted(conda_names - py_names)}"
    )
    assert py_pins == conda_pins
    assert py_pins["torch"] == "2.14.1" and py_pins["torchvision"] == "0.29.1"


def test_layout_is_as_the_user_asked():
    for p in ["geoseg/__init__.py", "workflows", "tiles/README.md", "tests", "environment.yml", "README.md",
              "pyproject.toml", "Makefile", ".ci/run"]:
        assert (ROOT / p).exists(), p
    ignore = (ROOT / ".gitignore").read_text().split()
    assert {".venv/", "runs/", "tiles/*", "!tiles/README.md"} <= set(ignore)


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make demo" in readme
    assert "make test" in (ROOT / ".ci/run").read_text()


def test_readme_documents_every_command():
    from geoseg.cli.main import cli

    readme = (ROOT / "README.md").read_text()
    for name in cli.commands:
        assert f"### `geoseg {name}" in readme, f"README has no section for `geoseg {name}`"
        assert f"| `geoseg {name}` |" in readme, f"README's command table lacks `geoseg {name}`"


def test_the_dask_dashboard_a_run_prints_is_served():
    """`geoseg run` prints the dashboard address; without bokeh Dask serves only a page asking for it."""
    import logging
    import urllib.request

    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0",
                      silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        with urllib.request.urlopen(client.dashboard_link, timeout=30) as page:
            body = page.read().decode("utf-8", "replace")
    assert "needs bokeh" not in body and "Dask" in body, body[:300]
