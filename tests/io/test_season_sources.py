"""Reading real product metadata and every source layout of geoseg composite.

Real metadata (tests/data/sentinel2_metadata: Earth Search, Planetary Computer and Copernicus
Data Space items, a real MTD_MSIL2A.xml) must give the right scale and offset; generated
products in the Landsat, band-folder, STAC-over-HTTP and STAC API layouts must composite to
the surfaces they were written from.
"""

from __future__ import annotations

import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner

from geoseg.cli.main import cli
from geoseg.errors import SeasonError, SourceReadError
from geoseg.io.imagery import band_request, parse_baseline
from geoseg.io.safe import read_safe
from geoseg.io.season import discover
from geoseg.io.stac_items import read_stac, search_stac_api
from geoseg.ops.composite import composite_season
from tests.remote_servers import GDAL_HTTP_ENV, range_server
from tests.season_products import scl_of, write_item, write_tif

DATA = Path(__file__).resolve().parents[1] / "data" / "sentinel2_metadata"
CRS43 = "EPSG:32643"
T10 = Affine(10, 0, 600000.0, 0, -10, 3400000.0)


def test_real_items_scale_offset_and_keys():
    es = read_stac(str(DATA / "S2A_28QCH_20200714_0_L2A.json"))[0]  # Earth Search, STAC 1.0.0-beta
    assert es.baseline == "02.14" and es.assets["red"].offset == 0.0 and es.assets["red"].scale == 1e-4
    assert es.assets["red"].href.endswith("/B04.tif") and es.mask.href.endswith("/SCL.tif")
    assert es.assets["nir08"].href.endswith("/B8A.tif") and es.assets["nir08"].resolution == 20
    pc = read_stac(str(DATA / "S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531.json"))[0]
    assert pc.baseline == "02.12" and pc.assets["red"].offset == 0.0 and pc.tile == "06VVN" and pc.orbit == "43"
    assert pc.harmonisation == "s2:processing_baseline 02.12"
    cdse = read_stac(str(DATA / "S2C_MSIL2A_20250330T100051_N0511_R122_T33UWP_20250330T145914_cdse_stac_v110.json"))[0]
    assert cdse.assets["red"].offset == -0.1 and cdse.assets["red"].href.endswith("B04_10m.jp2")
    assert cdse.assets["swir16"].href.endswith("B11_20m.jp2")  # the finest of _20m and _60m
    assert cdse.mask.href.endswith("SCL_20m.jp2") and cdse.platform == "sentinel-2c"
    assert cdse.mask.href.startswith("/vsis3/eodata/")


def test_real_mtd_with_generated_pixels(tmp_path):
    """The real MTD_MSIL2A.xml (baseline 05.10, offsets -1000) with tiny images at the paths it lists."""
    import re

    safe = tmp_path / "S2B_MSIL2A_20231217T135659_N0510_R067_T21JUK_20231217T175625.SAFE"
    safe.mkdir()
    mtd = (DATA / "MTD_MSIL2A_S2B_20231217_N0510_T21JUK.xml").read_text()
    (safe / "MTD_MSIL2A.xml").write_text(mtd)
    t = Affine(10, 0, 699960.0, 0, -10, 6300040.0)
    for stem in re.findall(r"<IMAGE_FILE>([^<]+)</IMAGE_FILE>", mtd):
        res = int(stem[-3:-1])
        arr = np.full((8, 8), 1500 if "SCL" not in stem else 4, np.uint16 if "SCL" not in stem else np.uint8)
        p = safe / f"{stem}.jp2"
        p.parent.mkdir(parents=True, exist_ok=True)
        with rasterio.open(p, "w", driver="JP2OpenJPEG", height=8, width=8, count=1, dtype=arr.dtype.name,
                           crs="EPSG:32721", transform=t @ Affine.scale(res / 10), QUALITY="100",
                           REVERSIBLE="YES") as dst:
            dst.write(arr, 1)
    scene = read_safe(safe)
    assert scene.baseline == "05.10" and scene.platform == "sentinel-2b" and scene.orbit == "67"
    assert scene.assets["red"].offset == -0.1 and scene.assets["red"].href.endswith("B04_10m.jp2")
    assert scene.assets["rededge1"].href.endswith("B05_20m.jp2") and scene.mask.href.endswith("SCL_20m.jp2")
    out = tmp_path / "o.tif"
    composite_season(out, [safe], bands="B04,B05", periods="season")
    with rasterio.open(out) as src:
        assert (src.read() == 500).all()  # (1500 - 1000) / 10000 = 0.05


