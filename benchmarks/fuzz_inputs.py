"""Fuzz the input readers: workflow files, rasters and district boundaries.

Hypothesis generates the inputs; every call must either succeed or raise a documented
error (a :class:`geoseg.errors.GeosegError` subclass: ``ConfigError``, ``RasterReadError``,
``VectorReadError``, ``DistrictError``, ...). Anything else (a raw ``KeyError``, a GDAL
exception that slipped through, a crash) is counted as unexpected and printed with its input.

    python benchmarks/fuzz_inputs.py                  # about 5,000 cases
    python benchmarks/fuzz_inputs.py --cases 200 --json fuzz.json

Targets (``--cases`` scales each; the default 1000 gives 5,000 cases in all):

* ``workflow``  ``load_workflow`` on random YAML documents built from the real keys and random
  values (1x cases) and on random bytes / random text (1x cases);
* ``raster``    ``raster_info``, ``open_raster`` + ``read_tile`` (every tile of a 64 px grid, up to
  16) on random bytes and on copies of real GeoTIFFs (``tests/data/RGB.byte.tif`` and small
  tiled / striped / COG crops of it) truncated at a random offset or with random bytes flipped;
* ``districts`` ``read_districts`` on random bytes, mutated GeoJSON text and random GeoJSON
  structures;
* ``yaml``      workflows and class files built to exhaust a parser: alias bombs of random width and
  depth, nesting up to 30,000 levels deep (flow and block style), repeated keys;
* ``sizes``     ``predict_scene`` on VRTs declaring random sizes up to 10^12 px, random band counts and
  data types (complex ones included), and ``stack_rasters`` of them into a GeoTIFF;
* ``cards``     ``load_checkpoint`` on model cards with random values for every key (in_channels and
  decoder channels up to 10^9, band statistics of the wrong length, NaN, no weights hash) and on
  damaged, truncated and NaN-holding weight files;
* ``writes``    ``predict_scene``, ``write_vector`` and ``write_table`` onto a real tmpfs of a random size
  (a few kB to a few hundred; skipped where the machine does not allow mounting): each result is
  whole and reads back, or the call fails and leaves nothing;
* ``outputs``   ``predict_scene``, ``stack_rasters`` and ``polygonize_file`` with outputs drawn from
  the inputs, links to them, VRTs reading them and each other: every call either refuses or leaves
  every input byte for byte as it was.

For every target the growth of the process's peak resident memory (VmHWM) while it ran is printed:
a hostile input must be refused before it can allocate. A single case slower than ``--slow`` seconds counts
as unexpected.

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

from geoseg.classes import default_classes, load_classes  # noqa: E402
from geoseg.core.grid import tile_grid  # noqa: E402
from geoseg.errors import GeosegError  # noqa: E402
from geoseg.io.districts import read_districts  # noqa: E402
from geoseg.io.raster import check_size, count_differences, input_files, open_raster, raster_info, read_tile  # noqa: E402
from geoseg.io.stack import stack_rasters  # noqa: E402
from geoseg.io.vector import read_table, read_vector, write_table, write_vector  # noqa: E402
from geoseg.ml.model import load_checkpoint  # noqa: E402
from geoseg.ops.polygonize import polygonize_file  # noqa: E402
from geoseg.ops.predict import predict_scene  # noqa: E402
from geoseg.workflow.config import load_workflow  # noqa: E402

DOCUMENTED: tuple[type[BaseException], ...] = (GeosegError,)


class Tally:
    def __init__(self) -> None:
        self.cases: Counter[str] = Counter()
        self.ok: Counter[str] = Counter()
        self.documented: Counter[str] = Counter()
        self.kinds: dict[str, Counter[str]] = {}
        self.unexpected: list[dict[str, Any]] = []

    slow = 30.0

    def call(self, target: str, what: str, fn: Any, shown_input: Any) -> None:
        self.cases[target] += 1
        t = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fn()
        except DOCUMENTED as e:
            self.documented[target] += 1
            self.kinds.setdefault(target, Counter())[type(e).__name__] += 1
            self._timed(target, what, t, shown_input)
        except Exception as e:  # noqa: BLE001 - that is what we count
            self.unexpected.append({
                "target": target, "what": what, "error": f"{type(e).__name__}: {e}"[:500],
                "input": repr(shown_input)[:400], "where": traceback.format_exc().splitlines()[-3:],
            })
        else:
            self.ok[target] += 1
            self._timed(target, what, t, shown_input)

    def _timed(self, target: str, what: str, t: float, shown_input: Any) -> None:
        took = time.perf_counter() - t
        if took > self.slow:  # a hostile input must be refused quickly, not after minutes of work
            self.unexpected.append({"target": target, "what": what, "error": f"took {took:.1f} s",
                                    "input": repr(shown_input)[:400], "where": []})

    def check(self, target: str, what: str, ok: bool, problem: str, shown_input: Any) -> None:
        """Count a broken invariant (a half-written output, a changed input) as unexpected."""
        if not ok:
            self.unexpected.append({"target": target, "what": what, "error": problem,
                                    "input": repr(shown_input)[:400], "where": []})


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (VmHWM), in MB."""
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _settings(n: int) -> Any:
    return settings(max_examples=n, deadline=None, database=None, derandomize=False,
                    phases=[Phase.generate], suppress_health_check=list(HealthCheck))


