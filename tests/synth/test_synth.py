"""The synthetic region: formats, grids, determinism, truth consistency, realism, errors."""

from __future__ import annotations

import csv
import tracemalloc
from collections import defaultdict
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from rasterio.enums import Compression

from geoseg.classes import ClassTable, CropClass, default_classes, load_classes
from geoseg.errors import ConfigError
from geoseg.io.raster import read_mask_classes, valid_mask
from geoseg.synth import BANDS, DEFAULT_CENTRE, OUTSIDE, SynthRegion, season_dates, synthesize

from ..geodesic_truth import geod_area_perimeter

FILES = ("scene.tif", "labels.tif", "labels.tif.aux.xml", "labels.qml", "clouds.tif", "truth.csv", "fields.gpkg",
         "districts.gpkg", "classes.yaml")


def _read(path: Path) -> tuple[np.ndarray, dict]:
    with rasterio.open(path) as src:
        return src.read(), dict(
            crs=src.crs, transform=src.transform, width=src.width, height=src.height,
            dtype=src.dtypes[0], nodata=src.nodata, count=src.count, descriptions=src.descriptions,
            tiled=src.profile.get("tiled"), blocks=src.block_shapes[0], compression=src.compression,
            tags=src.tags(),
        )


def _truth_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _pixel_district(labels_meta: dict, districts: gpd.GeoDataFrame) -> np.ndarray:
    """District index of each pixel centre (len(districts) for none), computed independently of synth."""
    h, w, t = labels_meta["height"], labels_meta["width"], labels_meta["transform"]
    cols, rows = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    x, y = t.c + cols * t.a, t.f + rows * t.e
    out = np.full((h, w), len(districts))
    for i, g in enumerate(districts.geometry.values):
        out[shapely.contains_xy(g, x, y)] = i
    return out


@pytest.fixture(scope="module")
def odd(tmp_path_factory: pytest.TempPathFactory) -> SynthRegion:
    """333 x 517 px (not divisible by 16, two windows across), collar, no clouds."""
    return synthesize(tmp_path_factory.mktemp("odd"), height=333, width=517, seed=11)


@pytest.fixture(scope="module")
def cloudy(tmp_path_factory: pytest.TempPathFactory) -> SynthRegion:
    """3 dates with 20 % cloud gaps each, across four 512 px windows."""
    return synthesize(tmp_path_factory.mktemp("cloudy"), height=560, width=530, seed=5, dates=3, cloud_fraction=0.2)


# --- determinism -----------------------------------------------------------------------
def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    kw = dict(height=540, width=530, cloud_fraction=0.1)
    a = synthesize(tmp_path / "a", seed=3, **kw)
    b = synthesize(tmp_path / "b", seed=3, **kw)
    c = synthesize(tmp_path / "c", seed=4, **kw)
    for name in FILES:
        assert (a.out_dir / name).read_bytes() == (b.out_dir / name).read_bytes(), name
    for name in ("scene.tif", "labels.tif", "truth.csv", "fields.gpkg"):
        assert (a.out_dir / name).read_bytes() != (c.out_dir / name).read_bytes(), name
    assert sorted(p.name for p in a.out_dir.iterdir()) == sorted(FILES)  # no temporary files left behind
    assert a.truth.equals(b.truth) and a.n_fields == b.n_fields


