"""Which library should `geoseg composite` build on? The same monthly-median job through each candidate.

Generates its own Sentinel-2-like L2A items with rasterio into a folder (per-band uint16 COGs
B02, B03, B04, B08 at 10 m, B11 at 20 m, SCL at 20 m; smooth surfaces with cloud blobs; items in
EPSG:32643 and EPSG:32644 over one area near the 78 E zone boundary; pystac-readable item JSONs
with ``proj:epsg``, per-asset ``proj:shape`` / ``proj:transform`` and ``raster:bands``
scale/offset, the offset changing with the processing baseline on 2022-01-25), then runs the
job once per candidate and size, each in a fresh subprocess:

* reproject onto one EPSG:32643 10 m grid (bilinear for reflectance, nearest for SCL),
* drop SCL classes 0, 1, 3, 8, 9, 10 and DN 0 (nodata),
* harmonise: reflectance = DN * scale + offset from the item's ``raster:bands``,
* per month, the median of each pixel's clear observations per band (float32, NaN where none)
  and the number of clear observations (uint8),
* written window by window into ``.npy`` files on disk (never gathered in memory).

Candidates (all on a dask.distributed LocalCluster of 2 single-thread worker processes, the
same GDAL settings given to every process through the environment):

* ``odc``: ``odc.stac.load`` with dask chunks, then xarray masking and ``resample(time="1MS").median()``;
* ``stackstac``: ``stackstac.stack`` (one call for the bands, one for SCL: it takes one
  resampling per call), then the same xarray steps;
* ``rioxarray``: one lazy ``rioxarray.open_rasterio`` per item and band on a ``WarpedVRT`` onto
  the output grid, concatenated, then the same xarray steps;
* ``warpedvrt``: plain rasterio, one task per output block: a ``WarpedVRT`` per item and band onto
  that block, numpy ``nanmedian``;
* ``reproject``: the same with ``rasterio.warp.reproject`` into a block-sized array.
  These two always run, first: every result is compared with both.

Measured per candidate and size: the job's wall time (from reading the items to the last block
on disk; imports and cluster start excluded, timed separately), Mpx/s per core (= output pixels x
months x bands / job seconds / 2 cores; also per CPU-second of the workers and the client, which
other load on the machine disturbs less), the peak of the summed RSS of the candidate's process
tree (client, nannies, workers; sampled every 20 ms by this driver with psutil), the same peak
above the idle cluster (sampled just before the job starts), and the agreement with the two
plain-rasterio results; then one cross-zone band warped by each library against bilinear computed
exactly in numpy, and each library's install footprint beyond geoseg's dependencies.

Run (a few minutes on 2 cores, longer when they are shared; a venv with the candidates, see
benchmarks/README.md):

    /tmp/venv-libbench/bin/python benchmarks/composite_libraries.py [--small 512] [--only odc,stackstac]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

BANDS_10M = ["B02", "B03", "B04", "B08"]
BANDS_20M = ["B11"]
BANDS = BANDS_10M + BANDS_20M
SCL_DROP = [0, 1, 3, 8, 9, 10]
BASELINE_0400 = datetime(2022, 1, 25, tzinfo=timezone.utc)  # from then on L2A DNs carry +1000
MONTHS = ["2021-12", "2022-01", "2022-02"]
DAYS = [(2021, 12, d) for d in (3, 8, 18, 23)] + [(2022, 1, d) for d in (2, 7, 22, 27)] + \
       [(2022, 2, d) for d in (1, 6, 16, 21)]
CENTRE_LONLAT = (77.90, 30.10)  # Yamunanagar/Saharanpur, 10 km west of the 78 E zone boundary
TARGET_EPSG = 32643
CANDIDATES = ["warpedvrt", "reproject", "odc", "stackstac", "rioxarray"]
WORKERS = 2
OBS_DTYPE = np.float32


# ----------------------------------------------------------------------------------------------
# Inputs


def _smooth(rng: np.random.Generator, h: int, w: int, terms: int, period_px: tuple[float, float]) -> np.ndarray:
    """A smooth random surface in about [-1, 1]: a sum of separable sinusoids."""
    y = np.arange(h, dtype=np.float32)[:, None]
    x = np.arange(w, dtype=np.float32)[None, :]
    out = np.zeros((h, w), np.float32)
    for _ in range(terms):
        fy, fx = 2 * np.pi / rng.uniform(*period_px, size=2)
        out += np.sin(fy * y + rng.uniform(0, 6.3)) * np.cos(fx * x + rng.uniform(0, 6.3))
    return out / np.sqrt(terms / 2)


def _snap(v: float, step: float, up: bool) -> float:
    return float(np.ceil(v / step) * step) if up else float(np.floor(v / step) * step)


def make_inputs(folder: Path, large: int, seed: int = 0) -> dict[str, Any]:
    """Writes the COGs and item JSONs, returns the job description (also saved as job.json)."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.warp import transform as warp_points
    from rasterio.warp import transform_bounds

    rng = np.random.default_rng(seed)
    cx, cy = warp_points("EPSG:4326", f"EPSG:{TARGET_EPSG}", [CENTRE_LONLAT[0]], [CENTRE_LONLAT[1]])
    half = large * 10 / 2
    left, top = _snap(cx[0] - half, 60, False), _snap(cy[0] + half, 60, True)
    target = (left, top - large * 10, left + large * 10, top)
    margin = 1500.0
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for i, (yy, mm, dd) in enumerate(DAYS):
        epsg = 32643 if i % 2 == 0 else 32644
        b = transform_bounds(f"EPSG:{TARGET_EPSG}", f"EPSG:{epsg}", *target)
        x0, y1 = _snap(b[0] - margin, 60, False), _snap(b[3] + margin, 60, True)
        x1, y0 = _snap(b[2] + margin, 60, True), _snap(b[1] - margin, 60, False)
        h20, w20 = int(round((y1 - y0) / 20)), int(round((x1 - x0) / 20))
        h10, w10 = 2 * h20, 2 * w20
        when = datetime(yy, mm, dd, 5, 41, 9, tzinfo=timezone.utc)
        shifted = when >= BASELINE_0400
        offset_dn = 1000 if shifted else 0
        # SCL at 20 m: vegetation / bare soil / water, cloud blobs (9, a ring of 8), their shadows
        # (3), some cirrus (10) and a few saturated pixels (1); 0 outside the swath's footprint.
        land = _smooth(rng, h20, w20, 6, (40, 400))
        scl = np.where(land > 0.2, 4, 5).astype(np.uint8)
        scl[land < -1.1] = 6
        cloud = _smooth(rng, h20, w20, 5, (60, 500))
        cover = rng.uniform(0.6, 1.6)  # higher threshold, fewer clouds
        scl[np.roll(cloud, (6, -9), axis=(0, 1)) > cover] = 3
        scl[cloud > cover - 0.15] = 8
        scl[cloud > cover] = 9
        scl[(_smooth(rng, h20, w20, 3, (100, 300)) > 1.4) & (scl != 9)] = 10
        scl[rng.random((h20, w20)) < 2e-4] = 1
        if epsg == 32644:  # the swath's western edge, a diagonal line across the area
            rows, cols = np.mgrid[0:h20, 0:w20]
            outside20 = cols < 0.30 * w20 + 0.12 * rows
            scl[outside20] = 0
        cloudy10 = np.repeat(np.repeat(np.isin(scl, [8, 9, 10]), 2, 0), 2, 1)
        nodata10 = np.repeat(np.repeat(scl == 0, 2, 0), 2, 1)
        tex10 = _smooth(rng, h10, w10, 8, (15, 200))
        base = {"B02": 700, "B03": 1000, "B04": 1100, "B08": 2800, "B11": 2300}
        amp = {"B02": 250, "B03": 300, "B04": 450, "B08": 900, "B11": 600}
        item_id = f"S2{'AB'[i % 2]}_{43 if epsg == 32643 else 44}RFQ_{yy}{mm:02d}{dd:02d}_0_L2A"
        idir = folder / item_id
        idir.mkdir(exist_ok=True)
        assets = {}
        for band in BANDS + ["SCL"]:
            if band == "SCL":
                data, res, dtype = scl, 20, "uint8"
            else:
                drift = rng.uniform(-0.1, 0.1)
                if band in BANDS_10M:
                    surf, cl, nd, res = tex10, cloudy10, nodata10, 10
                else:
                    surf = tex10.reshape(h20, 2, w20, 2).mean(axis=(1, 3))
                    cl, nd, res = np.isin(scl, [8, 9, 10]), scl == 0, 20
                noise = rng.normal(0, 15, surf.shape).astype(np.float32)
                dn = base[band] * (1 + drift) + amp[band] * surf + noise
                dn = np.where(cl, 5500 + 1500 * surf, dn) + offset_dn
                data = np.clip(np.rint(dn), 1, 65535).astype(np.uint16)
                data[nd] = 0
                dtype = "uint16"
            hh, ww = data.shape
            transform = from_origin(x0, y1, res, res)
            path = idir / f"{band}.tif"
            with rasterio.open(path, "w", driver="COG", width=ww, height=hh, count=1, dtype=dtype,
                               crs=f"EPSG:{epsg}", transform=transform, nodata=0, compress="DEFLATE",
                               predictor=2, blocksize=512, overviews="NONE") as dst:
                dst.write(data, 1)
            rb: dict[str, Any] = {"nodata": 0, "data_type": dtype, "spatial_resolution": res}
            if band != "SCL":
                rb.update(scale=0.0001, offset=-0.1 if shifted else 0.0)
            assets[band] = {"href": f"./{band}.tif", "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                            "roles": ["data"], "proj:shape": [hh, ww], "proj:transform": list(transform)[:6],
                            "raster:bands": [rb]}
        foot = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
        lon, lat = warp_points(f"EPSG:{epsg}", "EPSG:4326", [p[0] for p in foot], [p[1] for p in foot])
        item = {
            "type": "Feature", "stac_version": "1.0.0", "id": item_id,
            "stac_extensions": ["https://stac-extensions.github.io/projection/v1.1.0/schema.json",
                                "https://stac-extensions.github.io/raster/v1.1.0/schema.json"],
            "geometry": {"type": "Polygon", "coordinates": [list(map(list, zip(lon, lat)))]},
            "bbox": [min(lon), min(lat), max(lon), max(lat)],
            "properties": {"datetime": when.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "proj:epsg": epsg,
                           "platform": "sentinel-2" + "ab"[i % 2], "constellation": "sentinel-2",
                           "s2:processing_baseline": "04.00" if shifted else "03.01"},
            "links": [], "assets": assets,
        }
        (idir / f"{item_id}.json").write_text(json.dumps(item, indent=1))
        items.append(str(idir / f"{item_id}.json"))
    job = {"items": items, "target_epsg": TARGET_EPSG, "left": target[0], "top": target[3], "res": 10.0,
           "large": large, "months": MONTHS, "bands": BANDS}
    (folder / "job.json").write_text(json.dumps(job, indent=1))
    return job