def test_baseline_parsing_and_band_requests():
    assert parse_baseline("04.00") == (4, 0) and parse_baseline("N0400") == (4, 0) and parse_baseline(None) is None
    assert band_request("b2, B8a ,swir22") == {"B02": "blue", "B8A": "nir08", "swir22": "swir22"}
    with pytest.raises(SeasonError, match="band 'B10'"):
        band_request("B10")


def _landsat(folder: Path, day: str, refl: np.ndarray, qa: np.ndarray) -> None:
    sid = f"LC09_L2SP_148039_{day.replace('-', '')}_20240620_02_T1"
    t30 = Affine(30, 0, 600000.0, 0, -30, 3399990.0)  # edges on multiples of 30 m, as the output's
    for n, r in zip(range(2, 8), refl):
        write_tif(folder / f"{sid}_SR_B{n}.TIF", np.rint((r + 0.2) / 2.75e-5).astype(np.uint16), CRS43, t30)
    write_tif(folder / f"{sid}_QA_PIXEL.TIF", qa.astype(np.uint16), CRS43, t30, nodata=1)
    mtl = {"LANDSAT_METADATA_FILE": {
        "IMAGE_ATTRIBUTES": {"SPACECRAFT_ID": "LANDSAT_9", "DATE_ACQUIRED": day, "SCENE_CENTER_TIME": "05:20:11Z",
                             "WRS_PATH": "148", "WRS_ROW": "039"},
        "LEVEL2_SURFACE_REFLECTANCE_PARAMETERS": {
            **{f"REFLECTANCE_MULT_BAND_{n}": "2.75E-05" for n in range(1, 8)},
            **{f"REFLECTANCE_ADD_BAND_{n}": "-0.200000" for n in range(1, 8)}}}}
    (folder / f"{sid}_MTL.json").write_text(json.dumps(mtl))


def test_landsat_c2_l2_folder(tmp_path):
    rng = np.random.default_rng(1)
    refl = [np.round(rng.uniform(0.02, 0.4, (20, 20)), 4) for _ in range(6)]
    clear, cloud, shadow = 21824, 22280, 23888
    qa = np.full((20, 20), clear)
    qa[2:5, 2:5] = cloud
    qa[10, 10] = shadow
    _landsat(tmp_path / "ls", "2024-06-15", refl, qa)
    scenes = discover([tmp_path / "ls"])
    assert len(scenes) == 1 and scenes[0].sensor == "landsat" and scenes[0].platform == "landsat-9"
    out = tmp_path / "ls.tif"
    res = composite_season(out, [tmp_path / "ls"], bands="blue,red,nir", periods="season", resolution=30)
    assert res.bands == ["2024-06-15_blue", "2024-06-15_red", "2024-06-15_nir"]
    with rasterio.open(out) as src:
        got = src.read()
    masked = qa != clear
    for i, band in enumerate((0, 2, 3)):  # SR_B2, SR_B4, SR_B5
        dn = np.rint((refl[band] + 0.2) / 2.75e-5)
        exp = np.clip(np.rint((dn * 2.75e-5 - 0.2) * 1e4), 1, None)
        np.testing.assert_array_equal(got[i][~masked], exp[~masked])
        assert (got[i][masked] == 0).all()
    (next((tmp_path / "ls").glob("*_MTL.json"))).unlink()
    with pytest.raises(SeasonError, match=r"has no .*_MTL.json"):
        discover([tmp_path / "ls"])