# --- formats and grids -----------------------------------------------------------------
def test_scene_and_labels_are_valid_geotiffs_on_one_grid(odd: SynthRegion) -> None:
    scene, sm = _read(odd.scene)
    labels, lm = _read(odd.labels)
    assert scene.shape == (16, 333, 517) and labels.shape == (1, 333, 517)
    assert sm["dtype"] == "uint16" and sm["nodata"] == 0 and sm["crs"].to_epsg() == 32643
    assert sm["tiled"] and sm["blocks"] == (512, 512) and sm["compression"] == Compression.deflate
    dates = season_dates(4)
    assert dates == ("2024-06-15", "2024-09-05", "2024-11-25", "2025-02-15")
    assert sm["descriptions"] == tuple(f"{d} {b}" for d in dates for b in BANDS)
    assert sm["descriptions"][3] == "2024-06-15 NIR" and sm["descriptions"][4] == "2024-09-05 B"
    assert sm["tags"]["GEOSEG_BANDS"] == "B,G,R,NIR" and sm["tags"]["GEOSEG_SCALE"] == "10000"
    for key in ("crs", "transform", "width", "height"):
        assert lm[key] == sm[key], key
    t = sm["transform"]
    assert (t.a, t.e, t.b, t.d) == (10.0, -10.0, 0.0, 0.0)
    centre = (t.c + 517 * 5, t.f - 333 * 5)  # the default region is centred on DEFAULT_CENTRE
    assert abs(centre[0] - DEFAULT_CENTRE[0]) <= 10 and abs(centre[1] - DEFAULT_CENTRE[1]) <= 10
    assert lm["dtype"] == "uint8" and lm["nodata"] == 255 and lm["compression"] == Compression.deflate
    assert read_mask_classes(odd.labels) == default_classes()
    assert load_classes(odd.classes) == default_classes()
    # reflectance: plausible values, nodata exactly where labels are nodata (rule "all")
    valid = valid_mask(scene, 0, "all")
    assert np.array_equal(labels[0] == 255, ~valid)
    assert 0.02 <= odd.collar_fraction <= 0.10 and odd.cloud_fraction == 0
    assert (~valid).mean() == pytest.approx(odd.collar_fraction)
    v = scene[:, valid].astype(float) / 10000
    assert 0.01 < np.median(v[0]) < 0.15 and 0.1 < np.median(v[3]) < 0.5  # blue dark, NIR bright
    assert set(np.unique(labels[0][valid])) <= set(range(7)) and len(np.unique(labels[0][valid])) >= 5


def test_collar_is_a_slanted_edge_not_a_frame(odd: SynthRegion) -> None:
    labels, _ = _read(odd.labels)
    nod = labels[0] == 255
    per_row = nod.sum(1)
    assert per_row.max() - per_row.min() > 10  # slanted: the width of the collar changes down the scene
    assert nod[:, 100:-100].sum() == 0 or nod[:, :100].sum() == 0  # on one side only
    clean = synthesize(odd.out_dir.parent / "no_collar", height=64, width=70, seed=11, collar=False)
    assert (_read(clean.labels)[0] != 255).all() and clean.collar_fraction == 0


@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (40, 1)])
def test_tiny_and_odd_shapes(tmp_path: Path, shape: tuple[int, int]) -> None:
    r = synthesize(tmp_path, height=shape[0], width=shape[1], seed=2)
    scene, meta = _read(r.scene)
    assert scene.shape == (16, *shape) and (meta["height"], meta["width"]) == shape
    assert r.truth["pixels"].sum() == int((_read(r.labels)[0] != 255).sum())


def test_clouds_and_shadows_blank_one_date_at_a_time_and_the_truth_keeps_the_crop(cloudy: SynthRegion) -> None:
    scene, sm = _read(cloudy.scene)
    labels, _ = _read(cloudy.labels)
    skies, km = _read(cloudy.clouds)
    assert scene.shape == (12, 560, 530) and len(sm["descriptions"]) == 12
    assert skies.shape == (3, 560, 530) and km["dtype"] == "uint8" and km["nodata"] == 255
    assert km["descriptions"] == cloudy.dates
    collar = (skies == 255).all(0)
    assert (scene[:, collar] == 0).all() and collar.any()
    assert np.array_equal(labels[0] == 255, collar)  # the collar alone: the crop is still there under a cloud
    assert ((skies == 255).any(0) == collar).all()
    drawn = cloudy.date_cloud_fractions
    assert len(drawn) == 3 and len({round(f, 3) for f in drawn}) == 3  # each date has its own fraction
    assert np.mean(drawn) == pytest.approx(0.2, abs=1e-9) and all(0.08 <= f <= 0.32 for f in drawn)
    for d in range(3):
        zero = scene[4 * d: 4 * d + 4] == 0
        assert (zero.all(0) == zero.any(0)).all()  # a date's 4 bands are nodata together
        sky = skies[d]
        assert np.array_equal(zero[0] & ~collar, (sky == 1) | (sky == 2))  # cloud and shadow both masked
        cloud = float((sky == 1).sum() / (~collar).sum())
        assert cloud == pytest.approx(drawn[d], abs=0.06), (d, cloud, drawn[d])
        shadow = sky == 2
        assert 0 < shadow.sum() < (sky == 1).sum()
        # the cloud casting a shadow lies 600 m east and 800 m south of it: 60 px right, 80 px down
        rr, cc = np.nonzero(shadow[:-80, :-60])
        caster = sky[rr + 80, cc + 60]
        assert ((caster == 1) | (caster == 255)).all() and (caster == 1).mean() > 0.8
    assert cloudy.cloud_fraction > 0.3  # clouds of 3 dates together hide more than one date's
    assert 0 <= cloudy.unseen_fraction < cloudy.cloud_fraction
    seen = (skies == 0).any(0) & ~collar
    assert cloudy.unseen_fraction == pytest.approx(float(((~seen) & ~collar).sum() / collar.size))


