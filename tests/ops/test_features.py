"""Growth features: per-field index statistics against a brute-force reference (shapely coverage of
each pixel, numpy statistics) on a real multi-date stack and the synthetic region; the crops'
phenology against the generator's; district x crop profiles; bad inputs; the command."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
from click.testing import CliRunner

from geoseg.cli.main import cli
from geoseg.core.geodesy import pixel_areas
from geoseg.errors import FeatureError
from geoseg.ops.areas import district_areas_raster
from geoseg.ops.features import (
    PROFILE_COLUMNS,
    TIMESERIES_COLUMNS,
    district_crop_timeseries,
    field_timeseries,
)
from geoseg.synth import synthesize
from geoseg.synth.spectra import SEASON_START, crop_reflectance

DATA = Path(__file__).parents[1] / "data" / "eolearn_ndvi"


def _reference(stack: Path, geom: shapely.Geometry, bands_of: Callable[[np.ndarray], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Brute force: every pixel of the polygon's bounding box, its covered share by a shapely
    intersection, times its ground area; the values of each date from ``bands_of(window array)``."""
    with rasterio.open(stack) as src:
        t = src.transform
        inv = ~t
        x0, y0, x1, y1 = geom.bounds
        c0, r0 = (int(np.floor(v)) for v in inv @ (x0, y1))
        c1, r1 = (int(np.ceil(v)) for v in inv @ (x1, y0))
        c0, r0, c1, r1 = max(c0, 0), max(r0, 0), min(c1, src.width), min(r1, src.height)
        arr = src.read(window=((r0, r1), (c0, c1))).astype(np.float64)
        nodata = src.nodata
        areas = pixel_areas(t, src.crs, (src.height, src.width)).block(r0, c0, r1 - r0, c1 - c0)
    w = np.zeros((r1 - r0, c1 - c0))
    for r in range(r1 - r0):
        for c in range(c1 - c0):
            xl, yt = t.c + (c0 + c) * t.a, t.f + (r0 + r) * t.e
            cell = shapely.box(xl, yt + t.e, xl + t.a, yt)
            w[r, c] = shapely.area(shapely.intersection(cell, geom)) / cell.area * areas[r, c]
    if nodata is not None:
        arr[arr == nodata] = np.nan
    return bands_of(arr), w


def _wstats(v: np.ndarray, w: np.ndarray) -> dict[str, float]:
    ok = ~np.isnan(v) & (w > 0)
    vv, ww = v[ok], w[ok]
    order = np.argsort(vv, kind="stable")
    vs, ws = vv[order], ww[order]
    n = len(vs)
    s = np.arange(n) * ws + (n - 1) * np.concatenate([[0.0], np.cumsum(ws)[:-1]])
    q = {}
    for key, p in (("p10", 0.1), ("median", 0.5), ("p90", 0.9)):  # the weighted type-7 rule, written out
        h = p * s[-1]
        k = int(np.flatnonzero(s <= h + 1e-12 * s[-1])[-1]) if n > 1 else 0
        q[key] = float(vs[k] if k >= n - 1 else vs[k] + (h - s[k]) / (s[k + 1] - s[k]) * (vs[k + 1] - vs[k]))
    mean = float(np.sum(vv * ww) / np.sum(ww))
    return {"mean": mean, "std": float(np.sqrt(np.sum(ww * (vv - mean) ** 2) / np.sum(ww))), **q,
            "observed": float(ww.sum() / w[w > 0].sum())}


