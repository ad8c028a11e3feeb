"""The STAC item of a mask and its confidence: schema-valid (official schemas, offline) and true to the rasters."""

from __future__ import annotations

import copy
import datetime as dt
import json

import numpy as np
import pytest
from affine import Affine
from pyproj import Transformer

from geoseg.classes import default_classes
from geoseg.core.grid import Window as GridWindow
from geoseg.errors import RasterReadError
from geoseg.io.raster import confidence_writer, mask_writer
from geoseg.io.stac import COG_MEDIA_TYPE, STAC_EXTENSIONS, StacAsset, stac_item, write_stac_item
from tests.stac_schema import stac_errors

TF = Affine(10, 0, 600_000, 0, -10, 3_380_000)
H, W = 120, 90


@pytest.fixture
def rasters(tmp_path):  # type: ignore[no-untyped-def]
    classes = default_classes()
    with mask_writer(tmp_path / "mask.tif", shape=(H, W), transform=TF, crs="EPSG:32643", classes=classes) as m:
        m.write(np.ones((H, W), "uint8"), GridWindow(0, 0, W, H))
    with confidence_writer(tmp_path / "confidence.tif", shape=(H, W), transform=TF, crs="EPSG:32643") as c:
        c.write(np.full((H, W), 128, "uint8"), GridWindow(0, 0, W, H))
    return tmp_path


def _item(folder):  # type: ignore[no-untyped-def]
    assets = {"mask": StacAsset(folder / "mask.tif", "Crop class mask", ("data",), default_classes()),
              "confidence": StacAsset(folder / "confidence.tif", "Confidence")}
    return stac_item(folder / "stac_item.json", "run-1", assets, properties={"geoseg:workflow": "demo"},
                     when=dt.datetime(2026, 12, 4, 18, 0, tzinfo=dt.timezone.utc))


def test_item_is_valid_against_the_official_schemas(rasters):  # type: ignore[no-untyped-def]
    item = _item(rasters)
    assert stac_errors(item) == []
    assert item["stac_version"] == "1.0.0" and item["stac_extensions"] == list(STAC_EXTENSIONS)
    assert item["properties"] == {"datetime": "2026-12-04T18:00:00Z", "created": "2026-12-04T18:00:00Z",
                                  "geoseg:workflow": "demo"}


def test_the_validator_catches_a_broken_item(rasters):  # type: ignore[no-untyped-def]
    item = _item(rasters)
    bad = copy.deepcopy(item)
    bad["assets"]["mask"]["classification:classes"][1]["color_hint"] = "#1A9850"  # no '#' in a color hint
    bad["assets"]["mask"]["proj:shape"] = ["120", "90"]
    bad["bbox"] = [1, 2]
    errors = stac_errors(bad)
    assert any("color_hint" in e for e in errors) and any("proj:shape" in e for e in errors)
    assert any("bbox" in e for e in errors)


def test_item_describes_the_rasters(rasters):  # type: ignore[no-untyped-def]
    item = _item(rasters)
    mask, conf = item["assets"]["mask"], item["assets"]["confidence"]
    assert (mask["href"], conf["href"], mask["type"]) == ("mask.tif", "confidence.tif", COG_MEDIA_TYPE)
    for a in (mask, conf):
        assert (a["proj:epsg"], a["proj:shape"], a["proj:transform"]) == (32643, [H, W], [10, 0, 600_000, 0, -10, 3_380_000])
    assert mask["raster:bands"] == [{"data_type": "uint8", "nodata": 255, "scale": 1.0, "offset": 0.0,
                                     "spatial_resolution": 10.0}]
    assert conf["raster:bands"] == [{"data_type": "uint8", "nodata": 0, "scale": pytest.approx(1 / 255), "offset": 0.0,
                                     "spatial_resolution": 10.0}]
    classes = mask["classification:classes"]
    assert [(c["value"], c["name"], c["color_hint"]) for c in classes] == [
        (c.id, c.name, c.color[1:].upper()) for c in default_classes()]
    assert classes[0]["description"] == "background (not a crop)" and 255 not in [c["value"] for c in classes]
    assert "classification:classes" not in conf


def test_footprint_matches_pyproj(rasters):  # type: ignore[no-untyped-def]
    item = _item(rasters)
    to4326 = Transformer.from_crs("EPSG:32643", "EPSG:4326", always_xy=True)
    corners = [to4326.transform(x, y) for x, y in [(600_000, 3_380_000), (600_900, 3_380_000), (600_900, 3_378_800),
                                                     (600_000, 3_378_800)]]
    ring = item["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1] and len(ring) == 81
    for lon, lat in corners:  # every corner is a vertex of the ring
        assert min(abs(p[0] - lon) + abs(p[1] - lat) for p in ring) < 1e-9
    lons, lats = zip(*corners)
    assert item["bbox"] == pytest.approx([min(lons), min(lats), max(lons), max(lats)], abs=1e-9)
    # counter-clockwise exterior ring (RFC 7946): positive shoelace area
    area = sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(ring, ring[1:]))
    assert area > 0


def test_hrefs_are_relative_to_the_item(rasters, tmp_path_factory):  # type: ignore[no-untyped-def]
    elsewhere = rasters / "sub" / "item.json"
    item = stac_item(elsewhere, "x", {"mask": StacAsset(rasters / "mask.tif", "m", classes=default_classes())})
    assert item["assets"]["mask"]["href"] == "../mask.tif"


def test_write_is_atomic_json(rasters):  # type: ignore[no-untyped-def]
    path = write_stac_item(rasters / "stac_item.json", _item(rasters))
    assert json.loads(path.read_text()) == _item(rasters)
    assert not [p for p in rasters.iterdir() if ".partial-" in p.name]


def test_a_missing_raster_is_a_clear_error(tmp_path):  # type: ignore[no-untyped-def]
    with pytest.raises(RasterReadError, match="nope.tif: file not found"):
        stac_item(tmp_path / "i.json", "x", {"mask": StacAsset(tmp_path / "nope.tif", "m")})
