"""The validating parser behind :func:`S4.rules.parse_rules` / :func:`S4.rules.load_rules`.

It walks the position-carrying YAML tree of :mod:`S4.yaml_safe` and builds the
frozen model of :mod:`S4.rules`, checking every key, type, name, range and
reference against the closed grammar. Each error is one :class:`S1.errors.UserError`
of the form ``<file>: line L, column C: <problem> -- <fix>``. Strings are only ever
compared with known names (columns, operators, params): nothing is evaluated.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from dataclasses import replace

from S1.errors import UserError
from S4.rule_model import (
    _COND_KEYS,
    _EXPR_HINT,
    _NAME_RE,
    _OP_ALIASES,
    _OPERAND_KEYS,
    _PARAM_KEYS,
    _TOP_KEYS,
    MAX_BARS_AGO,
    MAX_CONDITIONS,
    OPERATORS,
    TRAILING_KINDS,
    Column,
    Condition,
    Group,
    Node,
    Number,
    ParamRef,
    ParamSpec,
    Rule,
    RuleSet,
    available_columns,
    column_allowed,
)
from S4.yaml_safe import YNode


class RuleParser:
    """Validating walk over a :class:`~S4.yaml_safe.YNode` tree (one instance per document)."""

    def __init__(self, source: str, columns: Iterable[str] | None):
        self.source = source
        self.columns = None if columns is None else tuple(dict.fromkeys(str(c) for c in columns))
        self.params: dict[str, ParamSpec] = {}
        self.used: dict[str, list[tuple[str, int]]] = {}
        self.n_conditions = 0

    # -- errors ----------------------------------------------------------------------
    def error(self, node: YNode | None, problem: str, fix: str, line: int | None = None) -> UserError:
        if node is None and line is None:
            return UserError(f"{self.source}: {problem}", fix)
        ln = line if line is not None else node.line
        col = f", column {node.column}" if node is not None and line is None else ""
        return UserError(f"{self.source}: line {ln}{col}: {problem}", fix)

    def unknown_key(self, m: YNode, key: str, allowed: Iterable[str], what: str) -> UserError:
        allowed = list(allowed)
        near = difflib.get_close_matches(key, allowed, n=1)
        hint = f"did you mean {near[0]!r}? " if near else ""
        return self.error(None, f"unknown key {key!r} in {what}", f"{hint}allowed keys: {', '.join(allowed)}",
                          line=m.key_line(key))

    def expect_map(self, node: YNode, what: str, example: str) -> YNode:
        if node.kind != "map":
            raise self.error(node, f"{what} must be a mapping, got {node.describe()}", f"write e.g. {example}")
        return node

    def check_keys(self, m: YNode, allowed: Iterable[str], what: str) -> None:
        allowed = tuple(allowed)
        for k in m.keys():
            if k not in allowed:
                raise self.unknown_key(m, k, allowed, what)

    # -- scalars -----------------------------------------------------------------------
    def string_problem(self, node: YNode, what: str, expected: str) -> UserError:
        text = str(node.value)
        try:
            float(text)
            return self.error(node, f"{what} must be {expected}, got the quoted string {text!r}",
                              f"write {text} without quotes")
        except ValueError:
            pass
        if _EXPR_HINT.search(text):
            return self.error(node, f"{what} must be {expected}, got the text {text[:60]!r}",
                              "expressions are never evaluated: write conditions as mappings "
                              "({col: ..., op: ..., value: ...}) and numbers as plain numbers")
        return self.error(node, f"{what} must be {expected}, got {node.describe()}",
                          "write a plain number (or {param: NAME} where a param is allowed)")

    def number(self, node: YNode, what: str) -> Number:
        v = node.value if node.kind == "scalar" else None
        if node.kind == "scalar" and isinstance(v, (int, float)) and not isinstance(v, bool):
            if not math.isfinite(v):
                raise self.error(node, f"{what} must be a finite number, got {v}", "use an ordinary number")
            return v
        if node.kind == "scalar" and isinstance(v, str):
            raise self.string_problem(node, what, "a number")
        raise self.error(node, f"{what} must be a number, got {node.describe()}",
                         "write a plain number such as 30 or 0.5")

    def name(self, node: YNode, what: str) -> str:
        if node.kind != "scalar" or not isinstance(node.value, str):
            raise self.error(node, f"{what} must be a name, got {node.describe()}",
                             "use letters, digits and underscores, e.g. rsi_buy")
        if not _NAME_RE.match(node.value):
            raise self.error(node, f"{what} {node.value[:60]!r} is not a valid name",
                             "use letters, digits and underscores (not starting with a digit), at most 64")
        return node.value

    def param_ref(self, node: YNode, what: str, *, bar_count: bool = False) -> ParamRef:
        m = self.expect_map(node, what, "{param: rsi_buy}")
        self.check_keys(m, ("param",), f"a param reference ({what})")
        pnode = m.get("param")
        if pnode is None:
            raise self.error(m, f"{what}: a mapping here must be {{param: NAME}}", "e.g. {param: lookback}")
        return self.use_param(pnode, what, bar_count=bar_count)

    def use_param(self, node: YNode, what: str, *, bar_count: bool = False) -> ParamRef:
        name = self.name(node, "param")
        spec = self.params.get(name)
        if spec is None:
            defined = ", ".join(self.params) or "(none: add a params: section)"
            near = difflib.get_close_matches(name, list(self.params), n=1)
            hint = f"did you mean {near[0]!r}? " if near else ""
            raise self.error(node, f"unknown param {name!r} in {what}",
                             f"{hint}define it under params: (defined: {defined})")
        if bar_count:
            bad = spec.type != "int" or min(self._values(spec)) < 0 or max(self._values(spec)) > MAX_BARS_AGO
            if bad:
                raise self.error(node, f"param {name!r} is used as a number of bars ({what}) but is "
                                 f"{'a float' if spec.type != 'int' else 'out of 0..' + str(MAX_BARS_AGO)}",
                                 f"give {name} whole-number values from 0 to {MAX_BARS_AGO} (type: int)")
            self.params[name] = replace(spec, bar_count=True)
        self.used.setdefault(name, []).append((what, node.line))
        return ParamRef(name, node.line)

    @staticmethod
    def _values(spec: ParamSpec) -> list[Number]:
        vals = [spec.value]
        if spec.choices is not None:
            vals += list(spec.choices)
        if spec.low is not None:
            vals += [spec.low, spec.high]
        return vals

    def number_or_param(self, node: YNode, what: str) -> Number | ParamRef:
        if node.kind == "map":
            return self.param_ref(node, what)
        return self.number(node, what)

    def bars(self, node: YNode, what: str) -> int | ParamRef:
        if node.kind == "map":
            return self.param_ref(node, what, bar_count=True)
        v = node.value if node.kind == "scalar" else None
        if isinstance(v, bool) or not isinstance(v, int):
            if isinstance(v, str):
                raise self.string_problem(node, what, "a whole number of bars")
            raise self.error(node, f"{what} must be a whole number of bars, got {node.describe()}",
                             "e.g. bars_ago: 3 or bars_ago: {param: lookback}")
        if not 0 <= v <= MAX_BARS_AGO:
            raise self.error(node, f"{what} must be from 0 to {MAX_BARS_AGO} bars, got {v}",
                             "the value of a column N bars ago needs 0 <= N (the future is never readable)")
        return v

    def column(self, node: YNode, what: str) -> str:
        if node.kind != "scalar" or not isinstance(node.value, str):
            raise self.error(node, f"{what} must be a column name, got {node.describe()}",
                             f"use one of: {', '.join(available_columns(self.columns))}")
        name = node.value
        if column_allowed(name, self.columns):
            return name
        avail = available_columns(self.columns)
        near = difflib.get_close_matches(name, avail, n=1)
        hint = f"did you mean {near[0]!r}? " if near else ""
        extra = "" if self.columns is not None else \
            " (other S2 lengths work too, e.g. sma200 after S2/indicators.py --sma 50,200)"
        if _EXPR_HINT.search(name):
            hint = "expressions are never evaluated; " + hint
        raise self.error(node, f"unknown column {name[:60]!r}",
                         f"{hint}available columns: {', '.join(avail)}{extra}")

    # -- params ------------------------------------------------------------------------
    def parse_params(self, node: YNode) -> None:
        self.expect_map(node, "params", "params: {rsi_buy: {value: 30, low: 20, high: 40}}")
        for (key, pnode), kline in zip(node.entries, node.key_lines):
            name_node = YNode("scalar", kline, pnode.column, value=key)
            name = self.name(name_node, "param name")
            self.params[name] = self.param_spec(name, pnode, kline)

    def param_spec(self, name: str, node: YNode, line: int) -> ParamSpec:
        where = f"param {name}"
        if node.kind == "scalar":
            v = self.number(node, where)
            return ParamSpec(name, "int" if isinstance(v, int) else "float", v, line=line, source=self.source)
        m = self.expect_map(node, where, f"{name}: {{value: 30, low: 20, high: 40, step: 1}}")
        self.check_keys(m, _PARAM_KEYS, where)
        if m.get("value") is None:
            raise self.error(m, f"{where} has no value", f"add the default, e.g. {name}: {{value: 30, low: 20, "
                             "high: 40}", line=line)
        nums = {k: self.number(m.get(k), f"{where} {k}") for k in ("value", "low", "high", "step")
                if m.get(k) is not None}
        choices = None
        cnode = m.get("choices")
        if cnode is not None:
            if cnode.kind != "seq" or not cnode.items:
                raise self.error(cnode, f"{where} choices must be a non-empty list of numbers, got "
                                 f"{cnode.describe()}", "e.g. choices: [0.98, 1.0, 1.02]")
            choices = [self.number(c, f"{where} choice") for c in cnode.items]
            if set(nums) - {"value"}:
                raise self.error(cnode, f"{where} has both choices and a low/high/step range",
                                 "keep either choices: [...] or low/high/step")
            if len(set(choices)) != len(choices):
                raise self.error(cnode, f"{where} lists a choice twice", "list each choice once")
        tnode = m.get("type")
        all_nums = list(nums.values()) + (choices or [])
        if tnode is not None:
            ptype = tnode.value if tnode.kind == "scalar" else None
            if ptype not in ("int", "float"):
                raise self.error(tnode, f"{where} type must be int or float, got {tnode.describe()}",
                                 "write type: int or type: float")
        else:
            ptype = "int" if all(isinstance(v, int) for v in all_nums) else "float"
        if ptype == "int":
            for k, v in list(nums.items()) + [("choice", c) for c in choices or []]:
                if float(v) != int(v):
                    raise self.error(m.get(k) or cnode, f"{where} is an int but its {k} is {v}",
                                     "use whole numbers or type: float")
            conv = int
        else:
            conv = float
        nums = {k: conv(v) for k, v in nums.items()}
        choices = tuple(conv(c) for c in choices) if choices is not None else None
        log_node = m.get("log")
        log = False
        if log_node is not None:
            if log_node.kind != "scalar" or not isinstance(log_node.value, bool):
                raise self.error(log_node, f"{where} log must be true or false, got {log_node.describe()}",
                                 "write log: true for a log-scale search")
            log = log_node.value
        desc_node = m.get("description")
        desc = ""
        if desc_node is not None:
            if desc_node.kind != "scalar" or not isinstance(desc_node.value, str):
                raise self.error(desc_node, f"{where} description must be text", "write description: some text")
            desc = desc_node.value[:500]
        value, low, high, step = nums["value"], nums.get("low"), nums.get("high"), nums.get("step")
        if (low is None) != (high is None):
            raise self.error(m, f"{where} needs both low and high (or neither)",
                             f"e.g. {name}: {{value: {value}, low: ..., high: ...}}", line=line)
        if low is None and (step is not None or log):
            raise self.error(m, f"{where} has step/log but no low/high range", "add low: and high:", line=line)
        if low is not None:
            if not low < high:
                raise self.error(m.get("low"), f"{where} low {low} must be below high {high}",
                                 "swap them or widen the range")
            if not low <= value <= high:
                raise self.error(m.get("value"), f"{where} value {value} is outside its range {low}..{high}",
                                 f"choose a value from {low} to {high} or widen the range")
            if step is not None:
                if step <= 0:
                    raise self.error(m.get("step"), f"{where} step must be positive, got {step}",
                                     "e.g. step: 1")
                k = (high - low) / step
                if abs(k - round(k)) > 1e-9 * max(1.0, abs(k)):
                    raise self.error(m.get("step"), f"{where}: high - low ({high} - {low}) is not a multiple "
                                     f"of step {step}", "adjust high so the range is whole steps")
            if log:
                if low <= 0:
                    raise self.error(m.get("low"), f"{where}: a log-scale range needs low > 0",
                                     "raise low or drop log: true")
                if step is not None and not (ptype == "int" and step == 1):
                    raise self.error(m.get("step"), f"{where}: log: true cannot be combined with a step",
                                     "drop step (or log)")
        if choices is not None and value not in choices:
            raise self.error(m.get("value"), f"{where} value {value} is not one of its choices",
                             "put the default value in the choices list")
        return ParamSpec(name, ptype, value, low, high, step, choices, log, desc, line=line, source=self.source)

    # -- conditions and groups -----------------------------------------------------------
    def node(self, node: YNode, what: str, *, top: bool = False) -> tuple[Node, str | None]:
        """Parse one NODE; returns it and its ``name`` (only allowed at rule level)."""
        m = self.expect_map(node, what, "{col: rsi14, op: '<', value: 30} or {all: [...]}")
        name = None
        name_node = m.get("name")
        if name_node is not None:
            if not top:
                raise self.error(name_node, f"'name' is only allowed on a rule (an item of entry/exit), "
                                 f"not inside {what}", "move the name to the rule, or drop it")
            name = self.name(name_node, "rule name")
        groups = [k for k in ("all", "any", "not") if k in m.keys()]
        if groups:
            extra = [k for k in m.keys() if k not in (*groups, "name")]
            if len(groups) > 1 or extra:
                both = groups + extra
                raise self.error(m, f"{what} mixes {' and '.join(repr(k) for k in both)} in one mapping",
                                 "use one of all:, any:, not: per mapping and nest them, e.g. "
                                 "{all: [{any: [...]}, {...}]}", line=m.key_line(both[1]))
            kind = groups[0]
            body = m.get(kind)
            if kind == "not":
                if body.kind == "seq":
                    raise self.error(body, "'not' takes one condition or group, got a list",
                                     "wrap several in all: or any:, e.g. {not: {any: [...]}}")
                child, _ = self.node(body, f"'not' ({what})")
                return Group("not", (child,), m.line), name
            if body.kind != "seq" or not body.items:
                raise self.error(body, f"'{kind}' needs a non-empty list of conditions, got {body.describe()}",
                                 f"write {kind}: [{{col: ..., op: ..., value: ...}}, ...]")
            children = tuple(self.node(c, f"'{kind}' ({what})")[0] for c in body.items)
            return Group(kind, children, m.line), name
        if "col" not in m.keys():
            keys = [k for k in m.keys() if k != "name"]
            if keys:
                raise self.unknown_key(m, keys[0], ("all", "any", "not", *_COND_KEYS), what)
            raise self.error(m, f"{what} is empty", "write a condition {col: ..., op: ..., value: ...} or a group")
        return self.condition(m, what), name

    def condition(self, m: YNode, what: str) -> Condition:
        self.check_keys(m, _COND_KEYS, "a condition")
        self.n_conditions += 1
        if self.n_conditions > MAX_CONDITIONS:
            raise self.error(m, f"more than {MAX_CONDITIONS} conditions", "simplify the rules")
        left = self.column(m.get("col"), "col")
        bars_ago = self.bars(m.get("bars_ago"), "bars_ago") if m.get("bars_ago") is not None else 0
        op_node = m.get("op")
        if op_node is None:
            raise self.error(m, f"condition on {left!r} has no op",
                             f"add op: one of {', '.join(OPERATORS)}")
        op = op_node.value if op_node.kind == "scalar" else None
        op = _OP_ALIASES.get(op, op) if isinstance(op, str) else op
        if op not in OPERATORS:
            shown = op_node.describe()
            fix = f"use one of {', '.join(repr(o) for o in OPERATORS)} (quote the symbols: op: '>=')"
            if isinstance(op_node.value, str) and not op_node.value.strip():
                shown = "empty: a bare > or | starts a YAML text block"
            if isinstance(op_node.value, str) and op_node.value in ("=", "=>", "=<", "!=", "<>"):
                fix = f"'{op_node.value}' is not an operator here; " + fix + "; for 'not equal' use not: {...}"
            raise self.error(op_node, f"unknown operator ({shown})", fix)
        rights = [k for k in ("value", "param", "other") if k in m.keys()]
        if len(rights) != 1:
            problem = (f"condition on {left!r} has no right-hand side" if not rights else
                       f"condition on {left!r} has several right-hand sides ({', '.join(rights)})")
            raise self.error(m, problem, "give exactly one of value: NUMBER, param: NAME or other: COLUMN")
        key = rights[0]
        rnode = m.get(key)
        right: Number | ParamRef | Column
        if key == "value":
            if rnode.kind == "map":
                raise self.error(rnode, "value: must be a plain number",
                                 "for a param write param: NAME; for a column write other: COLUMN")
            right = self.number(rnode, "value")
        elif key == "param":
            right = self.use_param(rnode, f"the condition on {left}")
        else:
            right = self.operand(rnode)
        return Condition(Column(left, bars_ago), op, right, m.line)

    def operand(self, node: YNode) -> Column:
        if node.kind == "scalar":
            return Column(self.column(node, "other"))
        m = self.expect_map(node, "other", "other: sma50 or other: {col: close, bars_ago: 3}")
        self.check_keys(m, _OPERAND_KEYS, "other")
        if m.get("col") is None:
            raise self.error(m, "other: needs col:", "e.g. other: {col: close, bars_ago: 3}")
        name = self.column(m.get("col"), "other col")
        bars_ago = self.bars(m.get("bars_ago"), "bars_ago") if m.get("bars_ago") is not None else 0
        mul: Number | ParamRef = 1
        if m.get("mul") is not None:
            mul = self.number_or_param(m.get("mul"), "mul")
        return Column(name, bars_ago, mul)

    def side(self, node: YNode, side: str) -> tuple[Rule, ...]:
        if node.kind == "seq":
            if not node.items:
                raise self.error(node, f"{side} is an empty list", f"give at least one rule under {side}:")
            out = []
            for i, item in enumerate(node.items, 1):
                n, name = self.node(item, f"{side} rule {i}", top=True)
                out.append(Rule(name or f"{side}_{i}", side, n))
            return tuple(out)
        n, name = self.node(node, side, top=True)
        return (Rule(name or side, side, n),)

    # -- the document --------------------------------------------------------------------
    def document(self, root: YNode | None) -> RuleSet:
        if root is None:
            raise self.error(None, "the rule file is empty", "write at least entry: (see S4/rules_ta_only.yaml)")
        if root.kind != "map":
            # the kind, never the content: a .env passed by mistake must not be echoed (issue 22)
            raise self.error(root, f"a rule file must be a mapping, got {root.describe(content=False)}",
                             "start with keys such as params:, entry:, exit: (see S4/rules_ta_only.yaml); "
                             "check that you passed a rule file")
        self.check_keys(root, _TOP_KEYS, "the rule file")
        v = root.get("version")
        if v is not None and not (v.kind == "scalar" and v.value == 1 and not isinstance(v.value, bool)):
            raise self.error(v, f"unsupported version ({v.describe()})", "this toolkit reads version: 1")
        desc = ""
        d = root.get("description")
        if d is not None:
            if d.kind != "scalar" or not isinstance(d.value, str):
                raise self.error(d, f"description must be text, got {d.describe()}", "write description: text")
            desc = d.value[:2000]
        if root.get("params") is not None:
            self.parse_params(root.get("params"))
        if root.get("entry") is None and root.get("short_entry") is None:
            raise self.error(root, "no entry: rules", "add entry: {col: ..., op: ..., value: ...} (or short_entry: "
                             "for a short-only file)", line=root.line)
        entry = self.side(root.get("entry"), "entry") if root.get("entry") is not None else ()
        exit_ = self.side(root.get("exit"), "exit") if root.get("exit") is not None else ()
        s_entry = self.side(root.get("short_entry"), "short_entry") if root.get("short_entry") is not None else ()
        s_exit = self.side(root.get("short_exit"), "short_exit") if root.get("short_exit") is not None else ()
        if s_exit and not s_entry:
            raise self.error(root, "short_exit: rules without short_entry: rules",
                             "add short_entry: (the rules that open a short) or remove short_exit:",
                             line=root.key_line("short_exit"))
        trailing = self.trailing(root.get("trailing_stop")) if root.get("trailing_stop") is not None else None
        cooldown: int | ParamRef = 0
        if root.get("cooldown") is not None:
            cooldown = self.bars(root.get("cooldown"), "cooldown")
        seen: dict[str, str] = {}
        for r in entry + exit_ + s_entry + s_exit:
            if r.name in seen:
                raise self.error(None, f"rule name {r.name!r} is used twice ({seen[r.name]} and {r.side})",
                                 "give every entry and exit rule (long and short) its own name")
            seen[r.name] = r.side
        unused = [n for n in self.params if n not in self.used]
        if unused:
            p = self.params[unused[0]]
            raise self.error(None, f"param {unused[0]!r} is never used by a condition", "reference it with "
                             f"param: {unused[0]} (or {{param: {unused[0]}}}) or remove it", line=p.line)
        specs = tuple(self.params.values())
        return RuleSet(entry=entry, exit=exit_, cooldown=cooldown, param_specs=specs,
                       values=tuple((p.name, p.value) for p in specs), description=desc, source=self.source,
                       short_entry=s_entry, short_exit=s_exit, trailing_stop=trailing)

    def trailing(self, node: YNode) -> tuple[str, float]:
        """``trailing_stop: {atr: 2.0}`` or ``{pct: 0.03}``."""
        m = self.expect_map(node, "trailing_stop", "trailing_stop: {atr: 2.0} or trailing_stop: {pct: 0.03}")
        self.check_keys(m, TRAILING_KINDS, "trailing_stop")
        keys = list(m.keys())
        if len(keys) != 1:
            raise self.error(m, "trailing_stop needs exactly one of atr: or pct:",
                             "write trailing_stop: {atr: 2.0} or trailing_stop: {pct: 0.03}")
        kind = keys[0]
        v = float(self.number(m.get(kind), f"trailing_stop {kind}"))
        if not v > 0 or (kind == "pct" and v >= 1):
            raise self.error(m.get(kind), f"trailing_stop {kind} must be {'in (0, 1)' if kind == 'pct' else '> 0'}, "
                             f"got {v}", "e.g. {atr: 2.0} (2 x ATR) or {pct: 0.03} (3 % of the price)")
        return kind, v