# ----------------------------------------------------------------------------------------------
# Shared pieces of the candidates (run in the child processes and their workers)


class NpyRegion:
    """A ``da.store`` target writing into an ``.npy`` on disk, mapped only while writing.

    ``band`` (optional) is inserted as the second index: sources are (month, y, x) and the median
    file is (month, band, y, x).
    """

    def __init__(self, path: str, band: int | None = None) -> None:
        self.path, self.band = path, band

    def __setitem__(self, key: tuple[slice, ...], value: np.ndarray) -> None:
        m = np.load(self.path, mmap_mode="r+")
        m[(key[0], self.band, *key[1:]) if self.band is not None else key] = value
        m.flush()
        del m


def _outputs(out: Path, job: dict[str, Any], size: int) -> tuple[str, str]:
    med, cnt = str(out / "median.npy"), str(out / "count.npy")
    np.lib.format.open_memmap(med, "w+", np.float32, (len(job["months"]), len(job["bands"]), size, size))
    np.lib.format.open_memmap(cnt, "w+", np.uint8, (len(job["months"]), size, size))
    return med, cnt


def _target_transform(job: dict[str, Any]) -> Any:
    from affine import Affine
    return Affine(job["res"], 0.0, job["left"], 0.0, -job["res"], job["top"])


def _xarray_reduce(refl: dict[str, Any], clear: Any, job: dict[str, Any], med: str, cnt: str) -> None:
    """Same for odc, stackstac and rioxarray: monthly medians and counts, stored block by block."""
    import dask.array as da
    sources, targets = [], []
    for bi, band in enumerate(job["bands"]):
        m = refl[band].where(clear).resample(time="1MS").median("time", skipna=True)
        sources.append(m.data.astype(np.float32))
        targets.append(NpyRegion(med, bi))
    n = clear.resample(time="1MS").sum("time").astype(np.uint8)
    sources.append(n.data)
    targets.append(NpyRegion(cnt))
    da.store(sources, targets, lock=False, compute=True)