def test_real_ndvi_stack_equals_the_brute_force_reference():
    stack, lulc = DATA / "ndvi_2017.tif", DATA / "lulc.gpkg"
    long, wide, notes = field_timeseries(stack, lulc, indices=["ndvi"], id_field=None)
    assert tuple(long.columns) == TIMESERIES_COLUMNS and notes == []
    with rasterio.open(stack) as src:
        dates = [d.split()[0] for d in src.descriptions]
    assert sorted(set(long.date)) == dates and len(dates) == 36
    fields = gpd.read_file(lulc)
    with rasterio.open(stack) as src:
        footprint = shapely.box(*src.bounds)
    checked = 0
    for i in range(len(fields)):
        geom = shapely.intersection(fields.geometry.iloc[i], footprint)
        if geom.is_empty or geom.area < 1.0:
            continue
        values, w = _reference(stack, geom, lambda a: a)
        rows = long[long.field_id == i + 1].reset_index(drop=True)
        for t in range(0, 36, 7):
            ref = _wstats(values[t].ravel(), w.ravel())
            got = rows.iloc[t]
            for k, v in ref.items():
                assert got[k] == pytest.approx(v, abs=1e-6), (i, t, k)
        checked += 1
    assert checked >= 5
    # a field outside the stack has no statistics
    outside = long.groupby("field_id")["observed"].apply(lambda s: s.isna().all())
    assert outside.sum() == len(fields) - long.dropna(subset=["mean"]).field_id.nunique()
    assert (wide.ndvi_peak.dropna() <= 0.87).all()


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory):
    return synthesize(tmp_path_factory.mktemp("region"), height=320, width=320, seed=7)


def test_synthetic_fields_equal_the_reference_with_clouds(region, tmp_path):
    """The region's stack with some pixels of one date set to nodata (clouds): those pixels leave
    the statistics of that date, and `observed` says how much of the field was seen."""
    stack = tmp_path / "cloudy.tif"
    with rasterio.open(region.scene) as src:
        a = src.read()
        profile = src.profile
        desc, tags = src.descriptions, src.tags()
    a[4:8, 100:180, 100:200] = 0  # the second date's four bands
    with rasterio.open(stack, "w", **profile) as dst:
        dst.write(a)
        for i, d in enumerate(desc, start=1):
            dst.set_band_description(i, d)
        dst.update_tags(**tags)
    fields = gpd.read_file(region.fields)
    long, _, _ = field_timeseries(stack, fields, indices=["ndvi", "evi"], id_field="field_id")
    t = region.transform
    box = shapely.box(t.c + 100 * t.a, t.f + 180 * t.e, t.c + 200 * t.a, t.f + 100 * t.e)
    hit = fields[fields.intersects(box)].head(4)
    assert len(hit)
    for _, f in hit.iterrows():
        def ndvi(arr: np.ndarray) -> np.ndarray:
            r = arr[2::4] / 1e4
            n = arr[3::4] / 1e4
            return (n - r) / (n + r)

        values, w = _reference(stack, f.geometry, ndvi)
        rows = long[(long.field_id == f.field_id) & (long["index"] == "ndvi")].reset_index(drop=True)
        for t in range(4):
            ref = _wstats(values[t].ravel(), w.ravel())
            for k, v in ref.items():
                assert rows.iloc[t][k] == pytest.approx(v, abs=1e-6), (f.field_id, t, k)
        assert rows.iloc[1].observed < 1.0 and rows.iloc[0].observed == pytest.approx(1.0)


def test_crop_profiles_peak_where_the_generator_put_them(region):
    prof = district_crop_timeseries(region.scene, region.labels, region.districts, "district", indices=["ndvi"])
    assert tuple(prof.columns) == PROFILE_COLUMNS
    with rasterio.open(region.scene) as src:
        days = [(pd.Timestamp(d.split()[0]).date() - SEASON_START).days for d in src.descriptions[::4]]
    table = district_areas_raster(region.labels, region.districts, "district")
    for crop in ("rice", "wheat", "sugarcane", "cotton", "maize"):
        p = prof[prof.crop == crop]
        got = p.groupby("date").apply(lambda g: np.average(g["mean"], weights=g.observed_ha), include_groups=False)
        expected_refl = crop_reflectance(crop, np.array(days, float))
        expected = (expected_refl[:, 3] - expected_refl[:, 2]) / (expected_refl[:, 3] + expected_refl[:, 2])
        assert int(np.argmax(got.to_numpy())) == int(np.argmax(expected)), crop
        assert np.abs(got.to_numpy() - expected).max() < 0.12, crop
        # the profile's area is the district table's, by the same coverage rule
        ha = p.drop_duplicates("district").set_index("district").area_ha
        ref = table[table.crop == crop].set_index("district").area_ha
        np.testing.assert_allclose(ha.sort_index(), ref[ha.index].sort_index(), rtol=1e-9)


