"""All reading and writing of vector files and tables (pyogrio, geopandas, pyarrow).

Formats, chosen by extension or by name:

============  ==================  ==============================================================
name          extensions          notes
============  ==================  ==============================================================
``gpkg``      ``.gpkg``           GeoPackage; carries a QGIS layer style (``layer_styles``
                                  table) so that fields open in their class colours
``parquet``   ``.parquet``        GeoParquet 1.1 (geopandas + pyarrow), zstd, bbox covering
``fgb``       ``.fgb``            FlatGeobuf with a spatial index
``geojson``   ``.geojson``        RFC 7946: always EPSG:4326 (reprojected), exteriors
              ``.json``           counter-clockwise, 7 decimals (about 1 cm)
``shp``       ``.shp``            ESRI Shapefile (+ ``.qml`` style beside it); attribute names
                                  longer than 10 characters are shortened by :data:`SHP_NAMES`
                                  and restored by :func:`read_vector`
============  ==================  ==============================================================

Every write goes to a temporary name beside the target and is renamed into place when
complete (for a Shapefile, its parts are renamed one by one, the ``.shp`` last). The output
``-`` is standard output, for the formats that stream (GeoJSON; CSV and JSON tables): the
file is written whole to a temporary folder first, then copied to standard output, so a
failure writes nothing there.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape

from geoseg.classes import ClassTable
from geoseg.errors import GeosegError, VectorFormatError, VectorReadError, VectorWriteError
from geoseg.io.fiboa import collection_metadata, fiboa_table, is_fiboa
from geoseg.io.paths import STDOUT, is_remote, refuse_stdout
from geoseg.io.raster import atomic_path, free_space_note

if TYPE_CHECKING:  # pragma: no cover
    import geopandas as gpd
    import pandas as pd

__all__ = [
    "attribute_columns",
    "FORMATS",
    "SHP_NAMES",
    "vector_driver",
    "read_vector",
    "feature_count",
    "write_vector",
    "write_vector_parts",
    "write_table",
    "table_format",
    "check_stream_vector",
    "read_table",
    "qgis_style",
]

#: Format name -> (GDAL driver or "Parquet", extensions).
FORMATS: dict[str, tuple[str, tuple[str, ...]]] = {
    "gpkg": ("GPKG", (".gpkg",)),
    "parquet": ("Parquet", (".parquet", ".geoparquet")),
    "fgb": ("FlatGeobuf", (".fgb",)),
    "geojson": ("GeoJSON", (".geojson", ".json")),
    "shp": ("ESRI Shapefile", (".shp",)),
}
#: Attribute names too long for a Shapefile (10 characters) and their short forms.
SHP_NAMES = {"confidence": "confidence", "crop:code": "crop_code", "crop:name": "crop_name",
             "crop:code_list": "crop_list", "metrics:area": "area_m2", "metrics:perimeter": "perim_m",
             "determination:method": "det_method", "determination:datetime": "det_time",
             "determination:details": "det_detail"}
_SHP_PARTS = (".shp", ".shx", ".dbf", ".prj", ".cpg", ".qml")
_SHP_STALE = (".qix", ".sbn", ".sbx", ".shp.xml")


# --------------------------------------------------------------------------------------
# formats
def vector_driver(path: str | os.PathLike[str], driver: str | None = None) -> tuple[str, str]:
    """Return ``(format name, driver)`` for ``path`` (by extension) or for ``driver``.

    ``driver`` may be a format name (``gpkg``, ``parquet``, ``fgb``, ``geojson``, ``shp``)
    or a GDAL driver name (``GPKG``, ``FlatGeobuf``, ...).

    Examples
    --------
    >>> vector_driver("fields.fgb")
    ('fgb', 'FlatGeobuf')
    >>> vector_driver("out.dat", "gpkg")
    ('gpkg', 'GPKG')
    >>> vector_driver("fields.kml")
    Traceback (most recent call last):
    ...
    geoseg.errors.VectorFormatError: fields.kml: cannot tell the output format from the extension '.kml'; use one of .gpkg, .parquet, .geoparquet, .fgb, .geojson, .json, .shp or name the format (gpkg, parquet, fgb, geojson, shp)
    """
    if driver is not None:
        key = str(driver).strip()
        for name, (drv, _) in FORMATS.items():
            if key.lower() in (name, drv.lower()):
                return name, drv
        raise VectorFormatError(
            f"{path}: unknown output format {driver!r}; use one of {', '.join(FORMATS)} "
            f"(or a GDAL driver name: {', '.join(d for d, _ in FORMATS.values())})"
        )
    p = str(path).lower()
    for name, (drv, exts) in FORMATS.items():
        if any(p.endswith(e) for e in exts):
            return name, drv
    exts_all = ", ".join(e for _, es in FORMATS.values() for e in es)
    suffix = Path(str(path)).suffix or "(none)"
    raise VectorFormatError(
        f"{path}: cannot tell the output format from the extension {suffix!r}; use one of {exts_all} "
        f"or name the format ({', '.join(FORMATS)})"
    )


# --------------------------------------------------------------------------------------
# reading
def read_vector(path: str | os.PathLike[str], *, layer: str | int | None = None,
                columns: Sequence[str] | None = None, skip: int = 0, count: int | None = None) -> "gpd.GeoDataFrame":
    """Read any vector file GDAL reads, or GeoParquet, into a GeoDataFrame.

    Shapefile attribute names shortened by :func:`write_vector` are restored. ``skip`` and
    ``count`` read a slice of the features in file order (a part of a large layer; GDAL's
    formats seek to it, a GeoParquet file is read whole and then sliced).

    Raises
    ------
    VectorReadError
        Missing or unreadable file.
    """
    import geopandas as gpd
    import pyogrio
    import shapely.errors

    p = str(path)
    if "://" not in p and not p.startswith("/vsi") and not os.path.exists(p):
        raise VectorReadError(f"{p}: file not found; check the path")
    if is_remote(p) and p.lower().endswith((".parquet", ".geoparquet")):
        raise VectorReadError(
            f"{p}: a remote GeoParquet file is not read (GDAL here has no Parquet driver for its virtual file "
            f"systems); download it first (e.g. `aws s3 cp`), or give a GeoPackage, FlatGeobuf or GeoJSON URL"
        )
    try:
        if p.lower().endswith((".parquet", ".geoparquet")):
            gdf = gpd.read_parquet(p, columns=list(columns) + ["geometry"] if columns else None)
            if skip or count is not None:
                gdf = gdf.iloc[skip:None if count is None else skip + count]
        else:
            kw: dict[str, Any] = {}
            if layer is not None:
                kw["layer"] = layer
            elif p.lower().endswith(".gpkg"):  # skip the QGIS style table that write_vector adds
                layers = [str(n) for n, _ in pyogrio.list_layers(p)]
                data = [n for n in layers if n != "layer_styles"]
                if len(layers) > 1 and data:
                    kw["layer"] = data[0]
            if columns is not None:
                kw["columns"] = list(columns)
            if skip:
                kw["skip_features"] = int(skip)
            if count is not None:
                kw["max_features"] = int(count)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                gdf = pyogrio.read_dataframe(p, **kw)
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, OSError, ValueError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise VectorReadError(
            f"{p}: cannot be read as a vector file ({first}); expected a GeoPackage, Shapefile, GeoJSON, "
            f"FlatGeobuf, GeoParquet or another format GDAL reads"
        ) from None
    except shapely.errors.ShapelyError as e:  # GDAL read it, but a geometry is not one (e.g. an open ring)
        raise VectorReadError(
            f"{p}: holds a geometry that cannot be built ({str(e).splitlines()[0]}); expected valid polygons - "
            f"repair the file, e.g. `ogr2ogr -makevalid fixed.gpkg {p}`, or QGIS's Fix geometries tool"
        ) from None
    if p.lower().endswith(".shp"):
        back = {short: long for long, short in SHP_NAMES.items() if short != long}
        gdf = gdf.rename(columns={k: v for k, v in back.items() if k in gdf.columns and v not in gdf.columns})
    if not isinstance(gdf, gpd.GeoDataFrame):
        raise VectorReadError(f"{p}: has no geometry column; expected a layer of polygons")
    return gdf


def feature_count(path: str | os.PathLike[str]) -> int:
    """How many features the vector file (its data layer, as :func:`read_vector` picks it) holds.

    Raises
    ------
    VectorReadError
        Missing or unreadable file.
    """
    import pyogrio

    p = str(path)
    if p.lower().endswith((".parquet", ".geoparquet")):
        import pyarrow.parquet as pq

        try:
            return int(pq.ParquetFile(p).metadata.num_rows)
        except (OSError, ValueError) as e:
            raise VectorReadError(f"{p}: cannot be read as GeoParquet ({str(e).splitlines()[0]})") from None
    if "://" not in p and not p.startswith("/vsi") and not os.path.exists(p):
        raise VectorReadError(f"{p}: file not found; check the path")
    kw: dict[str, Any] = {}
    try:
        if p.lower().endswith(".gpkg"):
            data = [str(n) for n, _ in pyogrio.list_layers(p) if str(n) != "layer_styles"]
            if data:
                kw["layer"] = data[0]
        return int(pyogrio.read_info(p, force_feature_count=True, **kw)["features"])
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, OSError, ValueError) as e:
        raise VectorReadError(f"{p}: cannot be read as a vector file ({str(e).splitlines()[0]}); expected a "
                              f"GeoPackage, Shapefile, GeoJSON, FlatGeobuf, GeoParquet or another format GDAL "
                              f"reads") from None


def attribute_columns(gdf: Any) -> list[str]:
    return [str(c) for c in gdf.columns if c != getattr(gdf, "_geometry_column_name", "geometry")]


# --------------------------------------------------------------------------------------
# writing
def _prepare_dir(path: Path) -> None:
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise VectorWriteError(f"{path}: cannot create the directory {parent} ({e.strerror}); "
                               f"choose a writable location") from None
    if not os.access(parent, os.W_OK):
        raise VectorWriteError(f"{path}: the directory {parent} is not writable; choose another output path")


def _prepare_write(p: Path, gdf: Any, layer: str | None, classes: ClassTable | None) -> tuple[str, str | None]:
    """Check the frame has a CRS and the directory can take ``p``; the layer name and QGIS style."""
    if gdf.crs is None:
        raise VectorWriteError(f"{p}: the data has no CRS; set one (gdf.set_crs(...)) before writing")
    _prepare_dir(p)
    style = qgis_style(classes) if (classes is not None and "class_id" in gdf.columns) else None
    return layer or p.stem, style


def _check_written(path: Path, target: Path, rows: int, *, layer: str | None = None) -> None:
    """Re-open a vector or table file just written and check that it holds ``rows`` rows.

    GDAL's writers report some failures only in their log (a GeoJSON whose closing bytes
    or a Shapefile whose ``.shx`` index did not fit on the disk): without this check such
    a file would be published behind an exit status of 0.

    Raises
    ------
    VectorWriteError
        The file does not open, or holds another number of rows.
    """
    found: str
    try:
        if path.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            n = pq.ParquetFile(path).metadata.num_rows
        else:
            import pyogrio

            n = pyogrio.read_info(path, layer=layer, force_feature_count=True)["features"]
        if n == rows:
            return
        found = f"{n} rows, expected {rows}"
    except Exception as e:  # noqa: BLE001 - any failure to read it back means the file is bad
        found = (str(e).splitlines() or [type(e).__name__])[0].replace(str(path), path.name)
    raise VectorWriteError(
        f"{target}: the file written does not read back ({found}){free_space_note(target)}; "
        f"check free disk space, then run again"
    )


def write_vector(
    gdf: "gpd.GeoDataFrame",
    path: str | os.PathLike[str],
    driver: str | None = None,
    classes: ClassTable | None = None,
    *,
    layer: str | None = None,
) -> Path:
    """Write ``gdf`` atomically in the format of ``path``'s extension (or ``driver``).

    Parameters
    ----------
    gdf : GeoDataFrame
        With a CRS; the CRS is written with the data (GeoJSON is reprojected to EPSG:4326).
    path : path
        Target file; its directory is created if missing. ``"-"``: standard output, as GeoJSON
        (the only format here that streams).
    driver : str, optional
        Format name or GDAL driver, overriding the extension.
    classes : ClassTable, optional
        Class colours for the QGIS style (GeoPackage: embedded; Shapefile: ``.qml``
        beside it), applied to a ``class_id`` column.
    layer : str, optional
        Layer name (GeoPackage; default: the file name without extension).

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    VectorFormatError
        Unknown extension or format name.
    VectorWriteError
        No CRS, or the file cannot be written.
    """
    import geopandas as gpd
    import pyogrio

    if os.fspath(path) == STDOUT:
        check_stream_vector(driver)
        _to_stdout(lambda tmp: write_vector(gdf, tmp, "geojson", classes, layer=layer or "fields"), "fields.geojson")
        return Path(STDOUT)
    p = Path(path)
    name, drv = vector_driver(p, driver)
    if not isinstance(gdf, gpd.GeoDataFrame):
        raise VectorWriteError(f"{p}: expected a GeoDataFrame, got {type(gdf).__name__}")
    lyr, style = _prepare_write(p, gdf, layer, classes)
    try:
        if name == "shp":
            _write_shapefile(gdf, p, style)
            return p
        tmp = atomic_path(p)
        try:
            if name == "parquet" and is_fiboa(gdf):  # fields: fiboa's metadata and NOT NULLs
                import pyarrow.parquet as pq

                pq.write_table(fiboa_table(gdf), tmp, compression="zstd")
            elif name == "parquet":
                gdf.to_parquet(tmp, index=False, compression="zstd", write_covering_bbox=True)
            elif name == "geojson":
                out = gdf.to_crs("EPSG:4326") if not gdf.crs.equals("EPSG:4326") else gdf
                fiboa = {"ID_FIELD": "id", "FOREIGN_MEMBERS_COLLECTION": json.dumps(collection_metadata(gdf))} \
                    if is_fiboa(gdf) else {}  # fields: fiboa's string feature ids and collection members
                pyogrio.write_dataframe(out, tmp, driver="GeoJSON", layer=lyr, RFC7946="YES", **fiboa)
            else:
                pyogrio.write_dataframe(gdf, tmp, driver=drv, layer=lyr)
                if name == "gpkg":
                    if style is not None:
                        _add_gpkg_style(tmp, lyr, style)
                    tmp = reproducible_gpkg(tmp, p)
            _check_written(tmp, p, len(gdf), layer=None if name == "parquet" else lyr)
            os.replace(tmp, p)
        finally:
            tmp.unlink(missing_ok=True)
    except GeosegError:
        raise
    except Exception as e:  # noqa: BLE001 - GDAL/pyarrow errors become one clear line
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise VectorWriteError(
            f"{p}: writing {drv} failed ({first}){free_space_note(p)}; check free space and permissions"
        ) from None
    return p


def write_vector_parts(
    parts: Iterable["gpd.GeoDataFrame"],
    path: str | os.PathLike[str],
    driver: str | None = None,
    classes: ClassTable | None = None,
    *,
    layer: str | None = None,
) -> tuple[Path, int]:
    """Write the frames of ``parts`` one after the other into one file, atomically: a GeoParquet
    dataset read part by part into a GeoPackage or FlatGeobuf holds one part at a time (the first
    part makes the file, the others are appended; the same finishing as :func:`write_vector`).
    GeoJSON (whose fiboa feature ids and RFC 7946 options GDAL applies only when it creates the
    file), Shapefile and Parquet are written from all parts at once. Returns the file and its
    row count.

    Raises
    ------
    VectorFormatError, VectorWriteError
        As :func:`write_vector`; no parts.
    """
    import geopandas as gpd
    import pandas as pd
    import pyogrio

    p = Path(path)
    name, drv = vector_driver(p, driver)
    it = iter(parts)
    first = next(it, None)
    if first is None:
        raise VectorWriteError(f"{p}: nothing to write (no parts); expected at least one frame, empty or not")
    if name in ("shp", "parquet", "geojson"):
        rest = list(it)
        whole = first if not rest else gpd.GeoDataFrame(pd.concat([first, *rest], ignore_index=True), crs=first.crs)
        return write_vector(whole, p, driver, classes, layer=layer), len(whole)
    lyr, style = _prepare_write(p, first, layer, classes)
    try:
        tmp = atomic_path(p)
        try:
            rows = 0
            for i, part in enumerate(_chain(first, it)):
                pyogrio.write_dataframe(part, tmp, driver=drv, layer=lyr, append=i > 0)
                rows += len(part)
            if name == "gpkg":
                if style is not None:
                    _add_gpkg_style(tmp, lyr, style)
                tmp = reproducible_gpkg(tmp, p)
            _check_written(tmp, p, rows, layer=lyr)
            os.replace(tmp, p)
        finally:
            tmp.unlink(missing_ok=True)
    except GeosegError:
        raise
    except Exception as e:  # noqa: BLE001 - GDAL errors become one clear line
        first_line = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise VectorWriteError(
            f"{p}: writing {drv} failed ({first_line}){free_space_note(p)}; check free space and permissions"
        ) from None
    return p, rows


def _chain(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest


def check_stream_vector(driver: str | None) -> None:
    """Raise unless ``driver`` (None: GeoJSON) is a format that streams to standard output.

    Raises
    ------
    ConfigError
        GeoPackage, GeoParquet, FlatGeobuf and Shapefile, each with why and what to do.
    """
    name = "geojson" if driver is None else vector_driver(STDOUT, driver)[0]
    why = {
        "gpkg": "a GeoPackage is an SQLite database, written with seeks back into the file",
        "parquet": "GeoParquet's footer, which says where everything is, is written after the data",
        "fgb": "FlatGeobuf's spatial index sits before the features and is written after them",
        "shp": "a Shapefile is several files",
    }
    if name in why:
        refuse_stdout(STDOUT, f"{name} ({vector_driver(STDOUT, name)[1]})", why[name],
                      f"--out fields.{'parquet' if name == 'parquet' else name}, or --format geojson for standard output")


def _to_stdout(write: Callable[[Path], object], name: str) -> None:
    """Write a file whole with ``write(tmp)`` in a temporary folder, then copy it to standard output."""
    with tempfile.TemporaryDirectory(prefix="geoseg-stdout-") as d:
        tmp = Path(d) / name
        write(tmp)
        out = sys.stdout.buffer
        with open(tmp, "rb") as f:
            shutil.copyfileobj(f, out)
        out.flush()


def _write_shapefile(gdf: "gpd.GeoDataFrame", p: Path, style: str | None) -> None:
    import pyogrio

    geom_col = gdf.geometry.name
    rename = {c: s for c, s in SHP_NAMES.items() if c in gdf.columns and c != s}
    long = [c for c in gdf.columns if c != geom_col and len(str(rename.get(c, c))) > 10]
    if long:
        raise VectorWriteError(
            f"{p}: attribute names {long} are longer than the 10 characters a Shapefile allows; rename them or "
            f"write a GeoPackage (.gpkg) instead"
        )
    tmpdir = p.with_name(f".{p.name}.partial-{uuid.uuid4().hex[:12]}")
    tmpdir.mkdir()
    out = gdf.rename(columns=rename)
    for c in out.columns:  # a .dbf holds dates without times: times as ISO 8601 text in UTC
        if c != geom_col and str(out[c].dtype).startswith("datetime64"):
            out[c] = out[c].dt.strftime("%Y-%m-%dT%H:%M:%SZ").astype(object)
    try:
        pyogrio.write_dataframe(out, tmpdir / p.name, driver="ESRI Shapefile", encoding="UTF-8")
        if style is not None:
            (tmpdir / (p.stem + ".qml")).write_text(style, encoding="utf-8")
        _check_written(tmpdir / p.name, p, len(gdf))
        for ext in _SHP_STALE:
            p.with_name(p.stem + ext).unlink(missing_ok=True)
        made = {f.name for f in tmpdir.iterdir()}
        for ext in [e for e in _SHP_PARTS if e != ".shp"] + [".shp"]:
            part = p.stem + ext
            if part in made:
                os.replace(tmpdir / part, p.with_name(part))
            elif ext == ".qml":
                p.with_name(part).unlink(missing_ok=True)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


#: The time stamped into GeoPackages (``gpkg_contents.last_change``) so that the same
#: content gives the same bytes (resumed runs are compared byte for byte).
GPKG_TIMESTAMP = "2000-01-01T00:00:00.000Z"


def reproducible_gpkg(raw: Path, target: Path, timestamp: str = GPKG_TIMESTAMP) -> Path:
    """Pin ``raw``'s timestamps and compact it into a new temporary name for ``target``; return it.

    GDAL stamps ``gpkg_contents.last_change`` with the current time and builds the spatial
    index in a background thread (so the SQLite header's change counter varies from run
    to run); pinning the timestamp and copying the database with ``VACUUM INTO`` gives the
    same bytes for the same content. ``raw`` is removed.
    """
    import contextlib
    import sqlite3

    final = atomic_path(target)
    try:
        with contextlib.closing(sqlite3.connect(raw)) as con:
            with con:
                con.execute("UPDATE gpkg_contents SET last_change = ?", (timestamp,))
            con.execute("VACUUM INTO ?", (str(final),))
    except BaseException:
        final.unlink(missing_ok=True)
        raise
    finally:
        raw.unlink(missing_ok=True)
    return final


def _add_gpkg_style(path: Path, layer: str, qml: str) -> None:
    """Embed a QGIS default style for ``layer`` (the ``layer_styles`` table QGIS reads)."""
    import pandas as pd
    import pyogrio

    styles = pd.DataFrame(
        {
            "f_table_catalog": [""],
            "f_table_schema": [""],
            "f_table_name": [layer],
            "f_geometry_column": ["geom"],
            "styleName": [layer],
            "styleQML": [qml],
            "styleSLD": [""],
            "useAsDefault": [True],
            "description": ["geoseg crop classes"],
            "owner": [""],
            "ui": [""],
            "update_time": [pd.Timestamp("2000-01-01T00:00:00")],
        }
    )
    pyogrio.write_dataframe(styles, path, layer="layer_styles", driver="GPKG")


def qgis_style(classes: ClassTable, attribute: str = "class_id") -> str:
    """A QGIS style (QML): fields filled in their class colours, categorised on ``attribute``.

    Examples
    --------
    >>> from geoseg.classes import default_classes
    >>> qml = qgis_style(default_classes())
    >>> 'attr="class_id"' in qml and 'label="rice"' in qml and "26,152,80,255" in qml
    True
    """
    cats = []
    syms = []
    for i, c in enumerate(classes):
        r, g, b = c.rgb
        cats.append(f'      <category value="{c.id}" label="{escape(c.name)}" symbol="{i}" render="true" type="integer"/>')
        props = {
            "color": f"{r},{g},{b},255",
            "outline_color": "35,35,35,255",
            "outline_style": "solid",
            "outline_width": "0.1",
            "outline_width_unit": "MM",
            "style": "solid",
        }
        opts = "\n".join(f'            <Option name="{k}" type="QString" value="{v}"/>' for k, v in props.items())
        legacy = "\n".join(f'          <prop k="{k}" v="{v}"/>' for k, v in props.items())
        syms.append(
            f'      <symbol type="fill" name="{i}" alpha="1" clip_to_extent="1" force_rhr="0">\n'
            f'        <layer class="SimpleFill" enabled="1" locked="0" pass="0">\n'
            f'          <Option type="Map">\n{opts}\n          </Option>\n{legacy}\n'
            f"        </layer>\n      </symbol>"
        )
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        '<qgis version="3.28.0" styleCategories="Symbology">\n'
        f'  <renderer-v2 type="categorizedSymbol" attr="{escape(attribute)}" symbollevels="0" '
        'enableorderby="0" forceraster="0" referencescale="-1">\n'
        "    <categories>\n" + "\n".join(cats) + "\n    </categories>\n"
        "    <symbols>\n" + "\n".join(syms) + "\n    </symbols>\n"
        "  </renderer-v2>\n</qgis>\n"
    )


# --------------------------------------------------------------------------------------
# tables
_TABLE_EXTS = (".csv", ".parquet", ".json")


def table_format(path: str | os.PathLike[str], fmt: str | None = None) -> str:
    """The table format (``csv``, ``parquet`` or ``json``) of ``path``, or ``fmt`` when given.

    Standard output (``-``) is CSV by default and refuses Parquet.

    Raises
    ------
    VectorFormatError
        An unknown extension or format name.
    ConfigError
        Parquet to standard output.

    >>> table_format("a.CSV"), table_format("-"), table_format("x.dat", "json")
    ('csv', 'csv', 'json')
    """
    if fmt is not None:
        ext = "." + str(fmt).lower().lstrip(".")
        if ext not in _TABLE_EXTS:
            raise VectorFormatError(f"{path}: unknown table format {fmt!r}; use csv, parquet or json")
    elif os.fspath(path) == STDOUT:
        ext = ".csv"
    else:
        ext = Path(path).suffix.lower()
    if os.fspath(path) == STDOUT and ext == ".parquet":
        refuse_stdout(STDOUT, "a Parquet table", "its footer, which says where everything is, is written after "
                      "the data", "--out areas.parquet, or --format csv (or json) for standard output")
    if ext not in _TABLE_EXTS:
        raise VectorFormatError(
            f"{path}: cannot tell the table format from the extension {ext or '(none)'!r}; use .csv, .parquet or .json"
        )
    return ext[1:]


def write_table(df: "pd.DataFrame", path: str | os.PathLike[str], fmt: str | None = None) -> Path:
    """Write a table atomically: ``.csv`` (UTF-8, no index), ``.parquet`` or ``.json`` (records).

    ``fmt`` (``csv``, ``parquet``, ``json``) overrides the extension; ``path`` ``"-"`` writes to
    standard output (CSV by default, or JSON).

    Raises
    ------
    VectorFormatError
        Another extension.
    VectorWriteError
        The file cannot be written.
    """
    if os.fspath(path) == STDOUT:
        kind = table_format(path, fmt)
        _to_stdout(lambda tmp: write_table(df, tmp), f"table.{kind}")
        return Path(STDOUT)
    p = Path(path)
    ext = "." + table_format(p, fmt)
    _prepare_dir(p)
    tmp = atomic_path(p)
    try:
        try:
            if ext == ".csv":
                df.to_csv(tmp, index=False, encoding="utf-8", lineterminator="\n")
            elif ext == ".parquet":
                # without df.attrs (pandas would store them, source paths included): same table, same bytes
                plain = df.copy(deep=False)
                plain.attrs = {}
                plain.to_parquet(tmp, index=False)
            else:
                tmp.write_text(df.to_json(orient="records", indent=1, force_ascii=False), encoding="utf-8")
        except OSError as e:
            raise VectorWriteError(
                f"{p}: writing the table failed ({e.strerror or e}){free_space_note(p)}; check free space"
            ) from None
        if ext == ".parquet":
            _check_written(tmp, p, len(df))
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)
    return p


def read_table(path: str | os.PathLike[str]) -> "pd.DataFrame":
    """Read a table written by :func:`write_table` (CSV, Parquet or JSON records)."""
    import pandas as pd

    p = Path(path)
    if not p.exists():
        raise VectorReadError(f"{p}: file not found; check the path")
    ext = p.suffix.lower()
    if ext == ".csv":
        return pd.read_csv(p)
    if ext == ".parquet":
        return pd.read_parquet(p)
    if ext == ".json":
        return pd.DataFrame(json.loads(p.read_text(encoding="utf-8")))
    raise VectorFormatError(f"{p}: not a table file; expected .csv, .parquet or .json")
