"""GPS point labels: pixels on the image grid, what is dropped and reported, and the errors."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine

from geoseg.classes import NODATA, load_classes
from geoseg.core.grid import Window
from geoseg.errors import LabelError
from geoseg.io.labels import VectorLabels, label_counts, open_labels
from geoseg.io.points import PointLabels, PointReport
from geoseg.io.raster import raster_info

TF = Affine(10, 0, 500_000, 0, -10, 3_400_000)
H, W = 40, 50
CLASSES = """classes:
  - {id: 0, name: background, color: "#000000"}
  - {id: 1, name: rice, color: "#00ff00"}
  - {id: 2, name: wheat, color: "#ffff00"}
"""


@pytest.fixture()
def scene(tmp_path: Path) -> Path:
    """3 bands, uint16, nodata 0 over rows 30..39 (a cloud) in every band."""
    a = np.full((3, H, W), 100, np.uint16)
    a[:, 30:, :] = 0
    p = tmp_path / "scene.tif"
    with rasterio.open(p, "w", driver="GTiff", height=H, width=W, count=3, dtype="uint16", crs="EPSG:32643",
                       transform=TF, nodata=0) as dst:
        dst.write(a)
    return p


@pytest.fixture()
def classes(tmp_path: Path):  # type: ignore[no-untyped-def]
    p = tmp_path / "classes.yaml"
    p.write_text(CLASSES)
    return load_classes(p)


def _at(r: float, c: float) -> tuple[float, float]:
    x, y = TF @ (c, r)
    return float(x), float(y)


def _write(path: Path, xy: list[tuple[float, float]], crops: list, crs: str = "EPSG:32643") -> Path:  # type: ignore[type-arg]
    gdf = gpd.GeoDataFrame({"crop": crops}, geometry=shapely.points(np.asarray(xy)), crs="EPSG:32643")
    gdf.to_crs(crs).to_file(path)
    return path


def test_points_label_their_pixels_and_report_outside_and_nodata(scene, classes, tmp_path) -> None:  # type: ignore[no-untyped-def]
    xy = [_at(2.5, 3.5), _at(10.2, 20.7), _at(-3, 5), _at(5, 60), _at(35.5, 10.5), _at(20.5, 40.5)]
    crops = ["rice", "wheat", "rice", "wheat", "rice", None]
    path = _write(tmp_path / "p.gpkg", xy, crops, crs="EPSG:4326")
    info = raster_info(scene)
    lab = open_labels(path, info, classes, field="crop")
    assert isinstance(lab, PointLabels)
    r = lab.report
    assert (r.total, r.used, r.outside, r.on_nodata, r.no_class, r.conflicting) == (6, 2, 2, 1, 1, 0)
    assert r.pixels == 2
    a = lab.read(Window(0, 0, W, H))
    expected = np.full((H, W), NODATA, np.uint8)
    expected[2, 3], expected[10, 20] = 1, 2
    np.testing.assert_array_equal(a, expected)
    line = r.warning()
    assert line is not None and line.startswith("warning: ") and "2 of 6 points used" in line
    assert "2 outside the image" in line and "1 on image nodata" in line and "1 with an empty class value" in line
    # a window reaching past the image: outside is no label
    e = lab.read(Window(-2, -1, 8, 8))
    assert e[3, 5] == 1 and int((e != NODATA).sum()) == 1


def test_radius_and_overlapping_points_of_different_classes(scene, classes, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # rice at pixel (5, 5) and wheat at (5, 7), radius 10 m: the plus shapes share pixel (5, 6)
    # a third point of rice at (5, 6) exactly: all its 5 pixels are shared with one or the other
    xy = [_at(5.5, 5.5), _at(5.5, 7.5), _at(20.5, 20.5), _at(20.5, 21.5)]
    path = _write(tmp_path / "p.geojson", xy, ["rice", "wheat", "rice", "rice"])
    lab = open_labels(path, raster_info(scene), classes, field="crop", point_radius=10)
    assert isinstance(lab, PointLabels)
    a = lab.read(Window(0, 0, W, H))
    assert a[5, 6] == NODATA  # claimed by rice and wheat: dropped
    assert a[5, 5] == a[4, 5] == a[6, 5] == a[5, 4] == 1
    assert a[5, 7] == a[4, 7] == a[6, 7] == a[5, 8] == 2
    # two rice points next to each other: shared pixels stay
    assert (a[19:22, 20:22] == 1).sum() == 6 and a[20, 19] == 1 and a[20, 22] == 1
    assert lab.report.conflict_pixels == 1 and lab.report.used == 4 and lab.report.pixels == 16
    assert "1 pixels claimed by points of different classes dropped" in lab.report.line()
    # each point's pixels count in the block of the point itself
    counts = label_counts(lab, (H, W), 16)
    assert counts[0, 0].tolist() == [0, 4, 4] and counts[1, 1].tolist() == [0, 10, 0]


def test_a_point_whose_only_pixel_is_contested_is_reported(scene, classes, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = _write(tmp_path / "p.gpkg", [_at(3.2, 3.2), _at(3.8, 3.8), _at(9.5, 9.5)], [1, 2, 2])
    lab = open_labels(path, raster_info(scene), classes, field="crop")
    r = lab.report
    assert (r.used, r.conflicting, r.conflict_pixels) == (1, 2, 1)
    assert "2 covered by points of another class" in r.line()


def test_ids_and_names_both_work_and_the_subset_keeps_its_points(scene, classes, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = _write(tmp_path / "p.gpkg", [_at(1.5, 1.5), _at(2.5, 2.5), _at(3.5, 3.5)], ["2", "rice", "0"])
    lab = open_labels(path, raster_info(scene), classes, field="crop")
    assert lab.ids.tolist() == [2, 1, 0]
    sub = lab.subset(np.array([False, True, True]))
    a = sub.read(Window(0, 0, 5, 5))
    assert a[1, 1] == NODATA and a[2, 2] == 1 and a[3, 3] == 0
    assert sub.anchors.tolist() == [[2, 2], [3, 3]] and sub.pixels_per_point.tolist() == [1, 1]


def test_unknown_crop_names_are_one_error_naming_file_values_classes_and_fix(scene, classes, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = _write(tmp_path / "p.gpkg", [_at(1.5, 1.5), _at(2.5, 2.5), _at(3.5, 3.5)], ["Rice", "barley", "rice"])
    with pytest.raises(LabelError) as e:
        open_labels(path, raster_info(scene), classes, field="crop")
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}: attribute 'crop' holds values 'Rice', 'barley' not in the class file")
    assert "0=background, 1=rice, 2=wheat" in msg and "write each as one of these class names or ids" in msg


def test_empty_lines_mixed_missing_field_and_degrees(scene, classes, tmp_path) -> None:  # type: ignore[no-untyped-def]
    info = raster_info(scene)
    empty = tmp_path / "empty.gpkg"
    gpd.GeoDataFrame({"crop": []}, geometry=gpd.GeoSeries([], crs="EPSG:32643")).to_file(empty)
    with pytest.raises(LabelError, match=r"empty\.gpkg: holds no geometries"):
        open_labels(empty, info, classes, field="crop")
    lines = tmp_path / "lines.gpkg"
    x0, y0 = _at(1, 1)
    gpd.GeoDataFrame({"crop": ["rice"]}, geometry=[shapely.LineString([(x0, y0), (x0 + 50, y0 - 50)])],
                     crs="EPSG:32643").to_file(lines)
    with pytest.raises(LabelError, match=r"lines\.gpkg: holds LineString geometries; labels are points .* not lines"):
        open_labels(lines, info, classes, field="crop")
    mixed = tmp_path / "mixed.geojson"
    geoms = [shapely.Point(x0, y0), shapely.box(x0, y0 - 50, x0 + 50, y0)]
    gpd.GeoDataFrame({"crop": ["rice", "rice"]}, geometry=geoms,
                     crs="EPSG:32643").to_file(mixed)
    with pytest.raises(LabelError, match=r"mixes Point, Polygon geometries"):
        open_labels(mixed, info, classes, field="crop")
    pts = _write(tmp_path / "p.gpkg", [_at(1.5, 1.5)], ["rice"])
    with pytest.raises(LabelError, match=r"has no attribute 'crop_name'; its attributes are \['crop'\]"):
        open_labels(pts, info, classes, field="crop_name")
    with pytest.raises(LabelError, match=r"needs the attribute holding the class; pass --label-field"):
        open_labels(pts, info, classes)
    # a radius given for polygons or a raster is refused; polygons still open as field labels
    poly = tmp_path / "poly.gpkg"
    gpd.GeoDataFrame({"crop": ["rice"]}, geometry=[shapely.box(x0, y0 - 50, x0 + 50, y0)],
                     crs="EPSG:32643").to_file(poly)
    assert isinstance(open_labels(poly, info, classes, field="crop"), VectorLabels)
    with pytest.raises(LabelError, match=r"--point-radius 10 applies to point labels"):
        open_labels(poly, info, classes, field="crop", point_radius=10)
    with pytest.raises(LabelError, match=r"--point-radius 10 applies to vector label files"):
        open_labels(scene, info, classes, point_radius=10)


def test_a_radius_on_an_image_in_degrees_is_refused(classes, tmp_path) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "geo.tif"
    tf = Affine(0.0001, 0, 75.0, 0, -0.0001, 31.0)
    with rasterio.open(p, "w", driver="GTiff", height=10, width=10, count=1, dtype="uint8", crs="EPSG:4326",
                       transform=tf) as dst:
        dst.write(np.ones((1, 10, 10), np.uint8))
    gdf = gpd.GeoDataFrame({"crop": ["rice"]}, geometry=[shapely.Point(75.00055, 30.99955)], crs="EPSG:4326")
    gdf.to_file(tmp_path / "p.gpkg")
    lab = open_labels(tmp_path / "p.gpkg", raster_info(p), classes, field="crop")
    assert lab.rows.tolist() == [4] and lab.cols.tolist() == [5]
    with pytest.raises(LabelError, match=r"--point-radius 10 m on an image in degrees .* use radius 0"):
        open_labels(tmp_path / "p.gpkg", raster_info(p), classes, field="crop", point_radius=10)


def test_report_line_when_all_points_are_used() -> None:
    r = PointReport("p.gpkg", 3, 3, 0, 0, 0, 0, 0, 3, 0.0)
    assert r.warning() is None and r.line() == "p.gpkg: 3 of 3 points used (3 labelled pixels, radius 0 m)"