# ------------------------------------------------------------------ workflow files

_KEYS = ["name", "scenes", "model", "tile", "overlap", "batch_size", "tiles_per_task", "device", "districts",
         "outputs", "cluster", "store", "runs_dir", "crs", "description", "colour"]
_SUB = {
    "districts": ["path", "name_field", "bogus"],
    "outputs": ["mask", "confidence", "fields", "min_area_ha", "exclude_classes", "district_areas", "report", "observed", "x"],
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


# ------------------------------------------------------------------ YAML built to exhaust a parser


def _alias_bomb(width: int, depth: int) -> str:
    lines = ["a0: &a0 [" + ", ".join(['"lol"'] * width) + "]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]" for i in range(1, depth)]
    return "\n".join(lines) + "\n"


def _nested(depth: int, flow: bool) -> str:
    if flow:
        return "[" * depth + "]" * depth
    return "".join(f"{'  ' * i}k{i}:\n" for i in range(depth)) + "  " * depth + "x: 1\n"


def fuzz_yaml(tally: Tally, work: Path, n: int) -> None:
    proj = work / "project"
    (proj / "model").mkdir(parents=True)  # the paths exist; nothing is opened (check_inputs=False)
    (proj / "scene.tif").write_bytes(b"")
    wf, cf = proj / "wf.yaml", proj / "classes.yaml"
    valid_wf = yaml.safe_dump(_base_doc)
    valid_classes = default_classes().to_yaml()

    @given(kind=st.sampled_from(["bomb", "nest-flow", "nest-block", "repeat"]), width=st.integers(1, 40),
           depth=st.integers(1, 30_000), where=st.sampled_from(["workflow", "classes"]), before=st.booleans())
    @_settings(n)
    def hostile(kind: str, width: int, depth: int, where: str, before: bool) -> None:
        valid = valid_wf if where == "workflow" else valid_classes
        if kind == "bomb":
            extra = _alias_bomb(width, min(depth, 12))
        elif kind == "nest-flow":
            extra = "deep: " + _nested(depth, True) + "\n"
        elif kind == "nest-block":
            extra = _nested(min(depth, 2_000), False)
        else:
            key = valid.splitlines()[min(width, len(valid.splitlines()) - 1)].split(":")[0]
            extra = f"{key}: 1\n" if key and not key.startswith((" ", "-")) else "name: t\nname: u\n"
        text = extra + valid if before else valid + extra
        path = wf if where == "workflow" else cf
        path.write_text(text, encoding="utf-8")
        fn = (lambda: load_workflow(wf, check_inputs=False)) if where == "workflow" else (lambda: load_classes(cf))
        tally.call("yaml", f"{kind} {where}", fn, {"kind": kind, "width": width, "depth": depth, "before": before})

    hostile()


# ------------------------------------------------------------------ rasters that declare hostile sizes


_VRT_TYPES = ["Byte", "UInt16", "Int16", "UInt32", "Float32", "Float64", "CInt16", "CFloat32", "CFloat64", "Int8"]


def _vrt(path: Path, source: Path, w: int, h: int, bands: int, dtype: str) -> None:
    body = "".join(
        f'<VRTRasterBand dataType="{dtype}" band="{b}"><NoDataValue>0</NoDataValue><SimpleSource>'
        f'<SourceFilename relativeToVRT="0">{source}</SourceFilename><SourceBand>{(b - 1) % 4 + 1}</SourceBand>'
        f"</SimpleSource></VRTRasterBand>" for b in range(1, bands + 1))
    path.write_text(f'<VRTDataset rasterXSize="{w}" rasterYSize="{h}"><SRS>EPSG:32643</SRS>'
                    f"<GeoTransform>560000, 10, 0, 3420000, 0, -10</GeoTransform>{body}</VRTDataset>")


def fuzz_sizes(tally: Tally, work: Path, n: int) -> None:
    proj = work / "project"
    proj.mkdir()
    _make_project(proj)
    vrt, out = work / "v.vrt", work / "out"
    out.mkdir()
    cap = 200_000  # a small limit, so that sizes under it run quickly and sizes over it must be refused

    @given(w=st.one_of(st.integers(1, 600), st.integers(1, 10**6)), h=st.one_of(st.integers(1, 600), st.integers(1, 10**6)),
           bands=st.sampled_from([1, 3, 4, 4, 4, 5, 64]), dtype=st.sampled_from(_VRT_TYPES),
           target=st.sampled_from(["predict", "stack"]))
    @_settings(n)
    def sizes(w: int, h: int, bands: int, dtype: str, target: str) -> None:
        _vrt(vrt, proj / "scene.tif", w, h, bands, dtype)
        for f in out.iterdir():
            f.unlink()
        if target == "predict":
            fn = lambda: predict_scene(proj / "model", vrt, out / "m.tif", tile=64, max_pixels=cap)  # noqa: E731
        else:
            def fn() -> None:
                if w * h <= cap:  # stack_rasters has no limit argument: keep its copies small
                    stack_rasters(out / "s.tif", [vrt])
                else:

                    check_size(raster_info(vrt), cap)
        tally.call("sizes", target, fn, {"w": w, "h": h, "bands": bands, "dtype": dtype})

    sizes()


# ------------------------------------------------------------------ model cards and weight files


_card_values = st.one_of(_scalars, st.integers(-1, 10**9), st.lists(st.integers(-1, 10**9), max_size=6),
                         st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=6), _values)


