"""Fields files are fiboa 0.3.0 (+ crop extension 0.2.0) and GeoParquet 1.1: checked by fiboa-cli's validator
offline (with the schema copies in tests/data/fiboa) and by geoparquet-validator.

fiboa-cli 0.21 pins pyarrow < 24 and fsspec 2025.7.0, older than geoseg's, so it lives in an environment of
its own; the validator tests run where ``GEOSEG_FIBOA_PYTHON`` names that environment's Python, or a ``fiboa``
command is on the PATH, and are skipped otherwise (the README says how to set one up).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import geopandas as gpd
import geoparquet_validator
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from geoseg.classes import default_classes
from geoseg.io.fiboa import SCHEMAS, code_list_csv, compatible_fields
from geoseg.io.vector import read_vector, write_vector
from geoseg.ops.polygonize import polygonize_file, polygonize_raster
from geoseg.report.inputs import read_fields

DATA = Path(__file__).parents[1] / "data" / "fiboa"
VALIDATE = DATA / "validate_offline.py"


def _fiboa_python() -> str | None:
    """The Python of an environment with fiboa-cli: $GEOSEG_FIBOA_PYTHON, else the one running `fiboa`."""
    if os.environ.get("GEOSEG_FIBOA_PYTHON"):
        return os.environ["GEOSEG_FIBOA_PYTHON"]
    exe = shutil.which("fiboa")
    if exe is None:
        return None
    first = Path(exe).read_bytes().split(b"\n", 1)[0].decode("utf-8", "replace")
    return first[2:].strip() if first.startswith("#!") else None


FIBOA_PYTHON = _fiboa_python()
needs_fiboa = pytest.mark.skipif(FIBOA_PYTHON is None, reason="fiboa-cli not found: set GEOSEG_FIBOA_PYTHON to the "
                                 "Python of an environment with `pip install fiboa-cli==0.21.0` (README, Fields)")


def fiboa_validate(*files: Path) -> subprocess.CompletedProcess[str]:
    """fiboa-cli's validator on ``files`` with the local schemas; no network is used (none is reached here)."""
    assert FIBOA_PYTHON is not None
    return subprocess.run([FIBOA_PYTHON, str(VALIDATE), *map(str, files)], capture_output=True, text=True,
                          timeout=300, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})


