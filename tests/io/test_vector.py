"""Vector and table files: format round trips, QGIS style, atomic writes, district checks."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import shapely

from geoseg.classes import default_classes
from geoseg.errors import DistrictError, DistrictWarning, VectorFormatError, VectorReadError, VectorWriteError
from geoseg.io.districts import read_districts
from geoseg.io.vector import qgis_style, read_table, read_vector, vector_driver, write_table, write_vector

INDIA = Path(__file__).parents[1] / "data" / "india_districts" / "india_district.json"


@pytest.fixture()
def fields() -> gpd.GeoDataFrame:
    """Fields as polygonize_raster makes them: pixel outlines in UTM 43N, with a hole and a district name."""
    x0, y0 = 600_000.0, 3_380_000.0
    outer = shapely.box(x0, y0 - 300, x0 + 400, y0)
    return gpd.GeoDataFrame(
        {
            "field_id": np.array([12, 4_000_000_007], np.int64),
            "class_id": np.array([1, 2], np.int32),
            "crop:name": ["rice", "wheat"],
            "area_ha": [11.0, 2.5],
            "metrics:perimeter": [2000.0, 700.0],
            "confidence": [0.91, np.nan],
            "district": ["Ludhiāna", None],  # non-ASCII and missing values survive
            "run_id": ["r1", "r1"],
        },
        geometry=[outer.difference(shapely.box(x0 + 100, y0 - 200, x0 + 200, y0 - 100)),
                  shapely.box(x0 + 400, y0 - 250, x0 + 500, y0)],
        crs="EPSG:32643",
    )


@pytest.mark.parametrize("ext", [".gpkg", ".parquet", ".fgb", ".geojson", ".shp"])
def test_round_trip_each_format(fields, tmp_path, ext):
    path = write_vector(fields, tmp_path / f"fields{ext}", classes=default_classes())
    back = read_vector(path).sort_values("field_id").reset_index(drop=True)  # FlatGeobuf's index reorders
    assert list(back.columns) == list(fields.columns)
    if ext == ".geojson":  # RFC 7946: WGS 84, 7 decimals (about 1 cm)
        assert back.crs.to_epsg() == 4326
        back = back.to_crs(fields.crs)
        assert (shapely.hausdorff_distance(back.geometry.values, fields.geometry.values) < 0.02).all()
        assert (shapely.get_num_coordinates(back.geometry.values)
                == shapely.get_num_coordinates(fields.geometry.values)).all()
    else:
        assert back.crs.to_epsg() == 32643
        assert shapely.equals_exact(shapely.normalize(back.geometry.values),
                                    shapely.normalize(fields.geometry.values), tolerance=0).all()
    assert back.field_id.tolist() == fields.field_id.tolist()
    assert back.class_id.tolist() == [1, 2] and back["crop:name"].tolist() == ["rice", "wheat"]
    assert back.area_ha.tolist() == fields.area_ha.tolist()
    assert back["metrics:perimeter"].tolist() == fields["metrics:perimeter"].tolist()
    assert back.confidence.iloc[0] == pytest.approx(0.91) and pd.isna(back.confidence.iloc[1])
    assert back.district.iloc[0] == "Ludhiāna" and pd.isna(back.district.iloc[1])
    leftovers = [p.name for p in tmp_path.iterdir() if ".partial-" in p.name]
    assert leftovers == []


def test_geojson_is_rfc7946(fields, tmp_path):
    path = write_vector(fields, tmp_path / "f.geojson")
    text = path.read_text(encoding="utf-8")
    assert '"crs"' not in text  # RFC 7946 has no crs member: always WGS 84
    ext = read_vector(path).geometry.values[0].exterior
    assert ext.is_ccw


def test_gpkg_carries_a_qgis_style_in_class_colours(fields, tmp_path):
    path = write_vector(fields, tmp_path / "fields.gpkg", classes=default_classes())
    layers = dict(pyogrio.list_layers(path))
    assert set(layers) == {"fields", "layer_styles"}
    with sqlite3.connect(path) as con:
        name, qml, default = con.execute("SELECT f_table_name, styleQML, useAsDefault FROM layer_styles").fetchone()
    assert name == "fields" and default == 1
    assert 'attr="class_id"' in qml and 'label="rice"' in qml
    assert "26,152,80,255" in qml  # rice, #1a9850


def test_shapefile_gets_a_qml_sidecar_and_short_names(fields, tmp_path):
    path = write_vector(fields, tmp_path / "fields.shp", classes=default_classes())
    assert (tmp_path / "fields.qml").read_text() == qgis_style(default_classes())
    assert {"perim_m", "crop_name"} <= set(pyogrio.read_info(path)["fields"])
    assert {"metrics:perimeter", "crop:name"} <= set(read_vector(path).columns)
    long = fields.assign(a_very_long_name=1)
    with pytest.raises(VectorWriteError, match=r"attribute names \['a_very_long_name'\] are longer than the 10 "
                                               r"characters a Shapefile allows"):
        write_vector(long, tmp_path / "bad.shp")


def test_overwrite_is_atomic_and_failed_writes_leave_the_old_file(fields, tmp_path, monkeypatch):
    path = write_vector(fields, tmp_path / "fields.fgb")
    before = path.read_bytes()

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(pyogrio, "write_dataframe", boom)
    with pytest.raises(VectorWriteError, match=r"fields.fgb: writing FlatGeobuf failed \(disk full\)"):
        write_vector(fields, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["fields.fgb"]


def test_format_by_extension_or_name_and_clear_errors(fields, tmp_path):
    assert vector_driver("a.parquet") == ("parquet", "Parquet")
    assert vector_driver("a.bin", "FlatGeobuf") == ("fgb", "FlatGeobuf")
    write_vector(fields, tmp_path / "fields.dat", driver="FlatGeobuf")
    assert sorted(read_vector(tmp_path / "fields.dat")["crop:name"]) == ["rice", "wheat"]
    with pytest.raises(VectorFormatError, match=r"fields.xlsx: cannot tell the output format from the extension "
                                                r"'.xlsx'; use one of .gpkg, .parquet"):
        write_vector(fields, tmp_path / "fields.xlsx")
    with pytest.raises(VectorFormatError, match=r"unknown output format 'kml'; use one of gpkg, parquet, fgb"):
        write_vector(fields, tmp_path / "f.kml", driver="kml")
    with pytest.raises(VectorWriteError, match="the data has no CRS; set one"):
        write_vector(fields.set_crs(None, allow_override=True), tmp_path / "f.gpkg")


def test_reading_missing_or_broken_files(tmp_path):
    with pytest.raises(VectorReadError, match="nope.gpkg: file not found; check the path"):
        read_vector(tmp_path / "nope.gpkg")
    bad = tmp_path / "bad.geojson"
    bad.write_text("{not json")
    with pytest.raises(VectorReadError, match=r"bad.geojson: cannot be read as a vector file \("):
        read_vector(bad)


def test_tables_round_trip_and_refuse_unknown_extensions(tmp_path):
    df = pd.DataFrame({"district": ["Ludhiana", "Sangrur"], "area_ha": [1.5, 2.25]})
    for ext in (".csv", ".parquet", ".json"):
        back = read_table(write_table(df, tmp_path / f"t{ext}"))
        assert back.to_dict("list") == df.to_dict("list")
    with pytest.raises(VectorFormatError, match=r"t.txt: cannot tell the table format from the extension '.txt'"):
        write_table(df, tmp_path / "t.txt")


# --------------------------------------------------------------------------------------
# districts
def test_read_districts_reports_the_real_files_defects_and_reprojects():
    with pytest.warns(DistrictWarning, match="Diu: null geometry") as rec:
        d = read_districts(INDIA, "district", crs="EPSG:32643")
    msg = str(rec[0].message)
    assert "Yanam: null geometry (skipped)" in msg and "invalid geometry repaired" in msg
    assert "repeated name" not in msg  # only the area tables warn about names they use
    assert len(d.gdf) == 643 and d.gdf.crs.to_epsg() == 32643
    assert shapely.is_valid(d.gdf.geometry.values).all()
    kinds = {p.problem for p in d.problems}
    assert {"null geometry", "invalid geometry repaired", "repeated name"} <= kinds
    assert any(p.district == "Aurangabad" and p.problem == "repeated name" for p in d.problems)


def test_read_districts_bad_name_field_and_missing_crs(tmp_path):
    with pytest.raises(DistrictError, match=r"has no attribute 'name'; the attributes are \['district', 'dt_cen_cd', "
                                            r"'st_nm', 'censuscode', 'st_cen_cd'\]"):
        read_districts(INDIA, "name")
    nocrs = gpd.GeoDataFrame({"n": ["A"]}, geometry=[shapely.box(0, 0, 1, 1)])
    with pytest.raises(DistrictError, match="has no CRS"):
        read_districts(nocrs, "n")
    empty = gpd.GeoDataFrame({"n": ["A", "B"]}, geometry=[None, shapely.Point(0, 0)], crs="EPSG:4326")
    with pytest.raises(DistrictError, match=r"no usable district polygon \(2 features: A: null geometry \(skipped\); "
                                            r"B: not a polygon"):
        read_districts(empty, "n", warn=False)