def _offsets_by_time(items: list[Any], band: str) -> dict[Any, float]:
    return {np.datetime64(it.datetime.replace(tzinfo=None), "ns"): it.assets[band].extra_fields["raster:bands"][0]["offset"]
            for it in items}


def run_odc(job: dict[str, Any], size: int, block: int, med: str, cnt: str) -> None:
    import odc.stac
    import pystac
    import xarray as xr
    from odc.geo.geobox import GeoBox

    items = [pystac.Item.from_file(p) for p in job["items"]]
    gbox = GeoBox((size, size), _target_transform(job), f"EPSG:{job['target_epsg']}")
    ds = odc.stac.load(items, bands=job["bands"] + ["SCL"], geobox=gbox, chunks={"x": block, "y": block},
                       resampling={"*": "bilinear", "SCL": "nearest"}, dtype="float32")
    # One dtype for all: a per-band mapping fails with dask chunks (odc-loader 0.6.5, inside
    # dask's normalize_chunks). SCL as float32 is exact for its classes 0-11.
    clear = ~ds.SCL.isin(SCL_DROP) & ds.SCL.notnull()
    refl = {}
    for band in job["bands"]:
        off = _offsets_by_time(items, band)
        offset = xr.DataArray([off[t] for t in ds.time.values], coords={"time": ds.time})
        scale = items[0].assets[band].extra_fields["raster:bands"][0]["scale"]
        v = ds[band]
        refl[band] = (v.where((v != 0) & ~np.isnan(v)) * scale + offset).astype(np.float32)
    _xarray_reduce(refl, clear, job, med, cnt)


