"""Hardened YAML reading for rule files: plain data only, with line numbers.

Rule files are data, never code. This module turns YAML text into a tree of
:class:`YNode` (plain Python values plus the line/column each came from) and
rejects, with one line naming the place and a fix:

- files larger than :data:`MAX_BYTES`, and more than one document;
- YAML tags of any kind (``!!python/object/apply:os.system`` and friends);
- anchors and aliases (``&a`` / ``*a``: the "billion laughs" bomb needs them);
- nesting deeper than :data:`MAX_DEPTH` collections;
- duplicate keys and non-string keys.

How: a streaming pass over the parser *events* (iterative, so hostile nesting
cannot exhaust the stack) checks tags, anchors, aliases and depth before the
composer (recursive) ever sees the text; then ``yaml.SafeLoader`` composes the
node tree, whose marks give the line numbers. ``yaml.load`` with an unsafe
loader is never used.

>>> tree = parse_yaml("entry:\\n  all:\\n    - {col: rsi14, op: '<', value: 30}\\n")
>>> cond = tree.get("entry").get("all").items[0]
>>> cond.get("value").value, cond.get("value").line
(30, 3)
>>> parse_yaml("a: !!python/object/apply:os.system ['echo hi']")
Traceback (most recent call last):
...
S1.errors.UserError: <string>: line 1, column 4: YAML tags such as '!!python/object/apply:os.system' are not allowed in a rule file -- remove the tag: rule files hold plain numbers, names and lists
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from S1.errors import UserError

#: Largest rule file accepted (bytes). Real rule files are a few KB.
MAX_BYTES = 64 * 1024
#: Deepest nesting of YAML mappings/sequences accepted.
MAX_DEPTH = 40

_STD_SCALARS = {
    "tag:yaml.org,2002:str", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool", "tag:yaml.org,2002:null", "tag:yaml.org,2002:timestamp",
}


@dataclass(frozen=True, eq=False)
class YNode:
    """A YAML value with its position. ``kind`` is ``map``, ``seq`` or ``scalar``.

    ``value`` is the plain scalar (str, int, float, bool, None, date) for scalars;
    ``items`` the children of a sequence; ``entries`` the ``(key, YNode)`` pairs of a
    mapping (keys are strings, in file order, each key once). ``line``/``column``
    are 1-based.
    """

    kind: str
    line: int
    column: int
    value: Any = None
    items: tuple[YNode, ...] = ()
    entries: tuple[tuple[str, YNode], ...] = ()
    key_lines: tuple[int, ...] = field(default=(), repr=False)

    # -- helpers for validators --------------------------------------------------------
    def keys(self) -> list[str]:
        return [k for k, _ in self.entries]

    def get(self, key: str, default: YNode | None = None) -> YNode | None:
        for k, v in self.entries:
            if k == key:
                return v
        return default

    def key_line(self, key: str) -> int:
        for (k, _), line in zip(self.entries, self.key_lines):
            if k == key:
                return line
        return self.line

    @property
    def where(self) -> str:
        return f"line {self.line}, column {self.column}"

    def to_python(self) -> Any:
        """Plain Python data (dicts, lists, scalars) without positions."""
        if self.kind == "map":
            return {k: v.to_python() for k, v in self.entries}
        if self.kind == "seq":
            return [v.to_python() for v in self.items]
        return self.value

    def describe(self, *, content: bool = True) -> str:
        """What this node is, for error messages: 'a list', 'the string \"abc\"' ...;
        ``content=False`` names the kind only (for text that may not be a rule file at all)."""
        if not content and self.kind == "scalar":
            v = self.value
            if isinstance(v, str):
                return f"a text of {len(v):,} characters"
            if v is None:
                return "nothing (null)"
            return "a boolean" if isinstance(v, bool) else "a number" if isinstance(v, (int, float)) else "a date"
        if self.kind == "map":
            return "a mapping"
        if self.kind == "seq":
            return "a list"
        v = self.value
        if v is None:
            return "nothing (null)"
        if isinstance(v, bool):
            return f"the boolean {str(v).lower()}"
        if isinstance(v, (int, float)):
            return f"the number {v!r}"
        if isinstance(v, (_dt.date, _dt.datetime)):
            return f"the date {v}"
        text = str(v)
        return f"the string {text[:60]!r}" + ("..." if len(text) > 60 else "")


def _err(source: str, line: int, column: int, problem: str, fix: str) -> UserError:
    return UserError(f"{source}: line {line}, column {column}: {problem}", fix)


def _mark(m) -> tuple[int, int]:
    return (m.line + 1, m.column + 1) if m is not None else (0, 0)


def _scan_events(text: str, source: str) -> None:
    """Streaming safety pass: no tags, anchors, aliases, extra documents; bounded depth."""
    depth = 0
    documents = 0
    try:
        for ev in yaml.parse(text, Loader=yaml.SafeLoader):
            line, col = _mark(ev.start_mark)
            if isinstance(ev, yaml.AliasEvent):
                raise _err(source, line, col, f"YAML alias '*{ev.anchor}' is not allowed in a rule file",
                           "write the value out in full (anchors and aliases are rejected: they enable "
                           "'billion laughs' expansion bombs)")
            anchor = getattr(ev, "anchor", None)
            if anchor is not None:
                raise _err(source, line, col, f"YAML anchor '&{anchor}' is not allowed in a rule file",
                           "remove the anchor and write each value out in full")
            tag = getattr(ev, "tag", None)
            if tag is not None:
                tag = tag.replace("tag:yaml.org,2002:", "!!")
                raise _err(source, line, col, f"YAML tags such as {tag!r} are not allowed in a rule file",
                           "remove the tag: rule files hold plain numbers, names and lists")
            if isinstance(ev, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    raise _err(source, line, col, "more than one YAML document ('---') in a rule file",
                               "keep one document per file")
            elif isinstance(ev, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    raise _err(source, line, col, f"nesting deeper than {MAX_DEPTH} levels",
                               "flatten the rule: split deep all/any groups into named rules")
            elif isinstance(ev, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
    except yaml.MarkedYAMLError as exc:
        line, col = _mark(exc.problem_mark or exc.context_mark)
        what = exc.problem or exc.context or "syntax error"
        raise _err(source, line, col, f"invalid YAML ({what})",
                   "fix the syntax; quote operators such as '>' and '<=' (a bare > starts a folded text block)"
                   ) from None
    except yaml.YAMLError as exc:  # e.g. reader errors (control characters)
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{source}: invalid YAML ({first})", "save the file as plain UTF-8 text") from None


def _convert(node: yaml.Node, loader: yaml.SafeLoader, source: str) -> YNode:
    line, col = _mark(node.start_mark)
    if isinstance(node, yaml.ScalarNode):
        if node.tag not in _STD_SCALARS:  # e.g. the merge key '<<' or '=' value
            raise _err(source, line, col, f"unsupported YAML value {node.value!r}",
                       "use plain numbers, names, true/false or lists")
        return YNode("scalar", line, col, value=loader.construct_object(node, deep=True))
    if isinstance(node, yaml.SequenceNode):
        return YNode("seq", line, col, items=tuple(_convert(n, loader, source) for n in node.value))
    if isinstance(node, yaml.MappingNode):
        entries: list[tuple[str, YNode]] = []
        key_lines: list[int] = []
        seen: dict[str, int] = {}
        for knode, vnode in node.value:
            kl, kc = _mark(knode.start_mark)
            if not isinstance(knode, yaml.ScalarNode) or knode.tag != "tag:yaml.org,2002:str":
                shown = knode.value if isinstance(knode, yaml.ScalarNode) else "a collection"
                raise _err(source, kl, kc, f"mapping key {shown!r} is not a name",
                           "keys are plain names such as entry, all, col, op, value")
            key = knode.value
            if key in seen:
                raise _err(source, kl, kc, f"duplicate key {key!r} (first at line {seen[key]})",
                           "keep one of them: YAML would silently drop the first")
            seen[key] = kl
            entries.append((key, _convert(vnode, loader, source)))
            key_lines.append(kl)
        return YNode("map", line, col, entries=tuple(entries), key_lines=tuple(key_lines))
    raise _err(source, line, col, "unsupported YAML node", "use plain mappings, lists and scalars")


def parse_yaml(text: str, *, source: str = "<string>") -> YNode | None:
    """Parse rule-file text into a :class:`YNode` tree (``None`` for an empty document)."""
    if not isinstance(text, str):
        raise UserError(f"{source}: expected YAML text, got {type(text).__name__}", "pass the file's contents")
    if len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise UserError(f"{source}: {len(text):,} characters, more than the {MAX_BYTES:,} bytes a rule file "
                        "may have", "keep rule files small (a few KB); split the strategy into fewer rules")
    _scan_events(text, source)
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        return None if root is None else _convert(root, loader, source)
    except yaml.MarkedYAMLError as exc:
        line, col = _mark(exc.problem_mark or exc.context_mark)
        raise _err(source, line, col, f"invalid YAML ({exc.problem or exc.context})", "fix the syntax") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{source}: invalid YAML ({exc})", "fix the syntax") from None
    finally:
        loader.dispose()


def read_yaml_file(path: Path | str) -> tuple[str, YNode | None]:
    """``(text, tree)`` of a rule file, refusing missing, non-file and oversized paths."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"rule file {path} does not exist",
                        "pass --rules with an existing file, e.g. S4/rules_ta_only.yaml")
    if not path.is_file():
        raise UserError(f"{path} is not a file", "pass --rules with a YAML file such as S4/rules.yaml")
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise UserError(f"rule file {path} is {size:,} bytes, more than the {MAX_BYTES:,} allowed",
                        "rule files are small YAML documents (a few KB); check that you passed the right file")
    with path.open("rb") as fh:
        raw = fh.read(MAX_BYTES + 1)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"rule file {path} is not UTF-8 text (byte {exc.start})",
                        "save it as UTF-8 YAML") from None
    return text, parse_yaml(text, source=str(path))
