"""STAC items of Sentinel-2 L2A and Landsat C2 L2 scenes as :class:`~geoseg.io.imagery.Scene` records.

Reads an item JSON file, an ItemCollection (a ``FeatureCollection`` of items, as a STAC API
search returns), or a catalog/collection on disk (following its ``child`` and ``item`` links),
local or at a URL; and searches a STAC API (``pystac-client``) by collection, area and dates.

The layouts differ between providers, and each is read from its own metadata:

* **asset keys**: Earth Search uses common names (``red``, ``nir08``, ``scl``), the Planetary
  Computer band ids (``B04``, ``SCL``), the Copernicus Data Space band id and resolution
  (``B04_10m``, ``B04_20m``, ``SCL_20m``; the finest is used). A band is recognised by its
  ``eo:bands``/``bands`` name first, then by the key.
* **harmonisation**: the asset's ``raster:scale``/``raster:offset`` (STAC 1.1) or its
  ``raster:bands`` ``scale``/``offset`` (1.0) when given - they are the provider's statement
  of what the numbers mean (``earthsearch:boa_offset_applied`` data carry offset 0). Otherwise
  a Sentinel-2 item's processing baseline (``s2:processing_baseline``, ``processing:version``,
  or the ``Nxxyy`` of the product id in its properties) decides the offset: -1000 DN from
  04.00 on. With neither, the item is refused: guessing would shift a season by 0.1.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlparse

from geoseg.errors import SeasonError, SourceReadError
from geoseg.io.imagery import (
    LANDSAT_BANDS,
    S2_BANDS,
    Asset,
    Scene,
    baseline_from_product_name,
    parse_baseline,
    s2_offset_for_baseline,
)
from geoseg.io.paths import dataset_path

__all__ = ["is_stac_json", "read_stac", "scene_from_item", "search_stac_api"]

_S2_KEY = re.compile(r"^(B\d{2}|B8A)(?:_(\d+)m)?$", re.IGNORECASE)
_SCL_KEY = re.compile(r"^scl(?:_(\d+)m)?$", re.IGNORECASE)
_COMMON = {c: b for b, (c, _) in S2_BANDS.items()}
_LANDSAT_BY_ID = {v: k for k, v in LANDSAT_BANDS.items()}
# Landsat C2 L2 surface reflectance, from the product guide (LSDS-1619): the collection's constants.
LANDSAT_SCALE, LANDSAT_OFFSET = 2.75e-5, -0.2


def is_stac_json(path: str) -> bool:
    """True for a ``.json``/``.geojson`` path (or URL): a STAC document rather than an image or a product."""
    return bool(re.search(r"\.(geo)?json$", urlparse(str(path)).path if "://" in str(path) else str(path), re.IGNORECASE))


def _load_json(where: str) -> Any:
    try:
        if "://" in where and not where.startswith("file://"):
            with urllib.request.urlopen(where, timeout=60) as r:
                return json.loads(r.read().decode("utf-8"))
        local = where.removeprefix("file://")
        return json.loads(Path(local).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SourceReadError(f"{where}: STAC file not found; check the path") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
        reason = getattr(e, "reason", e)
        raise SourceReadError(f"{where}: cannot fetch the STAC document ({reason}); check the URL and the network "
                              f"connection (this machine may be offline), then run again") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SourceReadError(f"{where}: not valid JSON ({e}); expected a STAC item, ItemCollection or catalog") from None


def _join(base: str, href: str) -> str:
    """``href`` resolved against the document it appears in (a folder path or a URL)."""
    if "://" in href or href.startswith("/"):
        return href
    if "://" in base:
        return urljoin(base, href)
    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(base)), href))


def _gdal_href(base: str, href: str) -> str:
    return str(dataset_path(_join(base, href)))


def _items_of(doc: Any, where: str, seen: set[str], depth: int = 0) -> Iterator[tuple[dict[str, Any], str]]:
    if not isinstance(doc, dict):
        raise SourceReadError(f"{where}: expected a STAC JSON object, found {type(doc).__name__}")
    kind = doc.get("type")
    if kind == "Feature":
        yield doc, where
    elif kind == "FeatureCollection":
        for f in doc.get("features") or []:
            yield from _items_of(f, where, seen, depth)
    elif kind in ("Catalog", "Collection"):
        if depth > 8:
            raise SourceReadError(f"{where}: catalog links nest deeper than 8 levels; expected a catalog tree")
        for link in doc.get("links") or []:
            if link.get("rel") in ("item", "child") and link.get("href"):
                target = _join(where, link["href"])
                if target in seen:
                    continue
                seen.add(target)
                yield from _items_of(_load_json(target), target, seen, depth + 1)
    else:
        raise SourceReadError(f"{where}: STAC 'type' is {kind!r}; expected an item ('Feature'), an ItemCollection "
                              f"('FeatureCollection'), a 'Catalog' or a 'Collection'")


def read_stac(source: str | os.PathLike[str]) -> list[Scene]:
    """Every scene a STAC file (or URL) describes, in the order found."""
    where = os.fspath(source)
    return [scene_from_item(item, at) for item, at in _items_of(_load_json(where), where, {where})]


def search_stac_api(url: str, collections: Sequence[str], bbox: Sequence[float], start: str, end: str,
                    *, limit: int = 1000, query: Mapping[str, Any] | None = None) -> list[Scene]:
    """Scenes found by a STAC API search (``pystac-client``): ``collections`` over ``bbox``
    (lon/lat) between ``start`` and ``end`` (ISO dates, end excluded)."""
    try:
        from pystac_client import Client  # deferred: only searches need it
        from pystac_client.exceptions import APIError
    except ImportError:  # pragma: no cover - a dependency
        raise SourceReadError("searching a STAC API needs pystac-client; pip install pystac-client") from None
    try:
        client = Client.open(url)
        search = client.search(collections=list(collections), bbox=list(bbox),
                               datetime=f"{start}T00:00:00Z/{end}T00:00:00Z", max_items=limit,
                               query=dict(query) if query else None)
        items = list(search.items_as_dicts())
    except APIError as e:
        text = str(e)
        if any(k in text for k in ("Max retries exceeded", "NewConnectionError", "Failed to establish",
                                   "Name or service not known", "Temporary failure in name resolution",
                                   "ConnectTimeout", "ReadTimeout")):
            raise SourceReadError(f"{url}: cannot reach the STAC API (no connection); check the URL and the network "
                                  f"connection (this machine may be offline)") from None
        raise SourceReadError(f"{url}: the STAC API refused the search ({str(e).splitlines()[0][:200]}); check the "
                              f"collection names ({', '.join(collections)}) and the dates") from None
    except (urllib.error.URLError, OSError, ConnectionError) as e:
        raise SourceReadError(f"{url}: cannot reach the STAC API ({getattr(e, 'reason', e)}); check the URL and the "
                              f"network connection (this machine may be offline)") from None
    except Exception as e:
        if type(e).__module__.startswith(("requests", "urllib3")):
            raise SourceReadError(f"{url}: cannot reach the STAC API ({type(e).__name__}: {str(e)[:200]}); check the "
                                  f"URL and the network connection (this machine may be offline)") from None
        raise
    return [scene_from_item(it, url) for it in items]


def _when(props: Mapping[str, Any], where: str) -> datetime:
    text = props.get("datetime") or props.get("start_datetime")
    if not isinstance(text, str):
        raise SourceReadError(f"{where}: the item has no 'datetime' (or 'start_datetime'); expected an acquisition time")
    try:
        d = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise SourceReadError(f"{where}: datetime {text!r} is not an ISO 8601 time") from None
    return d.astimezone(UTC) if d.tzinfo else d.replace(tzinfo=UTC)


def _band_names(asset: Mapping[str, Any]) -> list[str]:
    bands = asset.get("eo:bands") or asset.get("bands") or []
    return [str(b.get("name", "")) for b in bands if isinstance(b, dict)]


def _scale_offset(asset: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """The provider's scale and offset of an asset (STAC 1.1 fields, then 1.0 ``raster:bands``)."""
    if "raster:scale" in asset or "raster:offset" in asset:
        return asset.get("raster:scale", 1.0), asset.get("raster:offset", 0.0)
    for key in ("raster:bands", "bands"):
        rb = asset.get(key)
        if isinstance(rb, list) and rb and isinstance(rb[0], dict):
            b = rb[0]
            if "scale" in b or "offset" in b:
                return b.get("scale", 1.0), b.get("offset", 0.0)
            if "raster:scale" in b or "raster:offset" in b:
                return b.get("raster:scale", 1.0), b.get("raster:offset", 0.0)
    return None, None