def run_stackstac(job: dict[str, Any], size: int, block: int, med: str, cnt: str) -> None:
    import pystac
    import stackstac
    import xarray as xr
    from rasterio.enums import Resampling

    items = [pystac.Item.from_file(p) for p in job["items"]]
    for it in items:  # stackstac wants absolute hrefs
        for a in it.assets.values():
            a.href = a.get_absolute_href()
    left, top = job["left"], job["top"]
    bounds = (left, top - size * job["res"], left + size * job["res"], top)
    common = dict(epsg=job["target_epsg"], resolution=job["res"], bounds=bounds, snap_bounds=False,
                  chunksize=block, properties=False, band_coords=False)
    # rescale=True (stackstac's own scale/offset) refuses float32 ("safe casting" of 0.0001): it
    # would need float64 arrays, twice the memory; so the raw DNs, harmonised below as for odc.
    bands = stackstac.stack(items, assets=job["bands"], resampling=Resampling.bilinear, dtype="float32",
                            fill_value=np.float32(np.nan), rescale=False, **common)
    scl = stackstac.stack(items, assets=["SCL"], resampling=Resampling.nearest, dtype="uint8", fill_value=np.uint8(0),
                          rescale=False, **common).isel(band=0)
    assert bands.shape[-2:] == (size, size), bands.shape
    clear = ~scl.isin(SCL_DROP)
    refl = {}
    for band in job["bands"]:
        off = _offsets_by_time(items, band)
        offset = xr.DataArray([off[t] for t in bands.time.values], coords={"time": bands.time})
        scale = items[0].assets[band].extra_fields["raster:bands"][0]["scale"]
        refl[band] = (bands.sel(band=band) * scale + offset).astype(np.float32)
    _xarray_reduce(refl, clear, job, med, cnt)


def run_rioxarray(job: dict[str, Any], size: int, block: int, med: str, cnt: str) -> None:
    import pandas as pd
    import pystac
    import rasterio
    import rioxarray
    import xarray as xr
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT

    items = sorted((pystac.Item.from_file(p) for p in job["items"]), key=lambda it: it.datetime)
    times = pd.DatetimeIndex([it.datetime.replace(tzinfo=None) for it in items], name="time")
    tr = _target_transform(job)

    def lazy(item: Any, band: str, resampling: Resampling, dtype: str) -> Any:
        with rasterio.open(item.assets[band].get_absolute_href()) as src:
            vrt = WarpedVRT(src, crs=f"EPSG:{job['target_epsg']}", transform=tr, width=size, height=size,
                            resampling=resampling, src_nodata=0, nodata=0, dtype=dtype)
            return rioxarray.open_rasterio(vrt, chunks={"x": block, "y": block}, lock=False).isel(band=0, drop=True)

    scl = xr.concat([lazy(it, "SCL", Resampling.nearest, "uint8") for it in items], dim=times)
    clear = ~scl.isin(SCL_DROP)
    refl = {}
    for band in job["bands"]:
        rb = [it.assets[band].extra_fields["raster:bands"][0] for it in items]
        dn = xr.concat([lazy(it, band, Resampling.bilinear, "float32") for it in items], dim=times)
        offset = xr.DataArray([r["offset"] for r in rb], coords={"time": times})
        refl[band] = (dn.where(dn != 0) * rb[0]["scale"] + offset).astype(np.float32)
    _xarray_reduce(refl, clear, job, med, cnt)


def _block_composite(job: dict[str, Any], metas: list[dict[str, Any]], window: tuple[int, int, int, int],
                     med: str, cnt: str, how: str) -> int:
    """One output block: warp every item's SCL and bands onto it, mask, harmonise, median per month.

    ``how``: "vrt" reads each band through a ``WarpedVRT`` onto the block, "reproject" warps it
    with ``rasterio.warp.reproject`` into an array the size of the block (GDAL reads only the
    source window the block needs in both cases).
    """
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT
    from rasterio.warp import reproject

    r0, c0, h, w = window
    tr = _target_transform(job) * _affine_translation(c0, r0)
    crs = f"EPSG:{job['target_epsg']}"

    def warp(href: str, resampling: Resampling, dtype: str) -> np.ndarray:
        with rasterio.open(href) as src:
            if how == "vrt":
                with WarpedVRT(src, crs=crs, transform=tr, width=w, height=h, resampling=resampling,
                               src_nodata=0, nodata=0, dtype=dtype) as vrt:
                    return vrt.read(1)
            out = np.zeros((h, w), dtype)
            reproject(rasterio.band(src, 1), out, dst_transform=tr, dst_crs=crs, resampling=resampling,
                      src_nodata=0, dst_nodata=0)
            return out

    medians = np.full((len(job["months"]), len(job["bands"]), h, w), np.nan, np.float32)
    counts = np.zeros((len(job["months"]), h, w), np.uint8)
    for mi, month in enumerate(job["months"]):
        obs = [m for m in metas if m["month"] == month]
        stack = np.full((len(obs), len(job["bands"]), h, w), np.nan, OBS_DTYPE)
        for oi, m in enumerate(obs):
            clear = ~np.isin(warp(m["hrefs"]["SCL"], Resampling.nearest, "uint8"), SCL_DROP)
            counts[mi] += clear
            for bi, band in enumerate(job["bands"]):
                dn = warp(m["hrefs"][band], Resampling.bilinear, "float32")
                ok = clear & (dn != 0)
                stack[oi, bi][ok] = dn[ok] * m["scale"][band] + m["offset"][band]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels stay NaN
            medians[mi] = np.nanmedian(stack, axis=0)
    m_out = np.load(med, mmap_mode="r+")
    m_out[:, :, r0:r0 + h, c0:c0 + w] = medians
    m_out.flush()
    del m_out
    c_out = np.load(cnt, mmap_mode="r+")
    c_out[:, r0:r0 + h, c0:c0 + w] = counts
    c_out.flush()
    del c_out
    return h * w