def test_band_folder_needs_its_offset_stated(tmp_path):
    refl = np.round(np.random.default_rng(2).uniform(0.02, 0.4, (32, 32)), 4)
    folder = tmp_path / "bands"
    write_tif(folder / "T43RFQ_20240605T053649_B04_10m.tif", (np.rint(refl * 1e4) + 1000).astype(np.uint16), CRS43, T10)
    write_tif(folder / "T43RFQ_20240605T053649_SCL_20m.tif", np.full((16, 16), 4, np.uint8), CRS43,
              T10 @ Affine.scale(2))
    with pytest.raises(SeasonError, match=r"B04_10m.tif: nothing says how its numbers become reflectance.*--boa-offset"):
        composite_season(tmp_path / "o.tif", [folder], bands="B04", periods="season")
    composite_season(tmp_path / "o.tif", [folder], bands="B04", periods="season", boa_offset=-1000)
    with rasterio.open(tmp_path / "o.tif") as src:
        np.testing.assert_array_equal(src.read(1), np.rint(refl * 1e4))
    # the file's own GDAL scale/offset wins, and needs no option
    with rasterio.open(folder / "T43RFQ_20240605T053649_B04_10m.tif", "r+") as dst:
        dst.scales, dst.offsets = (1e-4,), (-0.1,)
    composite_season(tmp_path / "p.tif", [folder], bands="B04", periods="season")
    with rasterio.open(tmp_path / "p.tif") as src:
        np.testing.assert_array_equal(src.read(1), np.rint(refl * 1e4))


def _one_item(folder: Path, seed: int = 3) -> np.ndarray:
    refl = {b: np.round(np.random.default_rng(seed).uniform(0.02, 0.4, (32, 32)), 4) for b in ("B04", "B08")}
    write_item(folder, "S2A_43RFQ_20240605_0_L2A", "2024-06-05", CRS43, T10, refl, scl_of(np.zeros((32, 32), bool)))
    return refl["B04"]


def test_items_and_cogs_over_http(tmp_path, monkeypatch):
    for k, v in GDAL_HTTP_ENV.items():
        monkeypatch.setenv(k, v)
    b04 = _one_item(tmp_path / "srv")
    with range_server(tmp_path / "srv") as srv:
        res = composite_season(tmp_path / "o.tif", [f"{srv.url}/S2A_43RFQ_20240605_0_L2A.json"], bands="B04",
                               periods="season")
        assert any(p.endswith("/B04.tif") and rng for _, p, rng in srv.requests)  # COG ranges, not whole files
    assert res.scenes == 1
    with rasterio.open(tmp_path / "o.tif") as src:
        np.testing.assert_array_equal(src.read(1), np.rint(b04 * 1e4))