def test_without_clouds_the_sky_layer_is_clear(odd: SynthRegion) -> None:
    skies, _ = _read(odd.clouds)
    labels, _ = _read(odd.labels)
    assert skies.shape == (4, 333, 517)
    assert set(np.unique(skies)) <= {0, 255}
    assert np.array_equal((skies == 255).all(0), labels[0] == 255)
    assert odd.cloud_fraction == 0 and odd.unseen_fraction == 0 and odd.date_cloud_fractions == (0.0,) * 4


# --- truth consistency -----------------------------------------------------------------
def test_truth_csv_counts_label_pixels_per_district_exactly(cloudy: SynthRegion) -> None:
    labels, lm = _read(cloudy.labels)
    districts = gpd.read_file(cloudy.districts)
    assert districts.crs.to_epsg() == 32643 and {"district", "st_nm", "censuscode"} <= set(districts.columns)
    assert (districts["st_nm"] == "Punjab").all() and len(districts) >= 2
    assert tuple(sorted(districts["district"])) == cloudy.district_names
    where = _pixel_district(lm, districts)
    names = [*districts["district"], OUTSIDE]
    expected: dict[tuple[str, int], int] = defaultdict(int)
    lab = labels[0]
    ok = lab != 255
    for d, c in zip(where[ok], lab[ok]):
        expected[(names[d], int(c))] += 1
    rows = _truth_rows(cloudy.truth_csv)
    got = {(r["district"], int(r["class_id"])): int(r["pixels"]) for r in rows}
    assert got == dict(expected)
    classes = default_classes()
    # hectares are ground areas: a 10 m pixel of this UTM grid (about 105 km east of the central
    # meridian) is 0.010005 ha on the ground (pyproj.Geod), 3e-5 more at the region's east edge, 5 km on
    t = cloudy.transform
    px_ha = geod_area_perimeter(shapely.box(t.c, t.f - 10, t.c + 10, t.f), "EPSG:32643")[0][0] / 1e4
    assert px_ha == pytest.approx(0.010005, rel=1e-4)
    for r in rows:
        assert r["crop"] == classes[int(r["class_id"])].name
        assert float(r["hectares"]) == pytest.approx(int(r["pixels"]) * px_ha, rel=5e-5)
    assert cloudy.truth["pixels"].sum() == int(ok.sum())
    assert cloudy.truth["hectares"].sum() == pytest.approx(ok.sum() * px_ha, rel=5e-5)


def test_pixels_outside_punjab_are_counted_apart(tmp_path: Path) -> None:
    # a region straddling Punjab's southern border with Haryana (Patiala district)
    r = synthesize(tmp_path, height=300, width=300, seed=1, origin=(617300.0, 3328590.0), collar=False)
    labels, _ = _read(r.labels)
    outside = r.truth[r.truth["district"] == OUTSIDE]
    assert r.district_names == ("Patiala",)
    assert 0.3 < outside["pixels"].sum() / labels.size < 0.7
    assert r.truth["pixels"].sum() == labels.size  # no collar, no clouds: every pixel counted once
    assert _truth_rows(r.truth_csv)[-1]["district"] == OUTSIDE  # listed last


