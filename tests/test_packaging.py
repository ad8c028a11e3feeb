"""pyproject.toml and environment.yml declare the same packages; the layout is as documented."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

from geoseg.cli.main import cli

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


def test_the_licence_is_in_the_repository_and_matches_pyproject():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert data["project"]["license"] == {"text": "MIT"}
    assert (ROOT / "LICENSE").read_text().startswith("MIT License\n")


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make demo" in readme
    assert "make test" in (ROOT / ".ci/run").read_text()


def test_readme_documents_every_command():
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


# ------------------------------------------------------------------ the layers (docs/architecture.md)

# What each layer of the package may import from geoseg: a layer imports only downward. The
# base (errors, types, classes, strict_yaml) is shared by every layer.
BASE = ("geoseg.errors", "geoseg.types", "geoseg.classes", "geoseg.strict_yaml")
LAYERS: dict[str, tuple[str, ...]] = {
    "geoseg.core": BASE + ("geoseg.core",),
    "geoseg.io": BASE + ("geoseg.core", "geoseg.io", "geoseg.parallel"),
    "geoseg.parallel": BASE,
    "geoseg.ml": BASE + ("geoseg.core", "geoseg.io", "geoseg.parallel", "geoseg.ml"),
    "geoseg.ops": BASE + ("geoseg.core", "geoseg.io", "geoseg.parallel", "geoseg.ml", "geoseg.rundir", "geoseg.ops"),
    "geoseg.rundir": BASE + ("geoseg.io",),
    "geoseg.rundir_store": BASE + ("geoseg.io", "geoseg.rundir"),
    "geoseg.report": BASE + ("geoseg.core", "geoseg.io", "geoseg.ml", "geoseg.ops", "geoseg.rundir", "geoseg.report"),
}
# Third-party packages a layer never imports: the core opens no file and runs no model or cluster.
FORBIDDEN = {
    "geoseg.core": ("rasterio", "dask", "distributed", "torch", "segmentation_models_pytorch", "geopandas",
                    "pyogrio", "duckdb", "matplotlib", "click"),
    "geoseg.io": ("torch", "segmentation_models_pytorch", "dask", "distributed", "click"),
    "geoseg.ml": ("dask", "distributed", "click"),
    "geoseg.ops": ("click",),
    "geoseg.report": ("click", "distributed"),
}
# Own-module imports inside functions: only these, each deferring a module that loads torch.
DEFERRED = {("geoseg.cli.train", "geoseg.ml.train"), ("geoseg.cli.bench", "geoseg.bench"),
            ("geoseg.cli.demo", "geoseg.demo"), ("geoseg.ml.model", "geoseg.ml.temporal")}


def _imports(path: Path, mod: str) -> list[tuple[str, bool]]:
    """``(module, inside a function)`` for every import in module ``mod``, relative ones resolved."""
    import ast

    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out: list[tuple[str, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        nonlocal out
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                out += [(a.name, in_function) for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parts = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                out += [(base, in_function)] if child.module else [(f"{base}.{a.name}", in_function) for a in child.names]
            visit(child, inner)

    visit(ast.parse(path.read_text(encoding="utf-8")), False)
    return out


def _layer_violations(root: Path) -> list[str]:
    bad = []
    for path in sorted((root / "geoseg").rglob("*.py")):
        mod = ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
        layer = next((k for k in LAYERS if mod == k or mod.startswith(k + ".")), None)
        for name, in_function in _imports(path, mod):
            own = name == "geoseg" or name.startswith("geoseg.")
            if own and name.startswith("geoseg.cli") and not mod.startswith("geoseg.cli"):
                bad.append(f"{mod} imports {name}: nothing imports the command line")
            if own and in_function and (mod, name) not in DEFERRED:
                bad.append(f"{mod} imports {name} inside a function: own modules are imported at the top")
            if layer is None:
                continue
            if own and name != "geoseg" and not any(name == a or name.startswith(a + ".") for a in LAYERS[layer]):
                bad.append(f"{mod} imports {name}: the {layer} layer may import only {', '.join(LAYERS[layer])}")
            top = name.split(".")[0]
            if top in FORBIDDEN.get(layer, ()):
                bad.append(f"{mod} imports {name}, which the {layer} layer never imports")
    return bad


def test_each_layer_imports_only_downward():
    assert _layer_violations(ROOT) == []


def test_the_layer_check_catches_a_broken_rule(tmp_path):
    """The check fails on a tree where the core opens a raster and reaches up into the workflow."""
    import shutil

    shutil.copytree(ROOT / "geoseg", tmp_path / "geoseg", ignore=shutil.ignore_patterns("__pycache__"))
    grid = tmp_path / "geoseg" / "core" / "grid.py"
    grid.write_text(grid.read_text() + "\nimport rasterio\nfrom geoseg.workflow.run import run_workflow\n")
    store = tmp_path / "geoseg" / "io" / "raster.py"
    store.write_text(store.read_text() + "\n\ndef f():\n    from geoseg.ml.model import read_card\n")
    assert _layer_violations(tmp_path) == [
        "geoseg.core.grid imports rasterio, which the geoseg.core layer never imports",
        "geoseg.core.grid imports geoseg.workflow.run: the geoseg.core layer may import only "
        + ", ".join(LAYERS["geoseg.core"]),
        "geoseg.io.raster imports geoseg.ml.model inside a function: own modules are imported at the top",
        "geoseg.io.raster imports geoseg.ml.model: the geoseg.io layer may import only " + ", ".join(LAYERS["geoseg.io"]),
    ]


def test_every_geoseg_name_the_docs_and_docstrings_give_exists():
    """``geoseg.x.y`` in the README, docs/, docstrings, tests and benchmarks (the scripts the
    tests run in subprocesses included) names a module or object that exists, so that moving a
    function cannot leave the map, or a test, pointing at an empty room."""
    import importlib

    # strings that look like dotted names but are not: a logger and a Dask token prefix
    not_names = {"geoseg.run", "geoseg._BlockJob", "geoseg.x.y"}
    texts = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "README.md",
             *sorted((ROOT / "geoseg").rglob("*.py")), *sorted((ROOT / "tests").rglob("*.py")),
             *sorted((ROOT / "benchmarks").glob("*.py"))]
    missing = []
    for path in texts:
        for ref in sorted(set(re.findall(r"\bgeoseg(?:\.[A-Za-z_]\w*)+", path.read_text(encoding="utf-8"))) - not_names):
            parts = ref.split(".")
            for i in range(len(parts), 0, -1):
                try:
                    obj = importlib.import_module(".".join(parts[:i]))
                except ImportError:
                    continue
                try:
                    for attr in parts[i:]:
                        obj = getattr(obj, attr)
                except AttributeError:
                    missing.append(f"{path.relative_to(ROOT)}: {ref}")
                break
    assert missing == []
