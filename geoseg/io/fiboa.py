"""Fields as fiboa: the column names, the collection metadata and the GeoParquet encoding.

geoseg's fields files follow `fiboa <https://fiboa.org>`_ 0.3.0 (the version fiboa-cli 0.21
validates; fiboa 0.3 is an extension of `Vecorel <https://vecorel.org>`_ 0.1) with the
`crop extension <https://github.com/fiboa/crop-extension>`_ 0.2.0. Every format (GeoParquet,
GeoPackage, GeoJSON, FlatGeobuf) carries the same columns, so SQL, the report and users see
one set of names:

=========================  ==========  =====================================================
column                     type        meaning
=========================  ==========  =====================================================
``id``                     string      the field's id (its ``field_id`` as text); fiboa core
``collection``             string      the run id, or ``geoseg`` outside a run; fiboa core
``field_id``               int64       geoseg's numeric id (the field's first pixel)
``class_id``               int32       the class value in the mask
``crop:code``              string      the class id as text (crop extension)
``crop:name``              string      the class name (crop extension)
``crop:code_list``         string      :func:`code_list_id` of the class table (crop extension)
``area_ha``                double      ground area in hectares (the pixels' area)
``metrics:area``           float       the same area in m² (fiboa; 32-bit float)
``metrics:perimeter``      float       ground length of the outline in metres (fiboa)
``confidence``             double      mean confidence 0..1 (with a confidence raster)
``class_share``            double      share of the field's pixels of its class (fields separated
                                       on a boundary band, which may hold other crops' pixels; a
                                       parcel's majority class share of its observed area)
``observed``, ``share:*``  double      a parcel's observed share of its area, and each class's
                                       share of the observed area (``polygonize --parcels``)
``district``               string      district of largest overlap (with districts)
``determination:method``   string      ``auto-imagery`` (fiboa: made from imagery by ML)
``determination:datetime`` timestamp   the imagery's last date when given (``observed``), else null
``determination:details``  string      how the fields were made (geoseg version, mask, model)
``run_id``, ``model_id``   string      with a run, and a model
=========================  ==========  =====================================================

In GeoParquet the file's ``collection`` metadata lists the schemas the collection implements
(:data:`SCHEMAS`) and declares geoseg's own columns in ``schemas:custom``, so that
``fiboa validate`` checks them too; the required columns are written NOT NULL as the
validator expects. :func:`compatible_fields` reads fields files of geoseg 0.1 (``crop``,
``perimeter_m``) under the new names.
"""

from __future__ import annotations

import hashlib
import io
import json
from typing import TYPE_CHECKING, Any

import numpy as np

from geoseg.classes import ClassTable

if TYPE_CHECKING:  # pragma: no cover
    import geopandas as gpd
    import pandas as pd
    import pyarrow as pa

__all__ = [
    "FIBOA_VERSION",
    "SCHEMAS",
    "DETERMINATION_METHOD",
    "OLD_NAMES",
    "code_list_csv",
    "code_list_id",
    "is_fiboa",
    "fiboa_table",
    "compatible_fields",
]

#: The fiboa version geoseg writes (the one fiboa-cli 0.21 validates).
FIBOA_VERSION = "0.3.0"
#: The schemas a geoseg fields collection implements: Vecorel core, fiboa core, the crop extension.
SCHEMAS = (
    "https://vecorel.org/specification/v0.1.0/schema.yaml",
    f"https://fiboa.org/specification/v{FIBOA_VERSION}/schema.yaml",
    "https://fiboa.org/crop-extension/v0.2.0/schema.yaml",
)
#: The Vecorel schema definition language of :data:`SCHEMAS` (and of ``schemas:custom``).
SDL = "https://vecorel.org/sdl/v0.2.0/schema.json"
#: fiboa's ``determination:method`` for boundaries made from imagery by computer vision or ML.
DETERMINATION_METHOD = "auto-imagery"
#: Columns that must hold a value in every row (Vecorel core and the crop extension): NOT NULL in Parquet.
REQUIRED = ("id", "collection", "geometry", "crop:code", "crop:code_list")
#: Optional in Vecorel but present in every geoseg row, declared required in ``schemas:custom``: GeoParquet
#: wants the bbox covering column as NOT NULL as the geometry it covers, and fiboa-cli wants a NOT NULL column
#: to be a required one.
ALSO_REQUIRED = ("bbox",)
#: geoseg's own columns and their Vecorel SDL types, declared in the collection's ``schemas:custom``.
CUSTOM_PROPERTIES: dict[str, dict[str, Any]] = {
    "field_id": {"type": "int64", "minimum": 0},
    "class_id": {"type": "int32", "minimum": 0, "maximum": 254},
    "area_ha": {"type": "double", "exclusiveMinimum": 0},
    "confidence": {"type": "double", "minimum": 0, "maximum": 1},
    "class_share": {"type": "double", "exclusiveMinimum": 0, "maximum": 1},
    "observed": {"type": "double", "minimum": 0, "maximum": 1},
    "district": {"type": "string"},
    "run_id": {"type": "string"},
    "model_id": {"type": "string"},
}
#: The type of a parcel's ``share:<class>`` columns (one per class of the table).
SHARE_PROPERTY = {"type": "double", "minimum": 0, "maximum": 1}
#: Column names of geoseg 0.1's fields files and their names now.
OLD_NAMES = {"crop": "crop:name", "perimeter_m": "metrics:perimeter"}


