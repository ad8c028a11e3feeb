"""Run fiboa-cli's validator on GeoParquet files without a network.

(GeoJSON files are not covered: for them fiboa-cli 0.21 builds a JSON schema in code that
refers to geojson.org's schemas, which only a network reaches.)

Usage (with the Python that has fiboa-cli 0.21 installed, not geoseg's)::

    python tests/data/fiboa/validate_offline.py fields.parquet [more files]

Prints ``<file>: VALID`` or ``<file>: INVALID`` and the validator's errors, warnings and notes;
exits 1 when a file is invalid. The schemas come from the folders beside this file (copies
of the published ones, each with its licence; see README.md there):

- fiboa, Vecorel and crop-extension schemas through the validator's own schema map (what
  ``fiboa validate -s URL,FILE`` passes);
- the GeoParquet 1.1.0 JSON schema through the loader's cache (``vecorel_cli.vecorel.util
  .file_cache``): fiboa-cli 0.21 fetches it from geoparquet.org and offers no option to
  point it elsewhere, so the script puts the local copy in that cache before validating.
  That schema refers to the PROJJSON 0.7 schema by URL; the script bundles the local copy
  into it (under ``definitions``, keeping its ``$id``), the standard JSON Schema way to
  resolve such a reference without fetching it.

fiboa-cli is imported inside :func:`main` only, so that geoseg's test run (which imports
every module for its doctests) does not need it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: Schema URL -> local copy, for the validator's schema map.
SCHEMA_MAP = {
    "https://vecorel.org/specification/v0.1.0/schema.yaml": HERE / "vecorel-specification-v0.1.0" / "schema.yaml",
    "https://fiboa.org/specification/v0.3.0/schema.yaml": HERE / "fiboa-specification-v0.3.0" / "schema.yaml",
    "https://fiboa.org/crop-extension/v0.2.0/schema.yaml": HERE / "fiboa-crop-extension-v0.2.0" / "schema.yaml",
}
#: The GeoParquet metadata schema, which the validator loads by URL.
GEOPARQUET_SCHEMA = ("https://geoparquet.org/releases/v1.1.0/schema.json",
                     HERE / "geoparquet-v1.1.0" / "schema.json")
#: The PROJJSON schema the GeoParquet schema refers to (by its ``$id``).
PROJJSON_SCHEMA = HERE / "projjson-v0.7" / "projjson.schema.json"


def geoparquet_schema() -> dict:
    """The local GeoParquet schema with the local PROJJSON schema bundled in."""
    schema = json.loads(GEOPARQUET_SCHEMA[1].read_text(encoding="utf-8"))
    schema.setdefault("definitions", {})["projjson"] = json.loads(PROJJSON_SCHEMA.read_text(encoding="utf-8"))
    return schema


def main(files: list[str]) -> int:
    from fiboa_cli.validate import ValidateData
    from vecorel_cli.vecorel import util

    util.file_cache[GEOPARQUET_SCHEMA[0]] = geoparquet_schema()
    invalid = 0
    for f in files:
        result = ValidateData().validate(f, num=None, schema_map=SCHEMA_MAP)
        ok = result.is_valid()
        invalid += not ok
        print(f"{f}: {'VALID' if ok else 'INVALID'}")
        for kind, items in (("error", result.errors), ("warning", result.warnings), ("note", result.infos)):
            for item in items:
                print(f"  {kind}: {item}")
    return 1 if invalid else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
