"""The class file convention: ids 0..K-1, unique names, hex colours, 255 reserved."""

from __future__ import annotations

import pytest

from geoseg.classes import NODATA, ClassTable, default_classes, load_classes
from geoseg.errors import ClassFileError


def test_default_classes_follow_the_convention():
    c = default_classes()
    assert c.names == ["background", "rice", "wheat", "sugarcane", "cotton", "maize", "fallow"]
    assert [k.id for k in c] == list(range(7))
    assert not c[0].crop and all(k.crop for k in list(c)[1:])
    cmap = c.colormap()
    assert cmap[NODATA] == (0, 0, 0, 0) and cmap[1] == (26, 152, 80, 255)
    assert c.id_of("wheat") == 2


def test_round_trip_through_yaml(tmp_path):  # type: ignore[no-untyped-def]
    p = tmp_path / "classes.yaml"
    p.write_text(default_classes().to_yaml())
    assert load_classes(p) == ClassTable(default_classes().classes, str(p))


@pytest.mark.parametrize(
    "text, message",
    [
        ("classes: [{id: 1, name: a, color: '#000000'}]", r"class #0 \('a'\) has id 1, expected 0"),
        ("classes: [{id: 0, name: a, color: red}]", r"colour 'red', expected '#rrggbb'"),
        ("classes: [{id: 0, name: a}]", r"class #0 lacks \['color'\]"),
        ("classes: [{id: 0, name: a, color: '#000000', weight: 2}]", r"unknown keys \['weight'\]"),
        ("classes: [{id: 0, name: a, color: '#000000'}, {id: 1, name: a, color: '#000000'}]", r"repeated: \['a'\]"),
        ("classes: []", r"the class table is empty"),
        ("classes: {a: 1}", r"expected a mapping with a 'classes' list"),
        ("classes: [{id: 0, name: a, color: '#000000'", r"not valid YAML"),
    ],
)
def test_bad_class_files_say_what_is_wrong(tmp_path, text, message):  # type: ignore[no-untyped-def]
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ClassFileError, match=message) as e:
        load_classes(p)
    assert str(p) in str(e.value)


def test_missing_class_file(tmp_path):  # type: ignore[no-untyped-def]
    with pytest.raises(ClassFileError, match=r"none\.yaml: class file not found"):
        load_classes(tmp_path / "none.yaml")


def test_unknown_class_name_lists_the_choices():
    with pytest.raises(KeyError, match=r"no class named 'teak'.*'rice'"):
        default_classes().id_of("teak")


def test_yaml_tags_are_not_executed(tmp_path):  # type: ignore[no-untyped-def]
    p = tmp_path / "evil.yaml"
    p.write_text("classes: !!python/object/apply:os.system ['echo pwned']")
    with pytest.raises(ClassFileError, match="not valid YAML"):
        load_classes(p)