def test_bad_inputs(region, tmp_path):
    plain = tmp_path / "plain.tif"
    with rasterio.open(region.scene) as src:
        profile = src.profile
        a = src.read()
    with rasterio.open(plain, "w", **profile) as dst:
        dst.write(a)
    with pytest.raises(FeatureError, match=r"plain.tif: band 1 has no name, which carries no date"):
        field_timeseries(plain, region.fields)
    with pytest.raises(FeatureError, match=r"index ndmi needs band\(s\) \['swir16'\], and each date holds "
                                           r"\['B', 'G', 'R', 'NIR'\]"):
        field_timeseries(region.scene, region.fields, indices=["ndmi"])
    with pytest.raises(FeatureError, match=r"index 'ndxi': expected one of ndvi"):
        field_timeseries(region.scene, region.fields, indices=["ndxi"])
    far = gpd.GeoDataFrame({"field_id": [1]}, geometry=[shapely.box(0, 0, 10, 10)], crs=region.crs)
    with pytest.raises(FeatureError, match=r"no field overlaps"):
        field_timeseries(region.scene, far)
    with pytest.raises(FeatureError, match=r"the stack is not on the mask's grid"):
        district_crop_timeseries(DATA / "ndvi_2017.tif", region.labels, region.districts, "district", indices=["ndvi"])


def test_the_command(region, tmp_path):
    out = tmp_path / "features"
    r = CliRunner().invoke(cli, ["zonal", str(region.scene), str(region.fields), "--out", str(out), "--index", "ndvi",
                                 "--mask", str(region.labels), "--districts", str(region.districts), "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    long = pd.read_parquet(out / "field_timeseries.parquet")
    assert res["field_timeseries"]["rows"] == len(long) == 4 * len(gpd.read_file(region.fields))
    ph = pd.read_parquet(out / "field_phenology.parquet")
    assert {"field_id", "ndvi_peak", "ndvi_peak_date", "ndvi_sos_date"} <= set(ph.columns)
    assert len(pd.read_parquet(out / "district_crop_timeseries.parquet"))
    again = CliRunner().invoke(cli, ["zonal", str(region.scene), str(region.fields), "--out", str(out)])
    assert again.exit_code == 1 and "exists already; pass --overwrite" in again.output


def test_a_fields_statistics_do_not_depend_on_its_neighbours(tmp_path):
    # fields on pixel edges, sharing edges with offset neighbours: the rounding slivers a neighbour's
    # outline leaves across a shared edge are no pieces, so each field's quantiles are its own
    from affine import Affine

    from geoseg.ops.coverage import SLIVER, zone_pieces

    from ..workflow_helpers import write_scene

    tf = Affine(10, 0, 600_000, 0, -10, 3_380_000)
    write_scene(tmp_path / "s.tif", 60, 60, tf)
    boxes = [shapely.box(600_000 + 10 * c0, 3_380_000 - 10 * r1, 600_000 + 10 * c1, 3_380_000 - 10 * r0)
             for r0, r1, c0, c1 in [(5, 20, 5, 17), (5, 13, 17, 30), (13, 26, 17, 24), (20, 33, 3, 17)]]
    fields = gpd.GeoDataFrame({"field_id": [1, 2, 3, 4]}, geometry=boxes, crs="EPSG:32643")
    together, _, _ = field_timeseries(tmp_path / "s.tif", fields, indices=["ndvi"])
    for k in range(4):
        alone, _, _ = field_timeseries(tmp_path / "s.tif", fields.iloc[[k]], indices=["ndvi"])
        mine = together[together.field_id == k + 1].reset_index(drop=True)
        pd.testing.assert_frame_equal(alone.reset_index(drop=True), mine, rtol=1e-12)
    _, _, frac, cut = zone_pieces(np.asarray(boxes, dtype=object), tf, (60, 60))
    assert (frac[cut] > SLIVER).all() and np.allclose(frac[cut], 1.0)