def _nodata(asset: Mapping[str, Any], default: float | None) -> float | None:
    if "nodata" in asset:
        return asset["nodata"]
    for key in ("raster:bands", "bands"):
        rb = asset.get(key)
        if isinstance(rb, list) and rb and isinstance(rb[0], dict) and "nodata" in rb[0]:
            return rb[0]["nodata"]
    return default


def _resolution(asset: Mapping[str, Any], res_from_key: str | None) -> float | None:
    for k in ("gsd",):
        if isinstance(asset.get(k), (int, float)):
            return float(asset[k])
    rb = asset.get("raster:bands")
    if isinstance(rb, list) and rb and isinstance(rb[0], dict) and "spatial_resolution" in rb[0]:
        return float(rb[0]["spatial_resolution"])
    t = asset.get("proj:transform")
    if isinstance(t, list) and len(t) >= 6:
        return abs(float(t[0]))
    return float(res_from_key) if res_from_key else None


def _sensor(props: Mapping[str, Any], assets: Mapping[str, Any], item_id: str) -> str:
    text = " ".join(str(props.get(k, "")) for k in ("platform", "constellation", "instruments")).lower() + item_id.lower()
    if "sentinel" in text and "2" in text or re.match(r"s2[abc]_", item_id.lower()):
        return "sentinel-2"
    if "landsat" in text or re.match(r"l[coe]0[4-9]_", item_id.lower()):
        return "landsat"
    keys = {k.lower() for k in assets}
    if "qa_pixel" in keys:
        return "landsat"
    if keys & {"scl", "scl_20m"}:
        return "sentinel-2"
    return ""


