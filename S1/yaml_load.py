"""``yaml.safe_load`` for the toolkit's configuration files, with a nesting limit.

PyYAML builds the document recursively, so a file nested a few thousand levels deep
(``[[[[...`` in a few KB) ends in a ``RecursionError`` with a long traceback. A streaming
pass over the parser events (no recursion) refuses such a file first, in one line that
names it. Syntax errors are left to the caller (``yaml.YAMLError``, as before).

>>> safe_load("a: [1, 2]", source="x.yaml")
{'a': [1, 2]}
>>> safe_load("[" * 500 + "]" * 500, source="x.yaml")
Traceback (most recent call last):
...
S1.errors.UserError: x.yaml: line 1, column 65: nesting deeper than 64 levels -- a configuration file is a few levels deep: check that this is the right file
"""

from __future__ import annotations

from typing import Any

import yaml

from S1.errors import UserError

#: deeper than any configuration file of the toolkit, far below Python's recursion limit
MAX_DEPTH = 64


def check_depth(text: str, *, source: str, max_depth: int = MAX_DEPTH) -> None:
    """Raise a :class:`UserError` naming ``source`` when ``text`` nests deeper than ``max_depth``."""
    depth = 0
    for ev in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(ev, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > max_depth:
                m = ev.start_mark
                raise UserError(f"{source}: line {m.line + 1}, column {m.column + 1}: nesting deeper than "
                                f"{max_depth} levels",
                                "a configuration file is a few levels deep: check that this is the right file")
        elif isinstance(ev, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


def safe_load(text: str, *, source: str) -> Any:
    """``yaml.safe_load(text)`` after :func:`check_depth` (syntax errors raise ``yaml.YAMLError``)."""
    check_depth(text, source=source)
    try:
        return yaml.safe_load(text)
    except RecursionError:   # a backstop: check_depth should have refused it
        raise UserError(f"{source}: nested too deeply to read", "check that this is the right file") from None


__all__ = ["MAX_DEPTH", "check_depth", "safe_load"]
