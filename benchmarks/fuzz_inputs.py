"""Fuzz the input readers: workflow files, rasters and district boundaries.

Hypothesis generates the inputs; every call must either succeed or raise a documented
error (a :class:`geoseg.errors.GeosegError` subclass: ``ConfigError``, ``RasterReadError``,
``VectorReadError``, ``DistrictError``, ...). Anything else (a raw ``KeyError``, a GDAL
exception that slipped through, a crash) is counted as unexpected and printed with its input.

    python benchmarks/fuzz_inputs.py                  # about 4,000 cases
    python benchmarks/fuzz_inputs.py --cases 200 --json fuzz.json

Targets (``--cases`` scales each; the default 1000 gives 4,000 cases in all):

* ``workflow``  ``load_workflow`` on random YAML documents built from the real keys and random
  values (1x cases) and on random bytes / random text (1x cases);
* ``raster``    ``raster_info``, ``open_raster`` + ``read_tile`` (every tile of a 64 px grid, up to
  16) on random bytes and on copies of real GeoTIFFs (``tests/data/RGB.byte.tif`` and small
  tiled / striped / COG crops of it) truncated at a random offset or with random bytes flipped;
* ``districts`` ``read_districts`` on random bytes, mutated GeoJSON text and random GeoJSON
  structures.

Exit status 1 when any unexpected exception occurred.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import rasterio
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from geoseg.errors import GeosegError  # noqa: E402
from geoseg.grid import tile_grid  # noqa: E402
from geoseg.io import open_raster, raster_info, read_tile  # noqa: E402
from geoseg.vector_io import read_districts  # noqa: E402
from geoseg.workflow.config import load_workflow  # noqa: E402

DOCUMENTED: tuple[type[BaseException], ...] = (GeosegError,)


class Tally:
    def __init__(self) -> None:
        self.cases: Counter[str] = Counter()
        self.ok: Counter[str] = Counter()
        self.documented: Counter[str] = Counter()
        self.kinds: dict[str, Counter[str]] = {}
        self.unexpected: list[dict[str, Any]] = []

    def call(self, target: str, what: str, fn: Any, shown_input: Any) -> None:
        self.cases[target] += 1
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fn()
        except DOCUMENTED as e:
            self.documented[target] += 1
            self.kinds.setdefault(target, Counter())[type(e).__name__] += 1
        except Exception as e:  # noqa: BLE001 - that is what we count
            self.unexpected.append({
                "target": target, "what": what, "error": f"{type(e).__name__}: {e}"[:500],
                "input": repr(shown_input)[:400], "where": traceback.format_exc().splitlines()[-3:],
            })
        else:
            self.ok[target] += 1


def _settings(n: int) -> Any:
    return settings(max_examples=n, deadline=None, database=None, derandomize=False,
                    phases=[Phase.generate], suppress_health_check=list(HealthCheck))


# ------------------------------------------------------------------ workflow files

_KEYS = ["name", "scenes", "model", "tile", "overlap", "batch_size", "tiles_per_task", "device", "districts",
         "outputs", "cluster", "store", "runs_dir", "crs", "description", "colour"]
_SUB = {
    "districts": ["path", "name_field", "bogus"],
    "outputs": ["mask", "confidence", "fields", "min_area_ha", "exclude_classes", "district_areas", "report", "x"],
    "cluster": ["scheduler", "workers", "threads_per_worker", "memory_limit", "resources", "dashboard", "nope"],
}
_words = st.sampled_from(["scene.tif", "model", "t", "demo", "../x", "..", "/", "", "local", "tcp://127.0.0.1:1",
                          "EPSG:32643", "EPSG:0", "auto", "cpu", "cuda", "parquet", "gpkg", "kml", "d.gpkg",
                          "district", "GPU", "*.tif", "scène 1.tif", "~/nope", "a b", "-1", "1e9", "nan"])
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
                     _words, st.text(max_size=20))
_values = st.recursive(_scalars, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                        st.dictionaries(st.one_of(_words, st.text(max_size=5)), kids,
                                                                        max_size=4)), max_leaves=12)


def _value_for(key: str) -> Any:
    if key in _SUB:
        return st.one_of(st.dictionaries(st.sampled_from(_SUB[key]), _values, max_size=5), _values)
    if key == "scenes":
        item = st.one_of(_words, st.dictionaries(st.sampled_from(["path", "glob", "stack", "name", "x"]),
                                                 st.one_of(_words, st.lists(_words, max_size=3)), max_size=3), _values)
        return st.one_of(st.lists(item, max_size=3), _values)
    return st.one_of(_words, _values)


_workflow_docs = st.dictionaries(st.sampled_from(_KEYS), st.just(None), max_size=len(_KEYS)).flatmap(
    lambda d: st.fixed_dictionaries({k: _value_for(k) for k in d}))
_base_doc = {"name": "t", "scenes": ["scene.tif"], "model": "model", "tile": 64, "overlap": 16,
             "outputs": {"fields": [], "district_areas": False}}


def fuzz_workflow(tally: Tally, work: Path, n: int) -> None:
    proj = work / "project"
    proj.mkdir()
    _make_project(proj)
    wf = proj / "wf.yaml"

    @given(doc=_workflow_docs, start=st.booleans())
    @_settings(n)
    def docs(doc: dict[str, Any], start: bool) -> None:
        d = {**_base_doc, **doc} if start else doc  # half start from a valid workflow and change keys
        try:
            text = yaml.safe_dump(d, allow_unicode=True)
        except (yaml.YAMLError, ValueError, OverflowError):
            return
        wf.write_text(text, encoding="utf-8")
        tally.call("workflow", "yaml doc", lambda: load_workflow(wf, check_inputs=True), d)

    @given(data=st.one_of(st.binary(max_size=400), st.text(max_size=300).map(lambda s: s.encode("utf-8", "replace")),
                          st.lists(st.sampled_from(["name: t\n", "scenes:\n", "  - scene.tif\n", "model: model\n",
                                                    "tile: 64\n", "{", "}", "[", "- ", ": ", "&a ", "*a\n", "!!binary ",
                                                    "!!python/object:os.system\n", "\t", "%YAML 1.1\n", "---\n",
                                                    "? ", "'", '"', "\\", "\x00", "é"]),
                                   max_size=30).map(lambda parts: "".join(parts).encode("utf-8"))))
    @_settings(n)
    def raw(data: bytes) -> None:
        wf.write_bytes(data)
        tally.call("workflow", "raw bytes", lambda: load_workflow(wf, check_inputs=True), data)

    docs()
    raw()


def _make_project(d: Path) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from affine import Affine

    from workflow_helpers import write_model, write_scene  # type: ignore[import-not-found]

    write_scene(d / "scene.tif", 80, 70, Affine(10, 0, 560000, 0, -10, 3420000))
    write_model(d / "model")


# ------------------------------------------------------------------ rasters


def _seeds(work: Path) -> list[bytes]:
    """Real GeoTIFFs to mutate: RGB.byte.tif, and 96 px crops of it as tiled, striped and COG files."""
    import rasterio.shutil
    from rasterio.windows import Window

    rgb = ROOT / "tests" / "data" / "RGB.byte.tif"
    out = [rgb.read_bytes()]
    with rasterio.open(rgb) as src:
        w = Window(300, 300, 96, 96)
        a = src.read(window=w)
        prof = src.profile | {"width": 96, "height": 96, "transform": src.window_transform(w)}
    for name, extra in (("tiled", {"tiled": True, "blockxsize": 32, "blockysize": 32, "compress": "deflate"}),
                        ("striped", {"tiled": False, "compress": None})):
        p = work / f"{name}.tif"
        with rasterio.open(p, "w", **{**prof, **extra}) as dst:
            dst.write(a)
        out.append(p.read_bytes())
    rasterio.shutil.copy(work / "tiled.tif", work / "cog.tif", driver="COG", BLOCKSIZE="32", OVERVIEWS="AUTO")
    out.append((work / "cog.tif").read_bytes())
    return out


def _read_all(path: Path) -> None:
    info = raster_info(path)
    with open_raster(path) as src:
        grid = tile_grid(info.shape, info.transform, size=64, overlap=8)
        for t in list(grid)[:16]:
            read_tile(src, t)


def fuzz_rasters(tally: Tally, work: Path, n: int) -> None:
    seeds = _seeds(work)
    path = work / "fuzz.tif"

    @given(data=st.binary(max_size=2000), header=st.booleans())
    @_settings(max(1, n // 4))
    def random_bytes(data: bytes, header: bool) -> None:
        path.write_bytes((b"II*\x00" + data) if header else data)  # half look like a little-endian TIFF
        tally.call("raster", "random bytes", lambda: _read_all(path), data[:64])

    @given(which=st.integers(0, len(seeds) - 1), mode=st.sampled_from(["truncate", "flip", "flip-header"]),
           where=st.floats(0, 1), flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), min_size=1,
                                                  max_size=8))
    @_settings(n - max(1, n // 4))
    def mutated(which: int, mode: str, where: float, flips: list[tuple[float, int]]) -> None:
        b = bytearray(seeds[which])
        if mode == "truncate":
            b = b[: int(where * len(b))]
        else:
            span = min(len(b), 600) if mode == "flip-header" else len(b)
            for pos, val in flips:
                b[min(int(pos * span), len(b) - 1)] = val
        path.write_bytes(bytes(b))
        tally.call("raster", f"{mode} seed {which}", lambda: _read_all(path),
                   {"seed": which, "mode": mode, "where": where, "flips": flips})

    random_bytes()
    mutated()


# ------------------------------------------------------------------ district boundaries


def _geojson_seed() -> str:
    return json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"district": "West", "n": 1},
         "geometry": {"type": "Polygon", "coordinates": [[[75.0, 30.0], [75.5, 30.0], [75.5, 30.5], [75.0, 30.5],
                                                          [75.0, 30.0]]]}},
        {"type": "Feature", "properties": {"district": "East", "n": 2},
         "geometry": {"type": "Polygon", "coordinates": [[[75.5, 30.0], [76.0, 30.0], [76.0, 30.5], [75.5, 30.5],
                                                          [75.5, 30.0]]]}},
    ]})


_coord = st.floats(allow_nan=True, allow_infinity=True, width=32)
_ring = st.lists(st.lists(_coord, min_size=0, max_size=3), max_size=6)
_geom = st.one_of(
    st.none(),
    st.fixed_dictionaries({"type": st.sampled_from(["Polygon", "MultiPolygon", "Point", "LineString", "Bogus"]),
                           "coordinates": st.one_of(st.lists(_ring, max_size=2), _ring, _coord, st.none())}),
    _values,
)
_feature = st.fixed_dictionaries({
    "type": st.sampled_from(["Feature", "Feature", "Nope"]),
    "properties": st.one_of(st.dictionaries(st.sampled_from(["district", "name", "n"]), _scalars, max_size=3),
                            st.none()),
    "geometry": _geom,
})
_collections = st.fixed_dictionaries({"type": st.sampled_from(["FeatureCollection", "Feature", "x"]),
                                      "features": st.one_of(st.lists(_feature, max_size=4), _values)})


def fuzz_districts(tally: Tally, work: Path, n: int) -> None:
    seed = _geojson_seed()
    crs = rasterio.crs.CRS.from_epsg(32643)

    def call(path: Path, shown: Any, what: str) -> None:
        tally.call("districts", what, lambda: read_districts(path, "district", crs=crs), shown)

    @given(data=st.binary(max_size=1500), ext=st.sampled_from([".geojson", ".gpkg", ".shp", ".fgb", ".json"]))
    @_settings(max(1, n // 3))
    def random_bytes(data: bytes, ext: str) -> None:
        p = work / f"d{ext}"
        p.write_bytes(data)
        call(p, data[:64], f"random bytes {ext}")

    @given(cut=st.floats(0, 1), edits=st.lists(st.tuples(st.floats(0, 1), st.sampled_from(
        list('{}[],:"0123456789.-eE') + ["null", "NaN", "true", " "])), max_size=6))
    @_settings(max(1, n // 3))
    def mutated(cut: float, edits: list[tuple[float, str]]) -> None:
        s = list(seed)
        for pos, ch in edits:
            s[min(int(pos * len(s)), len(s) - 1)] = ch
        text = "".join(s)
        text = text[: max(1, int(len(text) * (0.5 + cut / 2)))] if cut < 0.3 else text
        p = work / "m.geojson"
        p.write_text(text, encoding="utf-8")
        call(p, {"cut": cut, "edits": edits}, "mutated geojson")

    @given(doc=_collections)
    @_settings(n - 2 * max(1, n // 3))
    def structures(doc: Any) -> None:
        p = work / "s.geojson"
        try:
            p.write_text(json.dumps(doc, allow_nan=True), encoding="utf-8")
        except (ValueError, TypeError):
            return
        call(p, doc, "random geojson")

    random_bytes()
    mutated()
    structures()


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=1000, help="cases per target and kind (workflow gets 2x)")
    ap.add_argument("--only", choices=["workflow", "raster", "districts"], action="append")
    ap.add_argument("--json", type=Path, help="write the figures as JSON here")
    ap.add_argument("--show", type=int, default=5, help="unexpected exceptions to print")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("CPL_LOG", "/dev/null")  # GDAL's own chatter about the damaged files
    tally = Tally()
    seconds: dict[str, float] = {}
    work = Path(tempfile.mkdtemp(prefix="geoseg-fuzz-"))
    try:
        for target, fn in (("workflow", fuzz_workflow), ("raster", fuzz_rasters), ("districts", fuzz_districts)):
            if args.only and target not in args.only:
                continue
            d = work / target
            d.mkdir()
            t = time.perf_counter()
            fn(tally, d, args.cases)
            seconds[target] = time.perf_counter() - t
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    print(f"{'target':<10} {'cases':>6} {'accepted':>9} {'documented':>11} {'unexpected':>11} {'seconds':>8}  errors")
    for target in seconds:
        bad = sum(1 for u in tally.unexpected if u["target"] == target)
        kinds = ", ".join(f"{k} {v}" for k, v in tally.kinds.get(target, Counter()).most_common())
        rows.append({"target": target, "cases": tally.cases[target], "accepted": tally.ok[target],
                     "documented": tally.documented[target], "unexpected": bad, "seconds": round(seconds[target], 1),
                     "errors": dict(tally.kinds.get(target, Counter()))})
        print(f"{target:<10} {tally.cases[target]:>6} {tally.ok[target]:>9} {tally.documented[target]:>11} "
              f"{bad:>11} {seconds[target]:>8.1f}  {kinds}")
    total = sum(tally.cases.values())
    print(f"{'total':<10} {total:>6} {sum(tally.ok.values()):>9} {sum(tally.documented.values()):>11} "
          f"{len(tally.unexpected):>11} {sum(seconds.values()):>8.1f}")
    for u in tally.unexpected[: args.show]:
        print(f"\nUNEXPECTED in {u['target']} ({u['what']}): {u['error']}\n  input: {u['input']}\n  "
              + "\n  ".join(u["where"]))
    if args.json:
        args.json.write_text(json.dumps({"targets": rows, "cases": total, "unexpected": len(tally.unexpected),
                                         "unexpected_examples": tally.unexpected[:20]}, indent=2, default=str))
    return 1 if tally.unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