def test_label_classes_per_district_match_field_polygons(odd: SynthRegion) -> None:
    labels, lm = _read(odd.labels)
    districts = gpd.read_file(odd.districts)
    fields = gpd.read_file(odd.fields)
    where = _pixel_district(lm, districts)
    lab = labels[0]
    crops = {c.id for c in default_classes().classes if c.crop}
    assert len(districts) >= 2
    seen_difference = False
    for i, g in enumerate(districts.geometry.values):
        in_labels = set(np.unique(lab[(where == i) & (lab != 255)]).tolist()) & crops
        overlap = shapely.area(shapely.intersection(fields.geometry.values, g))
        touching = set(fields["class_id"][overlap > 0].tolist())
        solid = set(fields["class_id"][overlap >= 10_000].tolist())  # >= 1 ha: ~100 pixel centres
        assert solid <= in_labels <= touching, districts["district"][i]
        seen_difference |= in_labels != crops
    assert seen_difference  # the test is not trivial: some district lacks some crop


def test_field_polygons_agree_with_label_areas(odd: SynthRegion) -> None:
    labels, _ = _read(odd.labels)
    fields = gpd.read_file(odd.fields)
    assert list(fields.columns) == ["field_id", "class_id", "crop", "area_ha", "geometry"]
    assert fields.crs.to_epsg() == 32643 and len(fields) == odd.n_fields
    assert fields["field_id"].tolist() == list(range(1, len(fields) + 1))
    assert fields.geometry.is_valid.all() and (fields.geom_type == "Polygon").all()
    # ground areas (pyproj.Geod), not the grid's (0.05 % less on this UTM grid), to 1e-6 ha
    np.testing.assert_allclose(fields["area_ha"], geod_area_perimeter(fields.geometry.values, fields.crs)[0] / 1e4,
                               rtol=0, atol=1e-6)
    assert fields["area_ha"].min() >= 0.5 and 4 < fields["area_ha"].median() < 16
    classes = default_classes()
    assert (fields["crop"] == [classes[c].name for c in fields["class_id"]]).all()
    assert not (fields["class_id"] == 0).any()  # background never makes fields
    # fields never overlap, and lie inside the footprint (the collar is cut off)
    assert fields.area.sum() == pytest.approx(shapely.union_all(fields.geometry.values).area, rel=1e-9)
    lab = labels[0]
    label_ha = {c: (lab == c).sum() * 0.01 for c in range(1, 7)}
    poly_ha = fields.groupby("class_id")["area_ha"].sum().to_dict()
    for c, ha in poly_ha.items():
        assert label_ha[c] == pytest.approx(ha, rel=0.03, abs=0.5), classes[c].name
    total_fields = sum(poly_ha.values())
    assert sum(label_ha.values()) == pytest.approx(total_fields, rel=0.01)
    # rice and wheat dominate, as in Punjab
    share = {classes[c].name: ha / total_fields for c, ha in poly_ha.items()}
    assert share["rice"] + share["wheat"] > 0.5


