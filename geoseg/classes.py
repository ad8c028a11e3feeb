"""The class file: an ordered table of classes with ``id``, ``name`` and ``color``.

Convention (shared by masks, models and runs): ids are ``0..K-1`` in order, names are
unique, colours are ``#rrggbb``; the value 255 is reserved for nodata in every mask.
A class may be marked ``crop: false`` (background, water, built-up ...) so that
field polygons and area tables can leave it out.

Example file::

    classes:
      - {id: 0, name: background, color: "#c8c8c8", crop: false}
      - {id: 1, name: rice, color: "#1f9e89"}
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from geoseg.errors import ClassFileError
from geoseg.strict_yaml import load_yaml, yaml_problem

__all__ = [
    "crop_names",
    "unknown_classes",
"CropClass", "ClassTable", "NODATA", "load_classes", "default_classes"]

#: The mask value that means "no data" in every geoseg mask.
NODATA = 255

_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")


@dataclass(frozen=True, slots=True)
class CropClass:
    """One class of the table."""

    id: int
    name: str
    color: str
    crop: bool = True

    @property
    def rgb(self) -> tuple[int, int, int]:
        """The colour as an ``(r, g, b)`` triple of 0..255 ints."""
        c = self.color.lstrip("#")
        return (int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16))


@dataclass(frozen=True, slots=True)
class ClassTable:
    """An ordered, validated tuple of :class:`CropClass` (ids ``0..K-1``)."""

    classes: tuple[CropClass, ...]
    source: str = field(default="<memory>", compare=False)

    def __post_init__(self) -> None:
        if not self.classes:
            raise ClassFileError(f"{self.source}: the class table is empty; list at least one class")
        if len(self.classes) > NODATA:
            raise ClassFileError(
                f"{self.source}: {len(self.classes)} classes found, at most {NODATA} fit in a uint8 "
                f"mask (255 is nodata); merge some classes"
            )
        for i, c in enumerate(self.classes):
            if c.id != i:
                raise ClassFileError(
                    f"{self.source}: class #{i} ({c.name!r}) has id {c.id}, expected {i}; "
                    f"ids must run 0..K-1 in file order"
                )
            if not _HEX.match(c.color):
                raise ClassFileError(
                    f"{self.source}: class {c.name!r} has colour {c.color!r}, expected '#rrggbb' "
                    f"(e.g. '#1f9e89')"
                )
        names = [c.name for c in self.classes]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ClassFileError(f"{self.source}: class names must be unique, repeated: {dupes}")

    def __len__(self) -> int:
        return len(self.classes)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.classes)

    def __getitem__(self, i: int) -> CropClass:
        return self.classes[i]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def no_field_ids(self) -> tuple[int, ...]:
        """The ids of the classes that make no field (``crop: false``, e.g. background)."""
        return tuple(c.id for c in self.classes if not c.crop)

    def id_of(self, name: str) -> int:
        """Return the id of the class called ``name``.

        Raises
        ------
        KeyError
            Naming the classes there are.
        """
        for c in self.classes:
            if c.name == name:
                return c.id
        raise KeyError(f"no class named {name!r} in {self.source}; the classes are {self.names}")

    def colormap(self) -> dict[int, tuple[int, int, int, int]]:
        """A GDAL colour table: class colours, nodata (255) transparent."""
        cmap = {c.id: (*c.rgb, 255) for c in self.classes}
        cmap[NODATA] = (0, 0, 0, 0)
        return cmap

    def to_dict(self) -> dict[str, Any]:
        return {
            "classes": [
                {"id": c.id, "name": c.name, "color": c.color, **({} if c.crop else {"crop": False})}
                for c in self.classes
            ]
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)

    @classmethod
    def from_dict(cls, data: Any, source: str = "<memory>") -> "ClassTable":
        """Build a table from parsed YAML/JSON (``{"classes": [...]}`` or a bare list)."""
        items = data.get("classes") if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise ClassFileError(
                f"{source}: expected a mapping with a 'classes' list (or a list of classes), "
                f"found {type(data).__name__}; see the class-file example in the README"
            )
        out = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise ClassFileError(f"{source}: class #{i} is {item!r}, expected a mapping with id, name, color")
            missing = [k for k in ("id", "name", "color") if k not in item]
            if missing:
                raise ClassFileError(f"{source}: class #{i} lacks {missing}; each class needs id, name and color")
            unknown = sorted(set(item) - {"id", "name", "color", "crop"})
            if unknown:
                raise ClassFileError(
                    f"{source}: class #{i} has unknown keys {unknown}; allowed: id, name, color, crop"
                )
            if not isinstance(item["id"], int) or isinstance(item["id"], bool):
                raise ClassFileError(f"{source}: class #{i} id is {item['id']!r}, expected an int")
            crop = item.get("crop", True)
            if not isinstance(crop, bool):
                raise ClassFileError(f"{source}: class #{i} 'crop' is {crop!r}, expected true or false")
            out.append(CropClass(int(item["id"]), str(item["name"]), str(item["color"]), crop))
        return cls(tuple(out), source)


def load_classes(path: str | os.PathLike[str]) -> ClassTable:
    """Read and validate a class file (YAML, read with :func:`geoseg.strict_yaml.load_yaml`).

    Raises
    ------
    ClassFileError
        When the file is missing, is not YAML, or breaks the convention.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ClassFileError(f"{p}: class file not found; pass an existing YAML class file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ClassFileError(f"{p}: cannot read the class file ({e}); expected a UTF-8 YAML file") from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as e:
        raise ClassFileError(f"{p}: not valid YAML ({yaml_problem(e)}); fix the syntax") from None
    return ClassTable.from_dict(data, str(p))


def default_classes() -> ClassTable:
    """The crop classes the synthetic region uses (background, rice, wheat, ...)."""
    text = resources.files("geoseg.data").joinpath("classes.yaml").read_text(encoding="utf-8")
    return ClassTable.from_dict(yaml.safe_load(text), "geoseg/data/classes.yaml")


def crop_names(class_ids: np.ndarray, table: ClassTable | None) -> np.ndarray:
    """Class names for ids (``class_<id>`` for ids the table lacks)."""
    names = {c.id: c.name for c in table} if table is not None else {}
    uniq, inv = np.unique(np.asarray(class_ids, np.int64), return_inverse=True)
    lookup = np.array([names.get(int(u), f"class_{int(u)}") for u in uniq], dtype=object)
    return lookup[inv] if len(uniq) else np.zeros(0, dtype=object)


def unknown_classes(class_ids: np.ndarray, area_m2: np.ndarray, table: ClassTable) -> str | None:
    """The class values (with their hectares) that ``table`` lacks, for a message; None when all are known.

    Negative ids mean "no class" and are ignored; at most five values are listed.

    >>> from geoseg.classes import default_classes
    >>> unknown_classes(np.array([1, 9, 9, 12, -1]), np.array([100.0, 50, 50, 100, 7]), default_classes())
    '9 (0.01 ha), 12 (0.01 ha)'
    """
    cid = np.asarray(class_ids)
    extra = np.setdiff1d(np.unique(cid[cid >= 0]), [c.id for c in table])
    if not extra.size:
        return None
    ha = [float(area_m2[cid == v].sum()) / 1e4 for v in extra[:5]]
    more = f" and {extra.size - 5} more" if extra.size > 5 else ""
    return ", ".join(f"{int(v)} ({h:.2f} ha)" for v, h in zip(extra[:5], ha)) + more