def _affine_translation(col: int, row: int) -> Any:
    from affine import Affine
    return Affine.translation(col, row)


def run_warpedvrt(job: dict[str, Any], size: int, block: int, med: str, cnt: str, how: str = "vrt") -> None:
    from dask.distributed import get_client

    metas = []  # plain JSON: no STAC library needed for these fields
    for p in job["items"]:
        d = json.loads(Path(p).read_text())
        when = datetime.fromisoformat(d["properties"]["datetime"].replace("Z", "+00:00"))
        rb = {k: a["raster:bands"][0] for k, a in d["assets"].items()}
        metas.append({"month": when.strftime("%Y-%m"),
                      "hrefs": {k: str((Path(p).parent / a["href"]).resolve()) for k, a in d["assets"].items()},
                      "scale": {b: rb[b]["scale"] for b in job["bands"]},
                      "offset": {b: rb[b]["offset"] for b in job["bands"]}})
    windows = [(r, c, min(block, size - r), min(block, size - c))
               for r in range(0, size, block) for c in range(0, size, block)]
    client = get_client()
    futures = client.map(_block_composite, [job] * len(windows), [metas] * len(windows), windows,
                         [med] * len(windows), [cnt] * len(windows), [how] * len(windows), pure=False)
    assert sum(client.gather(futures)) == size * size


def run_reproject(job: dict[str, Any], size: int, block: int, med: str, cnt: str) -> None:
    run_warpedvrt(job, size, block, med, cnt, how="reproject")


RUNNERS = {"odc": run_odc, "stackstac": run_stackstac, "rioxarray": run_rioxarray, "warpedvrt": run_warpedvrt,
           "reproject": run_reproject}


def _own_cpu() -> float:
    import psutil
    t = psutil.Process().cpu_times()
    return t.user + t.system


def _cluster_cpu(client: Any) -> float:
    """CPU seconds (user + system) used so far by the workers and this process."""
    return sum(client.run(_own_cpu).values()) + _own_cpu()


def child(candidate: str, folder: Path, size: int, block: int, out: Path) -> None:
    """Runs one candidate in this (fresh) process; prints a line JOB_START before the job, JSON after."""
    t0 = time.perf_counter()
    import dask
    from dask.distributed import Client, LocalCluster
    import rasterio  # noqa: F401  (import cost counted for every candidate)

    if candidate == "odc":
        import odc.stac  # noqa: F401
    elif candidate == "stackstac":
        import stackstac  # noqa: F401
    elif candidate == "rioxarray":
        import rioxarray  # noqa: F401
    t_import = time.perf_counter() - t0
    job = json.loads((folder / "job.json").read_text())
    with dask.config.set({"distributed.worker.daemon": True}):
        cluster = LocalCluster(n_workers=WORKERS, threads_per_worker=1, processes=True, dashboard_address=None)
    client = Client(cluster)
    client.run(lambda: None)
    t_cluster = time.perf_counter() - t0 - t_import
    med, cnt = _outputs(out, job, size)
    time.sleep(0.5)  # let the driver sample the idle cluster
    print("JOB_START", flush=True)
    cpu0 = _cluster_cpu(client)
    t1 = time.perf_counter()
    RUNNERS[candidate](job, size, block, med, cnt)
    t_job = time.perf_counter() - t1
    cpu_job = _cluster_cpu(client) - cpu0
    print("JOB_END", flush=True)
    print(json.dumps({"import_s": t_import, "cluster_s": t_cluster, "job_s": t_job, "cpu_s": cpu_job}), flush=True)
    client.close()
    cluster.close()


# ----------------------------------------------------------------------------------------------
# Driver