def code_list_csv(table: ClassTable | None, class_ids: Any = ()) -> str:
    """The class table as the crop extension's code list: ``original_code,original_name`` rows.

    Without a table, the classes found (``class_ids``) are listed as ``class_<id>``.

    Examples
    --------
    >>> from geoseg.classes import default_classes
    >>> code_list_csv(default_classes()).splitlines()[:2]
    ['original_code,original_name', '0,background']
    """
    pairs = ([(c.id, c.name) for c in table] if table is not None
             else [(int(i), f"class_{int(i)}") for i in sorted({int(i) for i in class_ids})])
    rows = ["original_code,original_name"] + [f"{i},{_csv_cell(n)}" for i, n in pairs]
    return "\n".join(rows) + "\n"


def _csv_cell(text: str) -> str:
    return '"' + text.replace('"', '""') + '"' if any(ch in text for ch in ',"\n') else text


def code_list_id(table: ClassTable | None, class_ids: Any = ()) -> str:
    """A stable identifier of a class table for ``crop:code_list``: ``urn:geoseg:classes:sha256:<16 hex>``.

    The digest is that of :func:`code_list_csv`, so the same ids and names give the same
    identifier on every machine and run, and any change of the table gives another (colours
    and the crop flag do not count: they do not change what a code means).

    Examples
    --------
    >>> from geoseg.classes import default_classes
    >>> code_list_id(default_classes()).startswith("urn:geoseg:classes:sha256:")
    True
    """
    digest = hashlib.sha256(code_list_csv(table, class_ids).encode("utf-8")).hexdigest()[:16]
    return f"urn:geoseg:classes:sha256:{digest}"


def is_fiboa(gdf: Any) -> bool:
    """Whether a frame has fiboa's core and crop columns (so :func:`fiboa_table` can encode it)."""
    return all(c in gdf.columns for c in REQUIRED)


def collection_metadata(gdf: "gpd.GeoDataFrame") -> dict[str, Any]:
    """The GeoParquet ``collection`` metadata: the schemas per collection, geoseg's columns declared."""
    names = sorted({str(c) for c in gdf["collection"].unique()}) or ["geoseg"]
    custom = {k: v for k, v in CUSTOM_PROPERTIES.items() if k in gdf.columns}
    custom.update({c: dict(SHARE_PROPERTY) for c in gdf.columns if isinstance(c, str) and c.startswith("share:")})
    return {"schemas": {n: list(SCHEMAS) for n in names},
            "schemas:custom": {"$schema": SDL, "required": list(ALSO_REQUIRED), "properties": custom}}


def fiboa_table(gdf: "gpd.GeoDataFrame") -> "pa.Table":
    """``gdf`` as a GeoParquet 1.1 table (bbox covering column) with fiboa's metadata and NOT NULLs.

    geopandas encodes the geometry and the ``geo`` metadata; text columns are then stored as
    Arrow ``string`` (fiboa-cli takes ``large_string`` for another type; empty text columns,
    typed null by pandas, too), the columns of
    :data:`REQUIRED` and the ``bbox`` covering column declared NOT NULL (the others stay
    nullable) and the collection metadata added.

    Raises
    ------
    ValueError
        A required column holds a null (pyarrow's cast refuses it).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    gdf.to_parquet(buf, index=False, write_covering_bbox=True, schema_version="1.1.0")
    table = pq.read_table(pa.BufferReader(buf.getvalue()))
    meta = dict(table.schema.metadata or {})
    meta[b"collection"] = json.dumps(collection_metadata(gdf), separators=(",", ":")).encode("utf-8")
    # fiboa's "string"; text columns of no rows come out of pandas as Arrow nulls
    fields = [f.with_type(pa.string()) if pa.types.is_large_string(f.type) or pa.types.is_null(f.type) else f
              for f in table.schema]
    fields = [f.with_nullable(f.name not in REQUIRED + ALSO_REQUIRED) for f in fields]
    return table.cast(pa.schema(fields, metadata=meta))


def compatible_fields(gdf: "pd.DataFrame") -> "pd.DataFrame":
    """A fields table of geoseg 0.1 (``crop``, ``perimeter_m``) under today's names; others unchanged.

    Examples
    --------
    >>> import pandas as pd
    >>> list(compatible_fields(pd.DataFrame({"crop": ["rice"], "perimeter_m": [400.0]})).columns)
    ['crop:name', 'metrics:perimeter']
    """
    rename = {old: new for old, new in OLD_NAMES.items() if old in gdf.columns and new not in gdf.columns}
    return gdf.rename(columns=rename) if rename else gdf


def determination_column(observed: Any, n: int) -> "pd.Series":
    """``determination:datetime`` for ``n`` fields: ``observed`` in UTC (ms), or nulls."""
    import pandas as pd

    if observed is None:
        return pd.Series(np.full(n, None), dtype="datetime64[ms, UTC]")
    ts = pd.Timestamp(observed)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return pd.Series([ts] * n, dtype="datetime64[ms, UTC]")
