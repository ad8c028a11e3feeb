"""YAML for files people write by hand (workflows, class files): safe, and strict where YAML is lax.

``yaml.safe_load`` builds no Python objects, but it still expands aliases (a "billion
laughs" file of a few hundred bytes grows to gigabytes), recurses once per nesting level
(a file 20,000 brackets deep ends in ``RecursionError``) and lets a repeated key silently
replace the first. :func:`load_yaml` refuses all three with a :class:`yaml.YAMLError`
that carries the line and column, so callers report them like any syntax error.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError

__all__ = ["MAX_DEPTH", "load_yaml", "yaml_problem"]

#: Deepest nesting of mappings and lists accepted; geoseg's files need fewer than 10 levels.
MAX_DEPTH = 64


class _StrictLoader(yaml.SafeLoader):
    """``SafeLoader`` without aliases, deep nesting or repeated keys."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise ComposerError(
                None, None,
                f"found the alias *{event.anchor}, and aliases are not accepted (a few of them can expand to "
                f"gigabytes); write the value out in full", event.start_mark,
            )
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            first: dict[Any, Any] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    earlier = first.get(key)
                except TypeError:  # an unhashable key: SafeConstructor says so below
                    continue
                if earlier is not None:
                    raise ConstructorError(
                        None, None,
                        f"the key {key!r} appears twice (first at line {earlier.line + 1}); keep one of them",
                        key_node.start_mark,
                    )
                first[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str) -> Any:
    """Parse one YAML document as ``yaml.safe_load`` does, refusing aliases, deep nesting and repeated keys.

    Raises
    ------
    yaml.YAMLError
        A syntax error, or one of the refusals; ``problem`` says which and ``problem_mark``
        where.

    Examples
    --------
    >>> load_yaml("tile: 256\\nscenes: [a.tif]")
    {'tile': 256, 'scenes': ['a.tif']}
    >>> try:
    ...     load_yaml("tile: 256\\ntile: 512")
    ... except yaml.YAMLError as e:
    ...     print(e.problem, "- line", e.problem_mark.line + 1)
    the key 'tile' appears twice (first at line 1); keep one of them - line 2
    """
    loader = _StrictLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def yaml_problem(e: yaml.YAMLError) -> str:
    """One line for a YAML error: what is wrong and, when known, where (``... at line 3, column 1``).

    >>> try:
    ...     load_yaml("a: [1,")
    ... except yaml.YAMLError as e:
    ...     yaml_problem(e)
    "expected the node content, but found '<stream end>' at line 1, column 7"
    """
    mark = getattr(e, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = getattr(e, "problem", None) or (str(e).splitlines() or [type(e).__name__])[0]
    return f"{problem}{where}"