def _tree_rss(proc: Any) -> int:
    import psutil
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def measure(candidate: str, folder: Path, size: int, block: int, out: Path, gdal_env: dict[str, str]) -> dict[str, Any]:
    import psutil
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **gdal_env}
    cmd = [sys.executable, __file__, "--child", candidate, "--inputs", str(folder), "--size", str(size),
           "--block", str(block), "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    ps = psutil.Process(proc.pid)
    state = {"phase": "start", "idle": 0, "peak": 0, "lines": []}

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("JOB_START"):
                state["idle"] = _tree_rss(ps)
                state["phase"] = "job"
            elif line.startswith("JOB_END"):
                state["phase"] = "end"
            else:
                state["lines"].append(line)

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    while proc.poll() is None:
        try:
            rss = _tree_rss(ps)
        except psutil.Error:
            break
        if state["phase"] == "job":
            state["peak"] = max(state["peak"], rss)
        time.sleep(0.02)
    proc.wait()
    th.join(timeout=5)
    err = proc.stderr.read() if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{candidate} at {size} px failed:\n{err[-4000:]}")
    res = json.loads(state["lines"][-1])
    res.update(peak_mib=state["peak"] / 2**20, idle_mib=state["idle"] / 2**20,
               job_mib=(state["peak"] - state["idle"]) / 2**20)
    return res


def compare(ref: Path, other: Path) -> dict[str, Any]:
    a, b = np.load(ref / "median.npy", mmap_mode="r"), np.load(other / "median.npy", mmap_mode="r")
    ca, cb = np.load(ref / "count.npy"), np.load(other / "count.npy")
    maxd, diffs, nan_mismatch, n = 0.0, [], 0, 0
    for p in range(a.shape[0]):
        for k in range(a.shape[1]):
            x, y = np.asarray(a[p, k]), np.asarray(b[p, k])
            fx, fy = np.isfinite(x), np.isfinite(y)
            nan_mismatch += int((fx != fy).sum())
            both = fx & fy
            d = np.abs(x[both].astype(np.float64) - y[both])
            n += d.size
            if d.size:
                maxd = max(maxd, float(d.max()))
                diffs.append(np.quantile(d, 0.999))
    dc = np.abs(ca.astype(np.int16) - cb)
    return {"max_abs": maxd, "p999_abs": float(max(diffs)) if diffs else 0.0, "nan_mismatch": nan_mismatch,
            "values": n, "count_differ": int((dc > 0).sum()), "count_max": int(dc.max())}


def footprint(candidate: str) -> tuple[int, float, list[str]]:
    """Distributions the candidate adds over geoseg's own dependencies, and their size on disk."""
    from importlib import metadata

    from packaging.requirements import Requirement

    have = {"numpy", "rasterio", "geopandas", "pandas", "shapely", "pyproj", "pyogrio", "pyarrow", "dask",
            "distributed", "bokeh", "pyyaml", "click", "rich", "scipy", "matplotlib", "packaging",
            "python-dateutil", "pytz", "tzdata", "six", "affine", "attrs", "certifi", "click-plugins",
            "cligj", "pyparsing", "cloudpickle", "fsspec", "partd", "toolz", "locket", "msgpack", "psutil",
            "sortedcontainers", "tblib", "tornado", "urllib3", "zict", "jinja2", "markupsafe",
            "importlib-metadata", "zipp", "typing-extensions"}
    roots = {"odc": ["odc-stac"], "stackstac": ["stackstac"], "rioxarray": ["rioxarray"], "warpedvrt": [],
             "reproject": []}[candidate]

    def norm(s: str) -> str:
        return s.lower().replace("_", "-")

    seen: set[str] = set()
    todo = [norm(r) for r in roots]
    while todo:
        name = todo.pop()
        if name in seen or name in have:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen.add(name)
        for req in dist.requires or []:
            r = Requirement(req)
            if r.marker is None or r.marker.evaluate({"extra": ""}):
                todo.append(norm(r.name))
    size = 0
    for name in seen:
        for f in metadata.distribution(name).files or []:
            try:
                size += f.locate().stat().st_size
            except OSError:
                pass
    return len(seen), size / 2**20, sorted(seen)


def versions() -> dict[str, str]:
    from importlib import metadata
    import rasterio
    out = {"python": sys.version.split()[0], "GDAL": rasterio.__gdal_version__}
    for d in ["rasterio", "numpy", "dask", "distributed", "xarray", "odc-stac", "odc-geo", "odc-loader", "stackstac",
              "rioxarray", "pystac", "pandas", "pyproj"]:
        try:
            out[d] = metadata.version(d)
        except metadata.PackageNotFoundError:
            out[d] = "-"
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", type=int, default=512, help="side of the small area in px (the large one is 2x)")
    ap.add_argument("--block", type=int, default=256, help="output block / dask chunk side in px")
    ap.add_argument("--only", default=",".join(CANDIDATES), help="comma-separated candidates")
    ap.add_argument("--cachemax", default="64", help="GDAL_CACHEMAX for every process (MB)")
    ap.add_argument("--inputs", type=Path, help="folder of generated inputs (default: a temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("--json", type=Path, help="also write the figures as JSON")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        child(a.child, a.inputs, a.size, a.block, a.out)
        return 0

    refs = ["warpedvrt", "reproject"]  # always run, first: the others are compared with both
    cands = refs + [c for c in a.only.split(",") if c and c not in refs]
    gdal_env = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "GDAL_CACHEMAX": a.cachemax}
    os.environ.update(gdal_env)
    tmp = Path(tempfile.mkdtemp(prefix="composite-libs-"))
    folder = a.inputs or tmp / "inputs"
    sizes = {"small": a.small, "large": 2 * a.small}
    t_all = time.perf_counter()
    try:
        if not (folder / "job.json").is_file() or json.loads((folder / "job.json").read_text())["large"] < sizes["large"]:
            t0 = time.perf_counter()
            job = make_inputs(folder, sizes["large"])
            mb = sum(f.stat().st_size for f in folder.rglob("*.tif")) / 2**20
            print(f"inputs: {len(job['items'])} items, {mb:.0f} MB of COGs in {time.perf_counter() - t0:.1f} s ({folder})")
        print("versions:", json.dumps(versions()))
        print(f"GDAL settings for every process: {gdal_env}; {WORKERS} worker processes x 1 thread; "
              f"blocks/chunks {a.block} px\n")
        results: dict[str, dict[str, Any]] = {}
        for label, size in sizes.items():
            for cand in cands:
                out = tmp / "out" / f"{cand}-{label}"
                r = measure(cand, folder, size, a.block, out, gdal_env)
                values = size * size * len(MONTHS) * len(BANDS)
                r["mpx_s_core"] = values / r["job_s"] / WORKERS / 1e6
                r["mpx_cpu_s"] = values / r["cpu_s"] / 1e6
                results[f"{cand}/{label}"] = r
                print(f"  {cand:10s} {label:5s} {size} px: job {r['job_s']:.1f} s, peak {r['peak_mib']:.0f} MiB", flush=True)
            for cand in cands:
                for ref in refs:
                    if ref != cand:
                        results[f"{cand}/{label}"][ref] = compare(tmp / "out" / f"{ref}-{label}",
                                                                  tmp / "out" / f"{cand}-{label}")
            shutil.rmtree(tmp / "out", ignore_errors=True)
        print()
        hdr = ("| candidate | area | job s | Mpx/s/core | CPU s | Mpx/CPU-s | import s | peak RSS MiB | above idle MiB | "
               "peak large/small | above-idle large/small | max / p99.9 abs diff vs warpedvrt | "
               "max / p99.9 abs diff vs reproject | NaN mismatch px | count differs px |")
        print(hdr)
        print("|" + "---|" * (hdr.count("|") - 1))
        for cand in cands:
            for label, size in sizes.items():
                r = results[f"{cand}/{label}"]
                ratio = ratio2 = ""
                if label == "large":
                    sm = results[f"{cand}/small"]
                    ratio, ratio2 = f"{r['peak_mib'] / sm['peak_mib']:.2f}", f"{r['job_mib'] / sm['job_mib']:.2f}"
                cells = [f"{r[ref]['max_abs']:.1e} / {r[ref]['p999_abs']:.1e}" if ref in r else "-" for ref in refs]
                other = r[refs[0]] if refs[0] in r else r[refs[1]]
                cells += [f"{other['nan_mismatch']:,}", f"{other['count_differ']:,}"]
                print(f"| {cand} | {label} {size}^2 | {r['job_s']:.1f} | {r['mpx_s_core']:.2f} | {r['cpu_s']:.1f} | {r['mpx_cpu_s']:.2f} | "
                      f"{r['import_s']:.1f} | "
                      f"{r['peak_mib']:,.0f} | {r['job_mib']:,.0f} | {ratio} | {ratio2} | " + " | ".join(cells) + " |")
        print("\n| candidate | extra distributions over geoseg's dependencies | size on disk MiB |")
        print("|---|---|---|")
        fps = {}
        for cand in cands:
            n, mib, names = footprint(cand)
            fps[cand] = {"n": n, "mib": mib, "names": names}
            print(f"| {cand} | {n}: {', '.join(names) or '-'} | {mib:.1f} |")
        geo = georef_check(folder, sizes["large"], a.block)
        print("\nOne cross-zone warp (EPSG:32644 item, B02, onto the large grid) against bilinear computed "
              "exactly in numpy\n(GDAL's point transformation of every pixel centre; pixels whose 4 source "
              f"neighbours are valid: {geo.pop('pixels'):,}), |difference| in DN:\n")
        print("| warp | median | p99 | p99.9 | max |")
        print("|---|---|---|---|---|")
        for name, q in geo.items():
            print(f"| {name} | " + " | ".join(f"{v:.2f}" for v in q) + " |")
        print(f"\nwhole run {time.perf_counter() - t_all:.0f} s")
        if a.json:
            a.json.write_text(json.dumps({"versions": versions(), "results": results, "footprint": fps,
                                          "georef": geo}, indent=1))
    finally:
        if a.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


def georef_check(folder: Path, size: int, block: int) -> dict[str, Any]:
    """Each library's warp of one EPSG:32644 band onto the target grid against bilinear done exactly.

    Every warp is done block by block as in the job (``block`` px), since GDAL's approximate
    transformer errs more over larger warps.
    """
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT
    from rasterio.warp import reproject
    from rasterio.warp import transform as warp_points

    job = json.loads((folder / "job.json").read_text())
    item_path = next(p for p in job["items"] if "_44" in Path(p).name)
    href = str(Path(item_path).parent / "B02.tif")
    tr, crs = _target_transform(job), f"EPSG:{job['target_epsg']}"
    with rasterio.open(href) as src:
        S = src.read(1).astype(np.float64)
        st, scrs = src.transform, src.crs
        rows, cols = np.mgrid[0:size, 0:size]
        xs, ys = tr * (cols.ravel() + 0.5, rows.ravel() + 0.5)
        sx, sy = warp_points(crs, scrs, xs, ys)
        sc, sr = ~st * (np.asarray(sx), np.asarray(sy))
        c0, r0 = np.floor(sc - 0.5).astype(int), np.floor(sr - 0.5).astype(int)
        fc, fr = sc - 0.5 - c0, sr - 0.5 - r0
        n = [S[r0, c0], S[r0, c0 + 1], S[r0 + 1, c0], S[r0 + 1, c0 + 1]]
        exact = (n[0] * (1 - fr) * (1 - fc) + n[1] * (1 - fr) * fc + n[2] * fr * (1 - fc) + n[3] * fr * fc)
        ok = np.all([v != 0 for v in n], axis=0)
        vrt_out, rep_out = np.zeros((size, size), np.float32), np.zeros((size, size), np.float32)
        for r in range(0, size, block):
            for c in range(0, size, block):
                h, w = min(block, size - r), min(block, size - c)
                btr = tr * _affine_translation(c, r)
                with WarpedVRT(src, crs=crs, transform=btr, width=w, height=h, resampling=Resampling.bilinear,
                               src_nodata=0, nodata=0, dtype="float32") as vrt:
                    vrt_out[r:r + h, c:c + w] = vrt.read(1)
                reproject(rasterio.band(src, 1), rep_out[r:r + h, c:c + w], dst_transform=btr, dst_crs=crs,
                          resampling=Resampling.bilinear, src_nodata=0, dst_nodata=0)
        warps: dict[str, np.ndarray] = {"rasterio WarpedVRT (warpedvrt)": vrt_out,
                                        "rasterio.warp.reproject (reproject)": rep_out}
        with WarpedVRT(src, crs=crs, transform=tr, width=size, height=size, resampling=Resampling.bilinear,
                       src_nodata=0, nodata=0, dtype="float32") as vrt:  # rioxarray: one VRT, read in chunks
            warps["WarpedVRT of the whole grid (rioxarray)"] = vrt.read(1)
    try:
        import odc.stac
        import pystac
        from odc.geo.geobox import GeoBox
        item = pystac.Item.from_file(item_path)
        ds = odc.stac.load([item], bands=["B02"], geobox=GeoBox((size, size), tr, crs), resampling="bilinear",
                           dtype="float32", chunks={"x": block, "y": block})
        warps["odc.stac.load"] = ds.B02.compute(scheduler="threads", num_workers=1).values[0]
    except ImportError:
        pass
    try:
        import pystac
        import stackstac
        item = pystac.Item.from_file(item_path)
        for a in item.assets.values():
            a.href = a.get_absolute_href()
        left, top = job["left"], job["top"]
        arr = stackstac.stack([item], assets=["B02"], epsg=job["target_epsg"], resolution=job["res"],
                              bounds=(left, top - size * job["res"], left + size * job["res"], top), snap_bounds=False,
                              resampling=Resampling.bilinear, dtype="float32", fill_value=np.float32(np.nan),
                              rescale=False, chunksize=block)
        warps["stackstac.stack"] = arr.compute(scheduler="threads", num_workers=1).values[0, 0]
    except ImportError:
        pass
    res: dict[str, Any] = {"pixels": int(ok.sum())}
    for name, w in warps.items():
        if not ok.any():
            break
        d = np.abs(w.ravel()[ok].astype(np.float64) - exact[ok])
        res[name] = [float(np.median(d)), float(np.quantile(d, 0.99)), float(np.quantile(d, 0.999)), float(d.max())]
    return res


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