# --- realism -------------------------------------------------------------------------
def test_one_date_cannot_separate_the_crops_but_the_stack_can(tmp_path: Path) -> None:
    """Nearest class centroid (Mahalanobis distance, pooled within-class covariance, i.e. LDA)."""
    n = 480
    r = synthesize(tmp_path, height=n, width=n, seed=20, collar=False)
    scene, _ = _read(r.scene)
    labels = _read(r.labels)[0][0]
    x = scene.reshape(16, -1).T.astype(np.float64) / 10000
    y = labels.ravel()
    cols = np.tile(np.arange(n), n)
    crop = y > 0
    train, test = crop & (cols < n // 2), crop & (cols >= n // 2)  # spatially separate halves
    classes = np.unique(y[train])
    assert len(classes) == 6

    def accuracy(bands: list[int]) -> float:
        xb = x[:, bands]
        means = np.stack([xb[train & (y == c)].mean(0) for c in classes])
        resid = xb[train] - means[np.searchsorted(classes, y[train])]
        inv = np.linalg.inv(resid.T @ resid / len(resid))
        score = xb[test] @ inv @ means.T - 0.5 * np.einsum("kb,bc,kc->k", means, inv, means)
        return float((classes[score.argmax(1)] == y[test]).mean())

    single = [accuracy(list(range(4 * d, 4 * d + 4))) for d in range(4)]
    stack = accuracy(list(range(16)))
    assert stack >= 0.92, (stack, single)
    assert max(single) <= 0.85 and stack - max(single) >= 0.15, (stack, single)


def test_generation_is_block_by_block(tmp_path: Path) -> None:
    """Peak Python-side memory stays far below one full-scene stack and barely grows with area."""
    synthesize(tmp_path / "warm-up", height=8, width=8, seed=1)  # imports are not the generator's memory

    def peak(n: int) -> int:
        tracemalloc.start()
        try:
            synthesize(tmp_path / str(n), height=n, width=n, seed=1)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small, large = peak(768), peak(1536)
    full_uint16 = 16 * 1536 * 1536 * 2  # 75 MB; a float32 stack would be twice that
    assert large < 0.7 * full_uint16, f"peak {large / 1e6:.0f} MB"
    assert large < 1.6 * small, f"4 x the area, peak {small / 1e6:.0f} -> {large / 1e6:.0f} MB"


def test_summary_names_files_fields_districts_and_hectares(odd: SynthRegion) -> None:
    s = odd.summary()
    assert "517 x 333 px" in s and f"{odd.n_fields:,} fields" in s
    for name in odd.district_names:
        assert name in s
    ha = odd.hectares_by_class()
    assert set(ha) <= set(default_classes().names) and "rice" in ha
    assert sum(ha.values()) == pytest.approx(odd.truth["hectares"].sum())


def test_custom_class_table(tmp_path: Path) -> None:
    table = ClassTable((
        CropClass(0, "other", "#999999", crop=False),
        CropClass(1, "wheat", "#ffcc00"),
        CropClass(2, "mustard", "#ffff00"),
    ))
    r = synthesize(tmp_path, height=200, width=220, seed=4, dates=2, classes=table)
    assert load_classes(r.classes) == table
    assert set(r.truth["crop"]) == {"other", "wheat", "mustard"}
    assert _read(r.scene)[0].shape[0] == 8


# --- errors --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(height=0), "height must be 1..20000, got 0"),
        (dict(width=-5), "width must be 1..20000, got -5"),
        (dict(height=300.5), "height must be an int, got 300.5"),
        (dict(width=True), "width must be an int, got True"),
        (dict(height=30000), "height must be 1..20000, got 30000"),
        (dict(seed=-1), "seed must be >= 0, got -1"),
        (dict(dates=0), "dates must be 1..24, got 0"),
        (dict(dates=25), "dates must be 1..24, got 25"),
        (dict(cloud_fraction=-0.1), r"cloud_fraction must be in \[0, 0.9\].*got -0.1"),
        (dict(cloud_fraction=0.95), r"cloud_fraction must be in \[0, 0.9\].*got 0.95"),
        (dict(cloud_fraction="some"), "cloud_fraction must be a number, got 'some'"),
        (dict(pixel_size=0), r"pixel_size must be in \(0, 100\] metres, got 0"),
        (dict(origin=(100000.0, 1000000.0)), "outside Punjab"),
        (dict(origin="here"), r"origin must be a pair \(x, y\)"),
        (dict(classes=ClassTable((CropClass(0, "rice", "#00ff00"),))), r"has no non-crop class \(crop: false\)"),
        (dict(classes=ClassTable((CropClass(0, "bg", "#000000", crop=False),))), "has no crop class"),
    ],
)
def test_bad_arguments_raise_config_error(tmp_path: Path, kwargs: dict, match: str) -> None:
    out = tmp_path / "never"
    with pytest.raises(ConfigError, match=match) as info:
        synthesize(out, **{"height": 64, "width": 64, **kwargs})
    assert isinstance(info.value, ValueError)
    assert not out.exists()  # checked before anything is written
