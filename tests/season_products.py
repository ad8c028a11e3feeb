"""Small Sentinel-2 L2A products in real layouts, written from known surfaces, for the season tests.

Each writer takes the *surface reflectance* of every band on a 10 m grid and writes what a
provider would deliver: digital numbers with the offset of the product's processing baseline
(+1000 from 04.00 on), the 20 m bands as 2 x 2 means, an SCL layer at 20 m, and the metadata
of the layout (a STAC item in the Earth Search or Planetary Computer style, or a SAFE folder
with MTD_MSIL2A.xml). Tests compare what geoseg reads back with the surfaces they started from.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.warp import transform_bounds

BANDS_10 = ("B02", "B04", "B08")
BANDS_20 = ("B11",)
ES_KEYS = {"B02": "blue", "B03": "green", "B04": "red", "B08": "nir", "B11": "swir16", "B12": "swir22",
           "B05": "rededge1", "B8A": "nir08"}


def to_dn(refl: np.ndarray, baseline: str) -> np.ndarray:
    add = 1000 if tuple(int(x) for x in baseline.split(".")) >= (4, 0) else 0
    return np.clip(np.rint(refl * 10000) + add, 1, 65535).astype(np.uint16)


def mean20(a: np.ndarray) -> np.ndarray:
    h, w = a.shape
    return a.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))


def write_tif(path: Path, arr: np.ndarray, crs: str, transform: Affine, nodata: float | None = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = arr.shape
    with rasterio.open(path, "w", driver="GTiff", height=h, width=w, count=1, dtype=arr.dtype.name, crs=crs,
                       transform=transform, nodata=nodata, tiled=True, blockxsize=256, blockysize=256,
                       compress="deflate") as dst:
        dst.write(arr, 1)


def write_item(folder: Path, item_id: str, when: str, crs: str, transform: Affine, refl: dict[str, np.ndarray],
               scl20: np.ndarray, baseline: str | None = "05.10", layout: str = "earthsearch",
               nodata_mask: np.ndarray | None = None, platform: str = "sentinel-2a", orbit: int = 5,
               raster_offsets: bool = True) -> Path:
    """One item: per-band GeoTIFFs in ``folder/item_id/`` and ``folder/item_id.json``.

    ``refl`` holds 10 m surface reflectance per band (B02, B04, B08, B11, ...); bands in
    :data:`BANDS_20` are written at 20 m (2 x 2 means). ``nodata_mask`` (10 m) sets DN 0.
    ``layout``: ``earthsearch`` (common-name keys, raster:bands scale/offset when
    ``raster_offsets``) or ``pc`` (band-id keys, no raster:bands: the baseline decides).
    """
    d = folder / item_id
    h, w = next(iter(refl.values())).shape
    t20 = transform @ Affine.scale(2)
    assets = {}
    base = baseline or "05.10"
    for band, r in refl.items():
        is20 = band in BANDS_20
        arr = to_dn(mean20(r) if is20 else r, base)
        if nodata_mask is not None:
            arr[(mean20(nodata_mask.astype(float)) > 0) if is20 else nodata_mask] = 0
        write_tif(d / f"{band}.tif", arr, crs, t20 if is20 else transform)
        key = ES_KEYS[band] if layout == "earthsearch" else band
        a = {"href": f"./{item_id}/{band}.tif", "type": "image/tiff; application=geotiff; profile=cloud-optimized",
             "roles": ["data", "reflectance"], "eo:bands": [{"name": band, "common_name": ES_KEYS[band]}],
             "proj:shape": list(arr.shape), "proj:transform": list(t20 if is20 else transform)[:6]}
        if layout == "earthsearch" and raster_offsets:
            off = -0.1 if tuple(int(x) for x in base.split(".")) >= (4, 0) else 0.0
            a["raster:bands"] = [{"nodata": 0, "data_type": "uint16", "spatial_resolution": 20 if is20 else 10,
                                  "scale": 0.0001, "offset": off}]
        assets[key] = a
    write_tif(d / "SCL.tif", scl20.astype(np.uint8), crs, t20)
    assets["scl" if layout == "earthsearch" else "SCL"] = {
        "href": f"./{item_id}/SCL.tif", "type": "image/tiff", "roles": ["data"],
        "raster:bands": [{"nodata": 0, "data_type": "uint8", "spatial_resolution": 20}]}
    west, south, east, north = transform_bounds(crs, "EPSG:4326", transform.c, transform.f + transform.e * h,
                                                transform.c + transform.a * w, transform.f)
    props = {"datetime": f"{when}T05:36:49Z", "platform": platform, "constellation": "sentinel-2",
             "proj:epsg": int(crs.split(":")[1]), "sat:relative_orbit": orbit, "s2:mgrs_tile": "43RFQ"}
    if baseline is not None:
        props["s2:processing_baseline"] = baseline
    item = {"type": "Feature", "stac_version": "1.0.0", "id": item_id, "properties": props,
            "geometry": {"type": "Polygon", "coordinates": [[[west, south], [east, south], [east, north],
                                                             [west, north], [west, south]]]},
            "bbox": [west, south, east, north], "links": [], "assets": assets,
            "stac_extensions": []}
    path = folder / f"{item_id}.json"
    path.write_text(json.dumps(item, indent=1))
    return path


def write_safe(folder: Path, when: str, crs: str, transform: Affine, refl: dict[str, np.ndarray],
               scl20: np.ndarray, baseline: str = "05.10", with_offsets: bool = True) -> Path:
    """A SAFE L2A folder (GeoTIFF pixels under .jp2 names are avoided: real JP2 through GDAL)."""
    ymd = when.replace("-", "")
    name = f"S2B_MSIL2A_{ymd}T053649_N{baseline.replace('.', '')}_R005_T43RFQ_{ymd}T090000.SAFE"
    safe = folder / name
    gran = f"GRANULE/L2A_T43RFQ_A000001_{ymd}T053649/IMG_DATA"
    files = []
    t20 = transform @ Affine.scale(2)
    for band, r in refl.items():
        is20 = band in BANDS_20
        res = 20 if is20 else 10
        stem = f"{gran}/R{res}m/T43RFQ_{ymd}T053649_{band}_{res}m"
        arr = to_dn(mean20(r) if is20 else r, baseline)
        _write_jp2(safe / f"{stem}.jp2", arr, crs, t20 if is20 else transform)
        files.append(stem)
    stem = f"{gran}/R20m/T43RFQ_{ymd}T053649_SCL_20m"
    _write_jp2(safe / f"{stem}.jp2", scl20.astype(np.uint8), crs, t20)
    files.append(stem)
    offsets = "".join(f'        <BOA_ADD_OFFSET band_id="{i}">-1000</BOA_ADD_OFFSET>\n' for i in range(13))
    off_block = (f"      <BOA_ADD_OFFSET_VALUES_LIST>\n{offsets}      </BOA_ADD_OFFSET_VALUES_LIST>\n"
                 if with_offsets and tuple(int(x) for x in baseline.split(".")) >= (4, 0) else "")
    image_files = "".join(f"            <IMAGE_FILE>{f}</IMAGE_FILE>\n" for f in files)
    xml = f"""<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<n1:Level-2A_User_Product xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-2A.xsd">
  <n1:General_Info>
    <Product_Info>
      <PRODUCT_START_TIME>{when}T05:36:49.024Z</PRODUCT_START_TIME>
      <PRODUCT_URI>{name}</PRODUCT_URI>
      <PROCESSING_BASELINE>{baseline}</PROCESSING_BASELINE>
      <Datatake>
        <SPACECRAFT_NAME>Sentinel-2B</SPACECRAFT_NAME>
        <SENSING_ORBIT_NUMBER>5</SENSING_ORBIT_NUMBER>
      </Datatake>
      <Product_Organisation><Granule_List><Granule imageFormat="JPEG2000">
{image_files}      </Granule></Granule_List></Product_Organisation>
    </Product_Info>
    <Product_Image_Characteristics>
      <QUANTIFICATION_VALUES_LIST>
        <BOA_QUANTIFICATION_VALUE unit="none">10000</BOA_QUANTIFICATION_VALUE>
      </QUANTIFICATION_VALUES_LIST>
{off_block}    </Product_Image_Characteristics>
  </n1:General_Info>
</n1:Level-2A_User_Product>
"""
    (safe / "MTD_MSIL2A.xml").write_text(xml)
    return safe


def _write_jp2(path: Path, arr: np.ndarray, crs: str, transform: Affine) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = arr.shape
    with rasterio.open(path, "w", driver="JP2OpenJPEG", height=h, width=w, count=1, dtype=arr.dtype.name, crs=crs,
                       transform=transform, nodata=0, QUALITY="100", REVERSIBLE="YES") as dst:
        dst.write(arr, 1)


def scl_of(clouds: np.ndarray, shadows: np.ndarray | None = None) -> np.ndarray:
    """A 20 m SCL from 10 m cloud/shadow masks (a 20 m pixel is cloud if any of its 10 m pixels is)."""
    cl = mean20(clouds.astype(float)) > 0
    scl = np.full(cl.shape, 4, np.uint8)
    if shadows is not None:
        scl[mean20(shadows.astype(float)) > 0] = 3
    scl[cl] = 9
    return scl