def _classify_asset(key: str, asset: Mapping[str, Any], sensor: str) -> tuple[str, int | None] | None:
    """``(common name | 'mask', resolution from the key)`` of an asset, or None when not a band we use."""
    names = _band_names(asset)
    m = _SCL_KEY.match(key)
    if m or (names and names[0].upper() == "SCL"):
        return ("mask", int(m.group(1)) if m and m.group(1) else None) if sensor != "landsat" else None
    if key.lower() == "qa_pixel" or (names and names[0].upper() == "QA_PIXEL"):
        return ("mask", None) if sensor == "landsat" else None
    if len(names) > 1:
        return None  # a true-colour composite (visual, TCI)
    name = names[0] if names else ""
    if sensor == "landsat":
        for cand in (name.upper(), key.upper(), f"SR_{name.upper()}"):
            if cand in _LANDSAT_BY_ID:
                return _LANDSAT_BY_ID[cand], None
        if key.lower() in LANDSAT_BANDS and not names:
            return key.lower(), None
        common = str((asset.get("eo:bands") or asset.get("bands") or [{}])[0].get("common_name", "")).lower()
        if key.lower() in LANDSAT_BANDS and (not common or common == key.lower()):
            return key.lower(), None
        return None
    m = _S2_KEY.match(name) or _S2_KEY.match(key)
    if m:
        band = m.group(1).upper()
        return S2_BANDS[band][0], int(m.group(2)) if m.group(2) else None
    if key.lower() in _COMMON and not key.lower().endswith("-jp2"):
        return key.lower(), None
    return None


def _s2_harmonisation(props: Mapping[str, Any], where: str, item_id: str) -> tuple[str, float | None, str]:
    """``(baseline text, offset or None, how)`` from an S2 item's properties."""
    for k in ("s2:processing_baseline", "processing:version", "sentinel:processing_baseline"):
        b = parse_baseline(props.get(k))
        if b is not None:
            if props.get("earthsearch:boa_offset_applied") is True:
                return f"{b[0]:02d}.{b[1]:02d}", 0.0, "earthsearch:boa_offset_applied (offset already removed)"
            return f"{b[0]:02d}.{b[1]:02d}", s2_offset_for_baseline(b), f"{k} {props.get(k)}"
    for k in ("s2:product_uri", "sentinel:product_id", "s2:product_id"):
        b = baseline_from_product_name(props.get(k))
        if b is not None:
            return f"{b[0]:02d}.{b[1]:02d}", s2_offset_for_baseline(b), f"the N-number of {k}"
    return "", None, ""