class _StacApi:
    def __init__(self, items: list[dict]):
        self.items, self.bodies = items, []

    def __enter__(self) -> str:
        api = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a: object) -> None:
                pass

            def _send(self, doc: dict) -> None:
                body = json.dumps(doc).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                base = f"http://127.0.0.1:{self.server.server_address[1]}"
                if self.path.startswith("/search"):
                    api.bodies.append(self.path)
                    self._send({"type": "FeatureCollection", "features": api.items, "links": []})
                    return
                self._send({"type": "Catalog", "id": "test", "stac_version": "1.0.0", "description": "test api",
                            "conformsTo": ["https://api.stacspec.org/v1.0.0/core",
                                          "https://api.stacspec.org/v1.0.0/item-search"],
                            "links": [{"rel": "self", "href": base + "/"}, {"rel": "root", "href": base + "/"},
                                      {"rel": "search", "href": base + "/search", "method": "POST",
                                       "type": "application/geo+json"}]})

            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length", 0))
                api.bodies.append(self.rfile.read(n).decode())
                self._send({"type": "FeatureCollection", "features": api.items, "links": []})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_stac_api_search_and_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    b04 = _one_item(tmp_path / "items")
    item = json.loads((tmp_path / "items" / "S2A_43RFQ_20240605_0_L2A.json").read_text())
    for a in item["assets"].values():  # an API returns absolute hrefs
        a["href"] = str((tmp_path / "items" / a["href"]).resolve())
    with _StacApi([item]) as url:
        scenes = search_stac_api(url, ["sentinel-2-l2a"], (75.0, 30.0, 76.0, 31.0), "2024-06-01", "2024-07-01")
        assert [s.id for s in scenes] == ["S2A_43RFQ_20240605_0_L2A"]
        out = CliRunner().invoke(cli, ["composite", str(tmp_path / "api.tif"), "--stac-api", url, "--area",
                                       "76.0,30.65,76.1,30.75", "--start", "2024-06-01", "--end", "2024-07-01",
                                       "--bands", "B04", "--periods", "season", "--crs", CRS43, "--json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output[out.output.index("{"):])
    assert doc["scenes"] == 1 and doc["bands"] == ["2024-06-01_B04"]
    with rasterio.open(tmp_path / "api.tif") as src:
        win = rasterio.windows.from_bounds(*rasterio.transform.array_bounds(32, 32, T10), src.transform)
        got = src.read(1, window=win.round_offsets().round_lengths())
    np.testing.assert_array_equal(got, np.rint(b04 * 1e4))
    with pytest.raises(SourceReadError, match=r"cannot reach the STAC API .*network"):
        search_stac_api("http://127.0.0.1:9", ["sentinel-2-l2a"], (75, 30, 76, 31), "2024-06-01", "2024-07-01")


def test_cli_one_line_errors(tmp_path):
    _one_item(tmp_path / "items")
    item = tmp_path / "items" / "S2A_43RFQ_20240605_0_L2A.json"
    doc = json.loads(item.read_text())
    for a in doc["assets"].values():
        a.pop("raster:bands", None)
    doc["properties"].pop("s2:processing_baseline")
    (tmp_path / "bare").mkdir()
    shutil.copytree(tmp_path / "items" / "S2A_43RFQ_20240605_0_L2A", tmp_path / "bare" / "S2A_43RFQ_20240605_0_L2A")
    (tmp_path / "bare" / "x.json").write_text(json.dumps(doc))
    runner = CliRunner()
    for args, message in (
        (["composite", str(tmp_path / "o.tif"), str(tmp_path / "bare"), "--bands", "B04"],
         "processing baseline"),
        (["composite", str(tmp_path / "o.tif"), str(tmp_path / "items"), "--bands", "B05"], "has no B05 band"),
        (["composite", str(tmp_path / "o.tif"), str(tmp_path / "items"), "--periods", "x:2024-06-01/2024-05-01"],
         "ends 2024-05-01 on or before it starts"),
    ):
        out = runner.invoke(cli, args)
        assert out.exit_code == 1, out.output
        lines = [ln for ln in out.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], out.output
    assert not (tmp_path / "o.tif").exists()


def test_cli_on_a_dask_scheduler(tmp_path):
    """--scheduler: the windows run as tasks of a real scheduler's worker processes; same pixels as threads."""
    from distributed import LocalCluster

    _one_item(tmp_path / "items")
    runner = CliRunner()
    local = runner.invoke(cli, ["composite", str(tmp_path / "a.tif"), str(tmp_path / "items"), "--bands", "B04,B08",
                                "--block", "16"])
    assert local.exit_code == 0, local.output
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None) as cluster:
        out = runner.invoke(cli, ["composite", str(tmp_path / "b.tif"), str(tmp_path / "items"), "--bands", "B04,B08",
                                  "--block", "16", "--scheduler", cluster.scheduler_address])
    assert out.exit_code == 0, out.output
    with rasterio.open(tmp_path / "a.tif") as a, rasterio.open(tmp_path / "b.tif") as b:
        assert (a.read() == b.read()).all() and a.transform == b.transform


def test_block_caches_are_megabytes_not_bytes():
    # rasterio hands an integer GDAL_CACHEMAX to GDAL as bytes: a value meant as megabytes would be
    # a cache of a few bytes, which decodes every block again for every read
    from geoseg.io.raster import COG_COPY_CACHE_BYTES
    from geoseg.io.season import gdal_options

    assert gdal_options()["GDAL_CACHEMAX"] == 16 << 20
    assert gdal_options(cache_mb=64)["GDAL_CACHEMAX"] == 64 << 20
    assert COG_COPY_CACHE_BYTES >= 1 << 20
