"""``yaml.safe_load`` for the toolkit's configuration files, with a nesting limit, and
:func:`load_file`, the one way a configuration YAML file is read.

PyYAML builds the document recursively, so a file nested a few thousand levels deep
(``[[[[...`` in a few KB) ends in a ``RecursionError`` with a long traceback. A streaming
pass over the parser events (no recursion) refuses such a file first, in one line that
names it. :func:`safe_load` leaves syntax errors to the caller (``yaml.YAMLError``);
:func:`load_file` also refuses a missing, oversized or non-UTF-8 file and turns a syntax
error into one line with the file, line and column (a :class:`UserError`: exit 2).

>>> safe_load("a: [1, 2]", source="x.yaml")
{'a': [1, 2]}
>>> safe_load("[" * 500 + "]" * 500, source="x.yaml")
Traceback (most recent call last):
...
S1.errors.UserError: x.yaml: line 1, column 65: nesting deeper than 64 levels -- a configuration file is a few levels deep: check that this is the right file
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from S1.errors import UserError

#: deeper than any configuration file of the toolkit, far below Python's recursion limit
MAX_DEPTH = 64
#: larger than any configuration file of the toolkit (the biggest, a lexicon, is a few tens of KB)
MAX_BYTES = 1 << 20


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


def load_file(path: Path | str, *, what: str = "YAML file", fix: str = "fix the file",
              max_bytes: int = MAX_BYTES) -> Any:
    r"""The data in the YAML file ``path`` (``what`` names it in messages, ``fix`` says what to
    do). A missing or unreadable file, one over ``max_bytes``, one that is not UTF-8 text,
    nesting deeper than :data:`MAX_DEPTH` and a syntax error are each a :class:`UserError`
    in one line that names the file (and the line and column where there is one).

    >>> import tempfile
    >>> bad = Path(tempfile.mkdtemp()) / "bad.yaml"
    >>> _ = bad.write_text("a: [1, 2\nb: 3\n")
    >>> load_file(bad, what="prompt file", fix="see S3/prompts/default.yaml")
    Traceback (most recent call last):
    ...
    S1.errors.UserError: prompt file .../bad.yaml: line 2, column 2: not valid YAML (expected ',' or ']', but got ':') -- see S3/prompts/default.yaml
    """
    p = Path(path)
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        raise UserError(f"{what} {p} does not exist", fix) from None
    except OSError as exc:
        raise UserError(f"cannot read {what} {p} ({exc.strerror or exc})", fix) from None
    if not p.is_file():
        raise UserError(f"{what} {p} is not a file", fix)
    if size > max_bytes:
        raise UserError(f"{what} {p} is {size:,} bytes, more than the {max_bytes:,} a configuration file may have",
                        "check that this is the right file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{what} {p} is not UTF-8 text", "check that this is the right file") from None
    except OSError as exc:
        raise UserError(f"cannot read {what} {p} ({exc.strerror or exc})", fix) from None
    try:
        return safe_load(text, source=f"{what} {p}")
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f": line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{what} {p}{where}: not valid YAML ({problem})", fix) from None


__all__ = ["MAX_BYTES", "MAX_DEPTH", "check_depth", "load_file", "safe_load"]