def scene_from_item(item: Mapping[str, Any], where: str) -> Scene:
    """The :class:`Scene` of one STAC item (a dict); ``where`` is the file or URL it came from
    (relative asset hrefs are resolved against it)."""
    item_id = str(item.get("id", "?"))
    label = f"{where} (item {item_id})"
    props = item.get("properties") or {}
    assets = item.get("assets") or {}
    if not isinstance(assets, dict) or not assets:
        raise SourceReadError(f"{label}: the item has no assets; expected per-band image assets")
    sensor = _sensor(props, assets, item_id)
    if not sensor:
        raise SeasonError(f"{label}: neither a Sentinel-2 nor a Landsat item (platform {props.get('platform')!r}, no "
                          f"SCL or qa_pixel asset); geoseg composites Sentinel-2 L2A and Landsat C2 L2")
    found: dict[str, tuple[float, Asset]] = {}
    sources: set[str] = set()
    mask: tuple[float, Asset] | None = None
    baseline, item_offset, how = ("", None, "")
    if sensor == "sentinel-2":
        baseline, item_offset, how = _s2_harmonisation(props, label, item_id)
    for key, a in assets.items():
        if not isinstance(a, dict) or not a.get("href"):
            continue
        kind = _classify_asset(key, a, sensor)
        if kind is None:
            continue
        common, key_res = kind
        res = _resolution(a, str(key_res) if key_res else None) or 0.0
        href = _gdal_href(where, str(a["href"]))
        if common == "mask":
            asset = Asset(href, nodata=_nodata(a, 0 if sensor == "sentinel-2" else 1), resolution=res or None)
            if mask is None or res < mask[0]:
                mask = (res, asset)
            continue
        scale, offset = _scale_offset(a)
        if scale is not None:
            src = "raster scale/offset of the asset"
        elif sensor == "landsat":
            scale, offset, src = LANDSAT_SCALE, LANDSAT_OFFSET, "Landsat C2 L2 constants"
        elif item_offset is not None:
            scale, offset, src = 1e-4, item_offset, how
        else:
            raise SeasonError(
                f"{label}: cannot tell how asset {key!r} becomes reflectance: it has no raster scale/offset and the "
                f"item gives no processing baseline (s2:processing_baseline, processing:version or a product id with "
                f"its N-number), so whether the -1000 offset of baseline 04.00 (January 2022) applies is unknown; add "
                f"'s2:processing_baseline' to the item's properties (or raster:bands scale/offset to its assets)"
            )
        asset = Asset(href, scale=float(scale), offset=float(offset or 0.0), nodata=_nodata(a, 0), resolution=res or None)
        if common not in found or res < found[common][0]:
            found[common] = (res, asset)
            sources.add(src)
    epsg = props.get("proj:epsg") or props.get("proj:code")
    crs = (f"EPSG:{epsg}" if isinstance(epsg, int) else str(epsg)) if epsg else None
    bounds = _proj_bounds(props, assets)
    bbox = item.get("bbox")
    lonlat = tuple(float(v) for v in bbox[:2] + bbox[-2:]) if isinstance(bbox, list) and len(bbox) in (4, 6) else None
    if lonlat is not None and len(bbox) == 6:
        lonlat = (float(bbox[0]), float(bbox[1]), float(bbox[3]), float(bbox[4]))
    platform = str(props.get("platform", "")).lower().replace(" ", "-")
    orbit = str(props.get("sat:relative_orbit", props.get("sentinel:relative_orbit", props.get("landsat:wrs_path", ""))))
    tile = str(props.get("s2:mgrs_tile") or props.get("grid:code", "") or "").replace("MGRS-", "")
    if not tile and props.get("mgrs:utm_zone"):
        tile = f"{props.get('mgrs:utm_zone')}{props.get('mgrs:latitude_band', '')}{props.get('mgrs:grid_square', '')}"
    if not tile and props.get("sentinel:grid_square"):
        tile = f"{props.get('sentinel:utm_zone', '')}{props.get('sentinel:latitude_band', '')}{props.get('sentinel:grid_square')}"
    return Scene(
        id=item_id, source=where, datetime=_when(props, label), sensor=sensor, platform=platform,
        assets={k: v for k, (_, v) in found.items()}, mask=mask[1] if mask else None,
        mask_kind="qa_pixel" if sensor == "landsat" else "scl", bounds_lonlat=lonlat, crs=crs, bounds=bounds,
        orbit=orbit, baseline=baseline, tile=tile, harmonisation="; ".join(sorted(sources)),
    )


def _proj_bounds(props: Mapping[str, Any], assets: Mapping[str, Any]) -> tuple[float, float, float, float] | None:
    for a in [props, *[a for a in assets.values() if isinstance(a, dict)]]:
        t, s = a.get("proj:transform"), a.get("proj:shape")
        if isinstance(t, list) and len(t) >= 6 and isinstance(s, list) and len(s) == 2:
            x0, y0 = float(t[2]), float(t[5])
            x1, y1 = x0 + float(t[0]) * s[1], y0 + float(t[4]) * s[0]
            return (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
        b = a.get("proj:bbox")
        if isinstance(b, list) and len(b) == 4:
            return tuple(float(v) for v in b)  # type: ignore[return-value]
    return None

