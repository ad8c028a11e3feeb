"""Servers on 127.0.0.1 for the remote-input tests, and a small mask with districts whose areas are known.

* :func:`range_server`: an HTTP server for a folder that answers HEAD and byte-range GETs (206),
  as GDAL's ``/vsicurl/`` needs (Python's ``http.server`` ignores ``Range``). It records the
  requests, so a test can tell GDAL really read ranges of the file.
* :func:`s3_server`: moto's S3 API server, with a bucket, and the GDAL settings that point
  ``/vsis3/`` at it.

Nothing listens beyond 127.0.0.1.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import shapely
from affine import Affine
from rasterio.windows import Window

from geoseg.classes import default_classes
from geoseg.io.raster import mask_writer

from .geodesic_truth import geod_area_perimeter

#: The mask's grid: 40 x 60 px of 10 m (1 px = 0.01 ha), EPSG:32643.
SHAPE = (40, 60)
TRANSFORM = Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 3_400_000.0)
CRS = "EPSG:32643"
#: Ground area (ha) of one pixel here, on UTM 43N's central meridian (pyproj.Geod): 0.08 % more than
#: the grid's 0.01 ha (scale 0.9996); it varies by under 1e-9 over these 400 x 600 m.
PX_HA = float(geod_area_perimeter(shapely.box(500_000, 3_399_990, 500_010, 3_400_000), CRS)[0][0]) / 1e4
#: Hectares per (district, crop), counted by hand: rows 0-4 are nodata; rice (1) in columns 0-29,
#: wheat (2) in columns 30-59; district West is columns 0-19, East columns 20-59.
EXPECTED_HA = {("West", "rice"): 35 * 20 * PX_HA, ("East", "rice"): 35 * 10 * PX_HA, ("East", "wheat"): 35 * 30 * PX_HA}


def write_mask_and_districts(folder: Path) -> tuple[Path, Path]:
    """Write ``mask.tif`` (a geoseg mask COG) and ``districts.geojson`` (two boxes on pixel edges) into ``folder``."""
    import geopandas as gpd

    folder.mkdir(parents=True, exist_ok=True)
    arr = np.full(SHAPE, 2, np.uint8)
    arr[:, :30] = 1
    arr[:5] = 255
    with mask_writer(folder / "mask.tif", shape=SHAPE, transform=TRANSFORM, crs=CRS, classes=default_classes()) as w:
        w.write(arr, Window(0, 0, SHAPE[1], SHAPE[0]))
    x0, y0 = TRANSFORM.c, TRANSFORM.f
    y1 = y0 - 10 * SHAPE[0]
    gdf = gpd.GeoDataFrame({"district": ["West", "East"]},
                           geometry=[shapely.box(x0, y1, x0 + 200, y0), shapely.box(x0 + 200, y1, x0 + 600, y0)],
                           crs=CRS)
    gdf.to_file(folder / "districts.geojson", driver="GeoJSON")
    return folder / "mask.tif", folder / "districts.geojson"


@dataclass
class RangeServer:
    url: str
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # (method, path, Range header)


def _handler(root: Path, log: list[tuple[str, str, str | None]]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # quiet
            pass

        def _file(self) -> Path | None:
            p = (root / self.path.split("?")[0].lstrip("/")).resolve()
            return p if p.is_file() and root.resolve() in p.parents else None

        def do_HEAD(self) -> None:  # noqa: N802
            log.append(("HEAD", self.path, None))
            f = self._file()
            if f is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(f.stat().st_size))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()

        def do_GET(self) -> None:  # noqa: N802
            rng = self.headers.get("Range")
            log.append(("GET", self.path, rng))
            f = self._file()
            if f is None:
                self.send_error(404)
                return
            data = f.read_bytes()
            size = len(data)
            m = re.fullmatch(r"bytes=(\d*)-(\d*)", rng or "")
            if m is None:
                self.send_response(200)
                body = data
            else:
                a, b = m.groups()
                start, end = (size - int(b), size - 1) if a == "" else (int(a), min(int(b) if b else size - 1, size - 1))
                if start >= size:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.end_headers()
                    return
                body = data[start:end + 1]
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            self.wfile.write(body)

    return Handler


@contextmanager
def range_server(root: Path) -> Iterator[RangeServer]:
    """Serve ``root`` on ``http://127.0.0.1:<free port>/`` with HEAD and byte ranges."""
    log: list[tuple[str, str, str | None]] = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(root, log))
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        yield RangeServer(f"http://127.0.0.1:{httpd.server_address[1]}", log)
    finally:
        httpd.shutdown()
        httpd.server_close()


#: GDAL settings that keep /vsicurl/ from listing folders (quicker, fewer requests).
GDAL_HTTP_ENV = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "CPL_VSIL_CURL_USE_HEAD": "YES",
                 "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}


@dataclass
class S3Server:
    endpoint: str  # host:port
    bucket: str
    env: dict[str, str]  # GDAL's settings for /vsis3/ against it


@contextmanager
def s3_server(files: dict[str, Path], bucket: str = "geoseg-test") -> Iterator[S3Server]:
    """moto's S3 server on 127.0.0.1 with ``bucket`` holding ``files`` (key -> local file)."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"{host}:{port}"
        env = {"AWS_S3_ENDPOINT": endpoint, "AWS_HTTPS": "NO", "AWS_VIRTUAL_HOSTING": "FALSE",
               "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
               "AWS_DEFAULT_REGION": "us-east-1", **GDAL_HTTP_ENV}
        s3 = boto3.client("s3", endpoint_url=f"http://{endpoint}", region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
        s3.create_bucket(Bucket=bucket)
        for key, path in files.items():
            s3.upload_file(str(path), bucket, key)
        yield S3Server(endpoint, bucket, env)
    finally:
        server.stop()


def subprocess_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment, with geoseg from this checkout first on the path, plus ``extra``."""
    root = str(Path(__file__).resolve().parents[1])
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": root + (os.pathsep + path if path else ""), **(extra or {})}