def fuzz_cards(tally: Tally, work: Path, n: int) -> None:
    import numpy as np


    proj = work / "project"
    proj.mkdir()
    _make_project(proj)
    good = proj / "model"
    card = json.loads((good / "model.json").read_text())
    weights = (good / "model.safetensors").read_bytes()
    keys = sorted(card) + ["arch_kwargs.decoder_channels", "arch_kwargs.encoder_depth", "bogus"]
    m = work / "m"

    def fresh(card_doc: Any, blob: bytes) -> None:
        shutil.rmtree(m, ignore_errors=True)
        m.mkdir()
        (m / "model.json").write_text(json.dumps(card_doc, allow_nan=True, default=str))
        (m / "model.safetensors").write_bytes(blob)

    @given(changes=st.dictionaries(st.sampled_from(keys), st.one_of(_card_values, st.just(None)), min_size=1,
                                   max_size=4), drop=st.lists(st.sampled_from(sorted(card)), max_size=2))
    @_settings(max(1, n // 2))
    def cards(changes: dict[str, Any], drop: list[str]) -> None:
        doc = json.loads(json.dumps(card))
        for k, v in changes.items():
            if k.startswith("arch_kwargs.") and isinstance(doc.get("arch_kwargs"), dict):
                doc["arch_kwargs"][k.split(".", 1)[1]] = v
            else:
                doc[k] = v
        for k in drop:
            doc.pop(k, None)
        fresh(doc, weights)
        tally.call("cards", "card", lambda: load_checkpoint(m), {"changes": changes, "drop": drop})

    @given(mode=st.sampled_from(["truncate", "flip", "flip-header", "nan"]), where=st.floats(0, 1),
           flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), min_size=1, max_size=8),
           rehash=st.booleans())
    @_settings(n - max(1, n // 2))
    def blobs(mode: str, where: float, flips: list[tuple[float, int]], rehash: bool) -> None:
        import hashlib

        b = bytearray(weights)
        if mode == "truncate":
            b = b[: int(where * len(b))]
        elif mode == "nan":  # a float32 NaN in the tensor data (past the JSON header)
            start = 8 + int.from_bytes(weights[:8], "little")
            pos = start + 4 * int(where * (len(b) - start - 4) / 4)
            b[pos:pos + 4] = np.float32(np.nan).tobytes()
        else:
            span = min(len(b), 400) if mode == "flip-header" else len(b)
            for p, v in flips:
                b[min(int(p * span), len(b) - 1)] = v
        doc = dict(card)
        if rehash:  # a card that vouches for the damaged file: the loader must still refuse it
            doc["weights_sha256"] = hashlib.sha256(bytes(b)).hexdigest()
        fresh(doc, bytes(b))
        tally.call("cards", f"weights {mode}", lambda: load_checkpoint(m),
                   {"mode": mode, "where": where, "flips": flips, "rehash": rehash})

    cards()
    blobs()


# ------------------------------------------------------------------ writes onto a full disk


def fuzz_writes(tally: Tally, work: Path, n: int) -> None:
    import geopandas as gpd
    import pandas as pd
    from shapely.geometry import box


    sys.path.insert(0, str(ROOT / "tests"))
    from workflow_helpers import mount_tmpfs, umount  # type: ignore[import-not-found]

    proj = work / "project"
    proj.mkdir()
    _make_project(proj)
    predict_scene(proj / "model", proj / "scene.tif", proj / "ref.tif", confidence=proj / "refc.tif", tile=64)
    k = 600
    gdf = gpd.GeoDataFrame({"class_id": [i % 5 for i in range(k)], "name": [f"field {i}" for i in range(k)]},
                           geometry=[box(i, 0, i + 1, 1 + i % 7) for i in range(k)], crs="EPSG:32643")
    disk = work / "disk"
    if not mount_tmpfs(disk, "64k"):
        print("writes: cannot mount a tmpfs here (needs root): target skipped", file=sys.stderr)
        return
    umount(disk)

    @given(size_kb=st.integers(4, 160), what=st.sampled_from(["predict", "gpkg", "geojson", "shp", "fgb", "parquet",
                                                               "csv", "table.parquet"]))
    @_settings(n)
    def writes(size_kb: int, what: str) -> None:
        if not mount_tmpfs(disk, f"{size_kb}k"):
            return
        try:
            if what == "predict":
                target = disk / "m.tif"
                fn = lambda: predict_scene(proj / "model", proj / "scene.tif", target,  # noqa: E731
                                           confidence=disk / "c.tif", tile=64)
            elif what in ("csv", "table.parquet"):
                target = disk / f"t.{what.split('.')[-1]}"
                fn = lambda: write_table(pd.DataFrame(gdf.drop(columns="geometry")), target)  # noqa: E731
            else:
                target = disk / f"f.{what}"
                fn = lambda: write_vector(gdf, target)  # noqa: E731
            before = tally.unexpected[:]
            tally.call("writes", what, fn, {"size_kb": size_kb})
            left = sorted(p.name for p in disk.iterdir())
            if not target.exists():  # refused: nothing at all may be left
                tally.check("writes", what, left == [], f"left after a failure: {left}", size_kb)
            elif len(tally.unexpected) == len(before):  # published: it must be whole
                if what == "predict":
                    whole = (count_differences(target, proj / "ref.tif") == 0
                             and count_differences(disk / "c.tif", proj / "refc.tif") == 0)
                elif what in ("csv", "table.parquet"):
                    whole = len(read_table(target)) == k
                else:
                    whole = len(read_vector(target)) == k
                tally.check("writes", what, whole, "published an incomplete file", size_kb)
        finally:
            umount(disk)

    writes()


# ------------------------------------------------------------------ outputs drawn from the inputs


def fuzz_outputs(tally: Tally, work: Path, n: int) -> None:
    import hashlib


    proj = work / "project"
    proj.mkdir()
    _make_project(proj)
    predict_scene(proj / "model", proj / "scene.tif", proj / "mask.tif", tile=64)
    originals = {p: p.read_bytes() for p in (proj / "scene.tif", proj / "mask.tif")}

    def restore() -> None:
        for p, b in originals.items():
            if not p.exists() or p.read_bytes() != b:
                p.write_bytes(b)
        for name, target in (("scene-link.tif", "scene.tif"), ("mask-link.tif", "mask.tif")):
            q = proj / name
            if not q.is_symlink():
                q.unlink(missing_ok=True)
                q.symlink_to(target)
        hard = proj / "mask-hard.tif"
        if not hard.exists() or not os.path.samefile(hard, proj / "mask.tif"):
            hard.unlink(missing_ok=True)
            os.link(proj / "mask.tif", hard)
        if not (proj / "scene.vrt").exists():
            stack_rasters(proj / "scene.vrt", [proj / "scene.tif"])

    names = ["scene.tif", "scene-link.tif", "scene.vrt", "mask.tif", "mask-link.tif", "mask-hard.tif", "new.tif",
             "new.gpkg", "./scene.tif", "../project/mask.tif", "model/model.json"]
    paths = st.sampled_from(names).map(lambda s: proj / s)

    @given(cmd=st.sampled_from(["predict", "stack", "polygonize"]), a=paths, b=paths, c=st.one_of(st.none(), paths),
           overwrite=st.booleans())
    @_settings(n)
    def outputs(cmd: str, a: Path, b: Path, c: Path | None, overwrite: bool) -> None:
        restore()
        (proj / "new.tif").unlink(missing_ok=True)
        (proj / "new.gpkg").unlink(missing_ok=True)
        used = [a] + ([c] if c else []) + ([proj / "model" / "model.json"] if cmd == "predict" else [])
        files = [f for u in used for f in input_files(u) if f.exists()]  # this command's inputs, VRT sources too
        watched = [p for p in [*originals, proj / "model" / "model.json"] if any(os.path.samefile(p, f) for f in files)]
        sums = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in watched}
        if cmd == "predict":  # image a, mask b, confidence c
            fn = lambda: predict_scene(proj / "model", a, b, confidence=c, tile=64)  # noqa: E731
        elif cmd == "stack":  # output b, inputs a (and c)
            fn = lambda: stack_rasters(b, [a] + ([c] if c else []), overwrite=overwrite)  # noqa: E731
        else:  # mask a, fields b (as GeoPackage), confidence c
            fn = lambda: polygonize_file(a, b, driver="gpkg", confidence=c, min_area_ha=0)  # noqa: E731
        shown = {"cmd": cmd, "a": a.name, "b": b.name, "c": c.name if c else None, "overwrite": overwrite}
        tally.call("outputs", cmd, fn, shown)
        changed = [p.name for p, h in sums.items() if hashlib.sha256(p.read_bytes()).hexdigest() != h]
        tally.check("outputs", cmd, not changed, f"one of its inputs was replaced: {changed}", shown)

    outputs()


# ------------------------------------------------------------------ main


#: target -> (function, share of --cases): the slow targets (a model load, a mount or a prediction
#: per case) run fewer cases.
TARGETS: dict[str, tuple[Any, float]] = {
    "workflow": (fuzz_workflow, 1.0),
    "raster": (fuzz_rasters, 1.0),
    "districts": (fuzz_districts, 1.0),
    "yaml": (fuzz_yaml, 0.5),
    "sizes": (fuzz_sizes, 0.1),
    "cards": (fuzz_cards, 0.2),
    "writes": (fuzz_writes, 0.1),
    "outputs": (fuzz_outputs, 0.1),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=1000, help="cases per target and kind (workflow gets 2x)")
    ap.add_argument("--only", choices=list(TARGETS), action="append")
    ap.add_argument("--slow", type=float, default=30.0, help="seconds after which one case counts as unexpected")
    ap.add_argument("--json", type=Path, help="write the figures as JSON here")
    ap.add_argument("--show", type=int, default=5, help="unexpected exceptions to print")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("CPL_LOG", "/dev/null")  # GDAL's own chatter about the damaged files
    tally = Tally()
    tally.slow = args.slow
    seconds: dict[str, float] = {}
    peak: dict[str, float] = {}
    work = Path(tempfile.mkdtemp(prefix="geoseg-fuzz-"))
    try:
        for target, (fn, share) in TARGETS.items():
            if args.only and target not in args.only:
                continue
            d = work / target
            d.mkdir()
            t, before = time.perf_counter(), peak_rss_mb()
            fn(tally, d, max(1, int(args.cases * share)))
            seconds[target] = time.perf_counter() - t
            peak[target] = peak_rss_mb() - before  # what this target's inputs added to the peak
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    print(f"{'target':<10} {'cases':>6} {'accepted':>9} {'documented':>11} {'unexpected':>11} {'seconds':>8} "
          f"{'+peak MB':>8}  errors")
    for target in seconds:
        bad = sum(1 for u in tally.unexpected if u["target"] == target)
        kinds = ", ".join(f"{k} {v}" for k, v in tally.kinds.get(target, Counter()).most_common())
        rows.append({"target": target, "cases": tally.cases[target], "accepted": tally.ok[target],
                     "documented": tally.documented[target], "unexpected": bad, "seconds": round(seconds[target], 1),
                     "peak_rss_mb": round(peak[target]), "errors": dict(tally.kinds.get(target, Counter()))})
        print(f"{target:<10} {tally.cases[target]:>6} {tally.ok[target]:>9} {tally.documented[target]:>11} "
              f"{bad:>11} {seconds[target]:>8.1f} {peak[target]:>8.0f}  {kinds}")
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
