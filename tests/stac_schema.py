"""Validate a STAC item against the official JSON schemas vendored in tests/data/stac/, offline.

Every schema is registered under its ``$id``; a reference to anything else fails (no retrieval),
so a validation never reaches the network. See tests/data/README.md for their sources.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from jsonschema import Draft7Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

__all__ = ["STAC_ITEM_SCHEMA", "stac_errors"]

SCHEMAS = Path(__file__).parent / "data" / "stac"
#: The ``$id`` of the STAC 1.0.0 item schema.
STAC_ITEM_SCHEMA = "https://schemas.stacspec.org/v1.0.0/item-spec/json-schema/item.json"


@functools.cache
def _registry() -> Registry:
    resources = []
    for f in sorted(SCHEMAS.rglob("*.json")):
        schema = json.loads(f.read_text(encoding="utf-8"))
        resources.append((schema["$id"].rstrip("#"), Resource.from_contents(schema, default_specification=DRAFT7)))
    return Registry().with_resources(resources)


def stac_errors(item: dict[str, Any]) -> list[str]:
    """The schema errors of ``item``: the core item schema's and each of its ``stac_extensions``'."""
    errors = []
    for url in [STAC_ITEM_SCHEMA, *item.get("stac_extensions", [])]:
        validator = Draft7Validator({"$ref": url}, registry=_registry())
        errors += [f"{url}: {e.json_path}: {e.message}" for e in validator.iter_errors(item)]
    return errors