@pytest.fixture(scope="module")
def mask(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A small UTM mask with rice, wheat, a cloud hole and a nodata collar, and its confidence raster."""
    d = tmp_path_factory.mktemp("fiboa")
    m = np.zeros((60, 80), np.uint8)
    m[5:25, 10:40] = 1
    m[30:50, 10:70] = 2
    m[35:40, 20:25] = 255
    m[55:60, :] = 255
    conf = np.where(m == 255, 0, 200).astype(np.uint8)
    prof = dict(driver="GTiff", height=60, width=80, count=1, dtype="uint8", crs=CRS.from_epsg(32643),
                transform=Affine(10, 0, 600_000, 0, -10, 3_380_000))
    with rasterio.open(d / "mask.tif", "w", nodata=255, **prof) as dst:
        dst.write(m[None])
    with rasterio.open(d / "confidence.tif", "w", nodata=0, **prof) as dst:
        dst.write(conf[None])
    return d / "mask.tif", d / "confidence.tif"


@pytest.fixture(scope="module")
def fields_parquet(mask: tuple[Path, Path]) -> Path:
    m, conf = mask
    out = m.parent / "fields.parquet"
    polygonize_file(m, out, classes=default_classes(), confidence=conf, run_id="kharif-2024", model_id="unet-1",
                    observed="2024-10-31")
    return out


def test_geoparquet_carries_fiboa_metadata_types_and_not_nulls(fields_parquet: Path) -> None:
    schema = pq.read_schema(fields_parquet)
    coll = json.loads(schema.metadata[b"collection"])
    assert coll["schemas"] == {"kharif-2024": list(SCHEMAS)}
    assert SCHEMAS == ("https://vecorel.org/specification/v0.1.0/schema.yaml",
                       "https://fiboa.org/specification/v0.3.0/schema.yaml",
                       "https://fiboa.org/crop-extension/v0.2.0/schema.yaml")
    assert coll["schemas:custom"]["required"] == ["bbox"]
    assert sorted(coll["schemas:custom"]["properties"]) == ["area_ha", "class_id", "confidence", "field_id",
                                                            "model_id", "run_id"]
    not_null = sorted(f.name for f in schema if not f.nullable)
    assert not_null == ["bbox", "collection", "crop:code", "crop:code_list", "geometry", "id"]
    assert schema.field("id").type == pa.string() and schema.field("crop:name").type == pa.string()
    assert schema.field("metrics:area").type == pa.float32()
    assert schema.field("determination:datetime").type == pa.timestamp("ms", tz="UTC")
    geo = json.loads(schema.metadata[b"geo"])
    assert geo["version"] == "1.1.0" and "covering" in geo["columns"]["geometry"]
    t = pq.read_table(fields_parquet).to_pandas()
    assert t["id"].tolist() == ["410", "2410"] and t["crop:name"].tolist() == ["rice", "wheat"]
    assert t["determination:method"].tolist() == ["auto-imagery"] * 2


def test_code_list_is_the_class_table() -> None:
    assert code_list_csv(default_classes()).splitlines()[:3] == ["original_code,original_name", "0,background",
                                                                 "1,rice"]
    assert code_list_csv(None, [4, 2, 4]) == "original_code,original_name\n2,class_2\n4,class_4\n"


@needs_fiboa
def test_fiboa_validator_passes_fields_of_a_polygonize_run(fields_parquet: Path, mask: tuple[Path, Path],
                                                           tmp_path: Path) -> None:
    # also: no imagery date (all-null datetimes), no confidence, no run, and no field at all
    bare = tmp_path / "bare.parquet"
    polygonize_file(mask[0], bare, classes=default_classes())
    empty = tmp_path / "empty.parquet"
    polygonize_file(mask[0], empty, classes=default_classes(), exclude=(0, 1, 2))
    assert pq.read_metadata(empty).num_rows == 0
    r = fiboa_validate(fields_parquet, bare, empty)
    print(r.stdout, r.stderr)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count(": VALID") == 3 and "INVALID" not in r.stdout
    assert "warning" not in r.stdout  # every column is declared (fiboa's, or geoseg's in schemas:custom)


@needs_fiboa
def test_fiboa_validator_fails_broken_fields(fields_parquet: Path, tmp_path: Path) -> None:
    t = pq.read_table(fields_parquet)
    i = t.schema.get_field_index("determination:method")
    bad_method = t.set_column(i, t.schema.field(i), pa.array(["robot", "robot"], pa.string()))
    pq.write_table(bad_method, tmp_path / "bad_method.parquet")
    no_id = t.drop_columns(["id"])
    pq.write_table(no_id, tmp_path / "no_id.parquet")
    meta = dict(t.schema.metadata)
    coll = json.loads(meta[b"collection"])
    coll["schemas"]["kharif-2024"].remove("https://fiboa.org/specification/v0.3.0/schema.yaml")
    meta[b"collection"] = json.dumps(coll).encode()
    pq.write_table(t.replace_schema_metadata(meta), tmp_path / "not_fiboa.parquet")
    r = fiboa_validate(tmp_path / "bad_method.parquet", tmp_path / "no_id.parquet", tmp_path / "not_fiboa.parquet")
    print(r.stdout, r.stderr)
    assert r.returncode == 1
    assert r.stdout.count(": INVALID") == 3
    assert "determination:method: String 'robot' is not one of the allowed values" in r.stdout
    assert "id: Required field is missing" in r.stdout
    assert "Required schema https://fiboa.org/specification/v([^/]+)/schema.yaml not found" in r.stdout


def test_geoparquet_validator_passes_fields_and_fails_a_broken_covering(fields_parquet: Path,
                                                                         tmp_path: Path) -> None:
    report = geoparquet_validator.check(str(fields_parquet))
    assert geoparquet_validator.failed(report) == []
    assert geoparquet_validator.conformant(report, "core") and geoparquet_validator.conformant(report, "covering")
    # the bbox covering nullable while the geometry is NOT NULL: what the validator flags
    t = pq.read_table(fields_parquet)
    loose = pa.schema([f.with_nullable(True) if f.name == "bbox" else f for f in t.schema], metadata=t.schema.metadata)
    pq.write_table(t.cast(loose), tmp_path / "loose.parquet")
    report = geoparquet_validator.check(str(tmp_path / "loose.parquet"))
    assert "/conf/covering/bbox-column-repetition" in geoparquet_validator.failed(report)


def test_same_columns_in_every_format_and_geojson_is_a_fiboa_collection(mask: tuple[Path, Path],
                                                                         tmp_path: Path) -> None:
    gdf = polygonize_raster(mask[0], classes=default_classes(), run_id="r1", observed="2024-10-31")
    cols = [c for c in gdf.columns if c != "geometry"]
    for ext in ("parquet", "gpkg", "geojson", "fgb", "shp"):
        back = read_vector(write_vector(gdf, tmp_path / f"fields.{ext}"))
        assert sorted(c for c in back.columns if c != "geometry") == sorted(cols), ext
        assert back["crop:name"].tolist() == ["rice", "wheat"] and back["metrics:area"].to_numpy() == pytest.approx(gdf["metrics:area"].to_numpy(), rel=1e-7)
        assert back["metrics:area"].to_numpy() == pytest.approx(back.area_ha.to_numpy() * 1e4, rel=1e-7)
    fc = json.loads((tmp_path / "fields.geojson").read_text())
    assert fc["schemas"] == {"r1": list(SCHEMAS)}
    assert [f["id"] for f in fc["features"]] == ["410", "2410"]  # string ids, as Vecorel's GeoJSON wants
    assert fc["features"][0]["properties"]["determination:datetime"] == "2024-10-31T00:00:00Z"
    assert read_vector(tmp_path / "fields.shp")["determination:datetime"].tolist() == ["2024-10-31T00:00:00Z"] * 2


def test_fields_of_geoseg_0_1_are_read_under_todays_names(mask: tuple[Path, Path], tmp_path: Path) -> None:
    old = polygonize_raster(mask[0], classes=default_classes()).rename(
        columns={"crop:name": "crop", "metrics:perimeter": "perimeter_m"})
    old = old[["field_id", "class_id", "crop", "area_ha", "perimeter_m", "geometry"]]
    path = tmp_path / "old.parquet"
    old.to_parquet(path)
    f, n, ha = read_fields(path, columns=["field_id", "crop:name", "area_ha"])
    assert f["crop:name"].tolist() == ["rice", "wheat"] and n == 2 and ha == pytest.approx(old.area_ha.sum())
    assert ha == pytest.approx(17.75, rel=2e-3)  # 6 + 11.75 ha of grid, a little more on the ground
    assert list(compatible_fields(pd.DataFrame({"crop": ["a"], "crop:name": ["b"]})).columns) == ["crop", "crop:name"]
    assert isinstance(compatible_fields(old), gpd.GeoDataFrame)


@needs_fiboa
def test_every_part_of_a_fields_dataset_is_valid_fiboa_and_geoparquet(mask: tuple[Path, Path],
                                                                     tmp_path: Path) -> None:
    from geoseg.ops.polygonize import polygonize_dataset

    m, conf = mask
    res = polygonize_dataset(m, tmp_path / "fields.parquet", classes=default_classes(), confidence=conf,
                             run_id="kharif-2024", observed="2024-10-31", block=64)
    parts = sorted(res.path.glob("*.parquet"))
    assert len(parts) >= 2 and sum(pq.read_metadata(p).num_rows for p in parts) == res.fields == 2
    r = fiboa_validate(*parts)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count(": VALID") == len(parts) and "INVALID" not in r.stdout and "warning" not in r.stdout
    for p in parts:
        report = geoparquet_validator.check(str(p))
        assert geoparquet_validator.failed(report) == [] and geoparquet_validator.conformant(report, "covering")
