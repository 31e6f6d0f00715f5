"""The policy condition library (政策条件库): YAML policy files -> checked Policy objects.

A policy officer, not a programmer, writes these files, so the checker reports
every problem in every file at once, each with the file, the line and the key,
in Chinese. Numbers are read from the scalar text as exact Decimals (PyYAML
would otherwise turn 0.03 into a binary float before we ever see it).
"""
from __future__ import annotations

import datetime as dt
import difflib
import hashlib
import re
import sys
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Union

import pyarrow as pa
import yaml

from pipelines import contracts

KINDS = ("condition", "name_list", "manual")
BENEFIT_TYPES = ("fixed", "rate", "per_head", "tiered", "from_list")
GUARDS = ("registered", "active", "not_dishonest")   # also the order they are checked in
BUDGET_RULES = ("flag", "pro_rata")
GROUP_OPS = ("all", "any", "none")
SCALAR_OPS = ("eq", "ne", "gt", "ge", "lt", "le")
ORDER_OPS = ("gt", "ge", "lt", "le", "between")
LIST_OPS = ("in", "not_in", "prefix_in")
NOVALUE_OPS = ("is_true", "is_false", "is_null", "not_null")
OPERATORS = SCALAR_OPS + ("between",) + LIST_OPS + NOVALUE_OPS

REQUIRED_KEYS = ("id", "name", "department", "kind", "period", "valid_from", "valid_to")
TOP_KEYS = REQUIRED_KEYS + (
    "basis", "conditions", "benefit", "exclusive_group", "budget", "budget_rule",
    "guards", "publicity_days", "guide", "repealed_on", "confirm_days", "review_days", "pay_days", "fund_source",
    "max_amount",
)
# Deadlines in working days (lifecycle.md), when the policy file does not say.
DEADLINE_DEFAULTS = {"confirm_days": 15, "review_days": 10, "pay_days": 20}
BENEFIT_KEYS = {
    "fixed": ("amount",),
    "rate": ("base", "rate", "min", "cap"),
    "per_head": ("base", "amount_each", "cap"),
    "tiered": ("base", "tiers"),
    "from_list": (),
}
BENEFIT_REQUIRED = {
    "fixed": ("amount",),
    "rate": ("base", "rate"),
    "per_head": ("base", "amount_each"),
    "tiered": ("base", "tiers"),
    "from_list": (),
}
# The decimal type every numeric comparison is made in (contracts.RATIO).
MAX_SCALE = 18
# Benefit and budget numbers: at most MAX_SCALE fractional digits and below this magnitude, so that
# base x rate, min, cap and the pro-rata arithmetic stay exact in decimal256.
MAX_MONEY = Decimal(10) ** 18
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def field_kind(arrow_type: pa.DataType) -> str:
    if pa.types.is_string(arrow_type):
        return "string"
    if pa.types.is_date(arrow_type):
        return "date"
    if pa.types.is_boolean(arrow_type):
        return "bool"
    if pa.types.is_integer(arrow_type):
        return "int"
    if pa.types.is_decimal(arrow_type):
        return "decimal"
    raise ValueError(f"no policy kind for {arrow_type}")


FIELD_KINDS: dict[str, str] = {f.name: field_kind(f.type) for f in contracts.PORTRAIT_SCHEMA}
NUMERIC_KINDS = ("int", "decimal")
KIND_LABELS = {"string": "文本", "date": "日期", "bool": "是/否", "int": "整数", "decimal": "数值"}
OP_LABELS = {
    "eq": "等于", "ne": "不等于", "gt": "大于", "ge": "大于等于", "lt": "小于", "le": "小于等于",
    "between": "介于", "in": "属于", "not_in": "不属于", "prefix_in": "以下列开头",
    "is_true": "为“是”", "is_false": "为“否”", "is_null": "为空", "not_null": "不为空",
}


# ---------------------------------------------------------------- the model

@dataclass(frozen=True)
class Leaf:
    path: str                 # "0.2.1": index at each level from the top-level list
    field: str
    op: str
    value: Any                # Decimal | int | str | date | bool | tuple (in lists) | (lo, hi) | None
    line: int = 0


@dataclass(frozen=True)
class Group:
    path: str
    op: str                   # all | any | none
    items: tuple["Node", ...]
    line: int = 0


Node = Union[Leaf, Group]


@dataclass(frozen=True)
class Tier:
    min: Decimal
    amount: Decimal


@dataclass(frozen=True)
class Benefit:
    type: str
    amount: Decimal | None = None        # fixed
    base: str | None = None              # rate, per_head, tiered
    rate: Decimal | None = None
    min: Decimal | None = None
    cap: Decimal | None = None
    amount_each: Decimal | None = None
    tiers: tuple[Tier, ...] = ()         # sorted by min, ascending


@dataclass(frozen=True)
class Policy:
    id: str
    name: str
    department: str
    kind: str
    period: str
    valid_from: dt.date
    valid_to: dt.date
    conditions: tuple[Node, ...] = ()    # the top-level list (all of them); () = no condition
    benefit: Benefit | None = None
    guards: tuple[str, ...] = GUARDS     # always in GUARDS order
    budget: Decimal | None = None
    budget_rule: str = "flag"
    exclusive_group: str | None = None
    publicity_days: int | None = None
    guide: tuple[tuple[str, str], ...] = ()
    basis: str | None = None
    fund_source: str | None = None       # 资金来源 on the payout list
    confirm_days: int = DEADLINE_DEFAULTS["confirm_days"]
    review_days: int = DEADLINE_DEFAULTS["review_days"]
    pay_days: int = DEADLINE_DEFAULTS["pay_days"]
    max_amount: Decimal | None = None    # manual only: the most one online application may claim
    file: str = ""
    file_hash: str = ""                  # sha256 of the file's bytes (audit)
    repealed_on: dt.date | None = None   # 废止: out of force from this date on

    def in_force_on(self, as_of: dt.date) -> bool:
        return self.valid_from <= as_of <= self.valid_to and (self.repealed_on is None or as_of < self.repealed_on)

    def status_on(self, as_of: dt.date) -> str:
        """生效 / 未生效 / 已失效 / 已废止, as the published list shows it."""
        if self.repealed_on is not None and as_of >= self.repealed_on:
            return "已废止"
        if as_of < self.valid_from:
            return "未生效"
        return "已失效" if as_of > self.valid_to else "生效"

    @property
    def guide_dict(self) -> dict[str, str]:
        return dict(self.guide)

    def leaves(self) -> list[Leaf]:
        out: list[Leaf] = []

        def walk(node: Node) -> None:
            if isinstance(node, Leaf):
                out.append(node)
            else:
                for item in node.items:
                    walk(item)

        for node in self.conditions:
            walk(node)
        return out

    def negated_paths(self) -> frozenset[str]:
        """Paths of the leaves under an odd number of `none` groups: such a leaf makes
        its item fail by holding (the evidence marks it, so its text reads 不得 …)."""
        out: set[str] = set()

        def walk(node: Node, negated: bool) -> None:
            if isinstance(node, Leaf):
                if negated:
                    out.add(node.path)
            else:
                for item in node.items:
                    walk(item, negated != (node.op == "none"))

        for node in self.conditions:
            walk(node, False)
        return frozenset(out)


@dataclass(frozen=True)
class PolicyError:
    file: str
    line: int
    key: str
    message: str              # Chinese, for the policy officer
    # A warning is reported but does not make the policy bad (an unknown key:
    # policies.md does not list it among the errors, and skipping a whole
    # policy for an extra note would be out of proportion).
    warning: bool = False

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.key}: {'提示：' if self.warning else ''}{self.message}"


# ---------------------------------------------------------------- YAML with lines

class YMap(dict):
    """A mapping that remembers the line of itself and of each key (1-based)."""
    line: int = 0
    lines: dict


class YList(list):
    line: int = 0
    lines: list


class _Constructor(yaml.constructor.SafeConstructor):
    pass


# A plain scalar YAML 1.2 reads as a number but PyYAML's 1.1 rules leave text: 1e3, 1.5e3, 2E-2.
_EXP_NUMBER = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+")


def _scalar(node: yaml.ScalarNode, ctor: _Constructor) -> Any:
    tag = node.tag
    if tag == "tag:yaml.org,2002:str" and not node.style and _EXP_NUMBER.fullmatch(node.value):
        tag = "tag:yaml.org,2002:float"
    if tag == "tag:yaml.org,2002:float":
        text = node.value.replace("_", "")
        try:
            value = Decimal(text)
        except InvalidOperation:
            value = Decimal("NaN")
        if not value.is_finite():
            raise _ScalarError("数值无效（不允许 .inf / .nan）")
        return value
    if tag == "tag:yaml.org,2002:int":
        return ctor.construct_yaml_int(node)
    if tag == "tag:yaml.org,2002:bool":
        return ctor.construct_yaml_bool(node)
    if tag == "tag:yaml.org,2002:null":
        return None
    if tag == "tag:yaml.org,2002:timestamp":
        return ctor.construct_yaml_timestamp(node)
    return node.value


class _ScalarError(Exception):
    pass


def _build(node: yaml.Node, ctor: _Constructor, errors: list, where: str) -> Any:
    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out = YMap()
        out.line = line
        out.lines = {}
        for key_node, value_node in node.value:
            key = _build(key_node, ctor, errors, where)
            if not isinstance(key, (str, int)):
                errors.append((key_node.start_mark.line + 1, str(key), "键必须是文本"))
                continue
            key = str(key)
            if key in out:
                errors.append((key_node.start_mark.line + 1, key, f"键 \"{key}\" 重复出现"))
                continue
            out.lines[key] = key_node.start_mark.line + 1
            out[key] = _build(value_node, ctor, errors, where)
        return out
    if isinstance(node, yaml.SequenceNode):
        out = YList()
        out.line = line
        out.lines = []
        for item in node.value:
            out.lines.append(item.start_mark.line + 1)
            out.append(_build(item, ctor, errors, where))
        return out
    try:
        return _scalar(node, ctor)
    except _ScalarError as exc:
        errors.append((line, where, str(exc)))
        return None
    except Exception:  # noqa: BLE001 - a scalar PyYAML cannot construct (e.g. a bad date)
        errors.append((line, where, f"无法识别的值 \"{node.value}\""))
        return None


def read_yaml(text: str) -> tuple[Any, list[tuple[int, str, str]]]:
    """Parse one YAML document keeping lines; numbers as Decimal/int, never float."""
    errors: list[tuple[int, str, str]] = []
    # libyaml's loader (5x faster: a province's 200 policy files are read by several stages);
    # it marks a plain scalar's style '' where the Python loader gives None.
    node = yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    if node is None:
        return None, errors
    return _build(node, _Constructor(), errors, ""), errors


# ---------------------------------------------------------------- checking

def _suggest(word: str, choices) -> str:
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"，是否应为 \"{match[0]}\"？" if match else ""


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, Decimal)) and not isinstance(v, bool)


def _fmt(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


class _Checker:
    def __init__(self, file: str):
        self.file = file
        self.errors: list[PolicyError] = []
        self.warnings: list[PolicyError] = []

    def err(self, line: int, key: str, message: str) -> None:
        self.errors.append(PolicyError(self.file, line, key, message))

    def warn(self, line: int, key: str, message: str) -> None:
        self.warnings.append(PolicyError(self.file, line, key, message, warning=True))

    # --- conditions

    def node(self, raw: Any, path: str, key: str, line: int) -> Node | None:
        if not isinstance(raw, YMap):
            self.err(line, key, "条件应为 {field, op, value} 或 all / any / none 分组")
            return None
        groups = [k for k in raw if k in GROUP_OPS]
        if groups:
            if len(raw) != 1:
                self.err(raw.line, key, f"分组 \"{groups[0]}\" 不能与其他键写在同一项中：{', '.join(raw)}")
                return None
            op = groups[0]
            items = raw[op]
            return self.group(op, items, path, f"{key}.{op}", raw.lines[op])
        return self.leaf(raw, path, key)

    def group(self, op: str, items: Any, path: str, key: str, line: int) -> Group | None:
        nodes = self.node_list(items, path, key, line)
        if nodes is None:
            return None
        return Group(path, op, tuple(nodes), line)

    def node_list(self, items: Any, path: str, key: str, line: int) -> list[Node] | None:
        if not isinstance(items, YList):
            self.err(line, key, "应为条件列表")
            return None
        if not items:
            self.err(line, key, "列表不能为空")
            return None
        out: list[Node] = []
        ok = True
        for i, item in enumerate(items):
            sub = f"{path}.{i}" if path else str(i)
            node = self.node(item, sub, f"{key}[{i}]", items.lines[i])
            ok &= node is not None
            if node is not None:
                out.append(node)
        return out if ok else None

    def leaf(self, raw: YMap, path: str, key: str) -> Leaf | None:
        ok = True
        for k in raw:
            if k not in ("field", "op", "value"):
                self.warn(raw.lines[k], f"{key}.{k}", f"未知的键 \"{k}\"（已忽略）{_suggest(k, ('field', 'op', 'value'))}")
                ok = False
        name = raw.get("field")
        op = raw.get("op")
        if name is None:
            self.err(raw.line, f"{key}.field", "缺少 field（字段）")
            ok = False
        elif not isinstance(name, str) or name not in FIELD_KINDS:
            self.err(raw.lines["field"], f"{key}.field",
                     f"未知字段 \"{_fmt(name)}\"{_suggest(str(name), FIELD_KINDS)}")
            ok = False
        if op is None:
            self.err(raw.line, f"{key}.op", "缺少 op（运算符）")
            ok = False
        elif not isinstance(op, str) or op not in OPERATORS:
            self.err(raw.lines["op"], f"{key}.op", f"未知运算符 \"{_fmt(op)}\"{_suggest(str(op), OPERATORS)}")
            ok = False
        if not ok:
            return None
        kind = FIELD_KINDS[name]
        vline = raw.lines.get("value", raw.line)
        vkey = f"{key}.value"
        has_value = "value" in raw
        value = raw.get("value")
        label = KIND_LABELS[kind]

        if op in NOVALUE_OPS:
            if has_value:
                self.err(vline, vkey, f"运算符 \"{op}\" 不带 value")
                return None
            if op in ("is_true", "is_false") and kind != "bool":
                self.err(raw.lines["op"], f"{key}.op", f"运算符 \"{op}\" 只能用于是/否字段，\"{name}\" 是{label}字段")
                return None
            return Leaf(path, name, op, None, raw.line)
        if not has_value:
            self.err(raw.line, vkey, f"运算符 \"{op}\" 需要 value")
            return None
        if op in ORDER_OPS and kind == "bool":
            self.err(raw.lines["op"], f"{key}.op", f"运算符 \"{op}\" 不能用于{label}字段 \"{name}\"")
            return None
        if op == "prefix_in" and kind != "string":
            self.err(raw.lines["op"], f"{key}.op", f"运算符 \"prefix_in\" 只能用于文本字段，\"{name}\" 是{label}字段")
            return None
        if op in SCALAR_OPS:
            if value is None:
                self.err(vline, vkey, "value 不能为空（判断是否为空请用 is_null / not_null）")
                return None
            v = self.typed(value, kind, name, vline, vkey)
            return None if v is None else Leaf(path, name, op, v, raw.line)
        if op == "between":
            if not isinstance(value, YList) or len(value) != 2:
                self.err(vline, vkey, "between 的 value 应为 [下限, 上限]（不设限的一端写 null）")
                return None
            bounds = []
            for i, b in enumerate(value):
                if b is None:
                    bounds.append(None)
                    continue
                v = self.typed(b, kind, name, value.lines[i], f"{vkey}[{i}]")
                if v is None:
                    return None
                bounds.append(v)
            lo, hi = bounds
            if lo is not None and hi is not None and lo > hi:
                self.err(vline, vkey, f"between 的下限 {_fmt(lo)} 大于上限 {_fmt(hi)}")
                return None
            return Leaf(path, name, op, (lo, hi), raw.line)
        # in / not_in / prefix_in
        if not isinstance(value, YList):
            self.err(vline, vkey, f"运算符 \"{op}\" 的 value 应为列表")
            return None
        if not value:
            self.err(vline, vkey, "列表不能为空")
            return None
        out = []
        for i, item in enumerate(value):
            if item is None:
                self.err(value.lines[i], f"{vkey}[{i}]", "列表中不能有空值（null）")
                return None
            v = self.typed(item, "string" if op == "prefix_in" else kind, name, value.lines[i], f"{vkey}[{i}]")
            if v is None:
                return None
            out.append(v)
        return Leaf(path, name, op, tuple(out), raw.line)

    def typed(self, v: Any, kind: str, name: str, line: int, key: str) -> Any:
        """The value as its field's kind, or None after reporting an error."""
        label = KIND_LABELS[kind]
        bad = f"字段 \"{name}\" 是{label}字段，值 \"{_fmt(v)}\" 类型不符"
        if kind == "string":
            if isinstance(v, str):
                return v
            if _is_number(v):
                self.err(line, key, f"{bad}（文本值请加引号，如 \"{v}\"）")
            else:
                self.err(line, key, bad)
            return None
        if kind == "bool":
            if isinstance(v, bool):
                return v
            self.err(line, key, f"{bad}（应为 true 或 false）")
            return None
        if kind in NUMERIC_KINDS:
            if _is_number(v):
                d = Decimal(v)
                if d.as_tuple().exponent < -MAX_SCALE:  # type: ignore[operator]
                    self.err(line, key, f"数值 {v} 的小数位超过 {MAX_SCALE} 位")
                    return None
                if abs(d) >= Decimal(10) ** 20:
                    self.err(line, key, f"数值 {v} 超出范围")
                    return None
                return d
            self.err(line, key, f"{bad}（应为数值）")
            return None
        # date
        if isinstance(v, dt.datetime):
            self.err(line, key, f"{bad}（应为日期 YYYY-MM-DD，不带时间）")
            return None
        if isinstance(v, dt.date):
            return v
        if isinstance(v, str) and _ISO_DATE.fullmatch(v):   # strictly YYYY-MM-DD
            try:
                return dt.date.fromisoformat(v)
            except ValueError:
                pass
        self.err(line, key, f"{bad}（应为日期 YYYY-MM-DD）")
        return None

    # --- benefit and top-level values

    def money(self, raw: YMap, k: str, key: str) -> Decimal | None:
        v = raw.get(k)
        if not _is_number(v):
            self.err(raw.lines.get(k, raw.line), f"{key}.{k}" if key else k, f"\"{k}\" 应为数值，而不是 \"{_fmt(v)}\"")
            return None
        d = Decimal(v)
        if d.as_tuple().exponent < -MAX_SCALE:  # type: ignore[operator]
            self.err(raw.lines.get(k, raw.line), f"{key}.{k}" if key else k, f"数值 {v} 的小数位超过 {MAX_SCALE} 位")
            return None
        if abs(d) >= MAX_MONEY:
            self.err(raw.lines.get(k, raw.line), f"{key}.{k}" if key else k, f"数值 {v} 超出范围")
            return None
        return d

    def benefit(self, raw: Any, kind: str, line: int) -> Benefit | None:
        if not isinstance(raw, YMap):
            self.err(line, "benefit", "benefit 应为键值结构（type、base …）")
            return None
        btype = raw.get("type")
        if btype is None:
            self.err(raw.line, "benefit.type", "缺少 benefit.type")
            return None
        if btype not in BENEFIT_TYPES:
            self.err(raw.lines["type"], "benefit.type",
                     f"未知的奖补方式 \"{_fmt(btype)}\"{_suggest(str(btype), BENEFIT_TYPES)}")
            return None
        ok = True
        allowed = BENEFIT_KEYS[btype]
        for k in raw:
            if k != "type" and k not in allowed:
                self.err(raw.lines[k], f"benefit.{k}",
                         f"奖补方式 \"{btype}\" 没有 \"{k}\" 这一项{_suggest(k, allowed)}")
                ok = False
        for k in BENEFIT_REQUIRED[btype]:
            if raw.get(k) is None:
                self.err(raw.line, f"benefit.{k}", f"奖补方式 \"{btype}\" 缺少 \"{k}\"")
                ok = False
        if btype == "from_list" and kind != "name_list":
            self.err(raw.lines["type"], "benefit.type", "from_list（按名单金额）只能用于 name_list（名单类）政策")
            ok = False
        if not ok:
            return None
        values: dict[str, Any] = {}
        base = raw.get("base")
        if "base" in allowed:
            if not isinstance(base, str) or base not in FIELD_KINDS:
                self.err(raw.lines["base"], "benefit.base", f"未知字段 \"{_fmt(base)}\"{_suggest(str(base), FIELD_KINDS)}")
                ok = False
            elif FIELD_KINDS[base] not in NUMERIC_KINDS:
                self.err(raw.lines["base"], "benefit.base",
                         f"计算基数 \"{base}\" 必须是数值字段，它是{KIND_LABELS[FIELD_KINDS[base]]}字段")
                ok = False
            values["base"] = base
        for k in ("amount", "rate", "min", "cap", "amount_each"):
            if k in allowed and raw.get(k) is not None:
                d = self.money(raw, k, "benefit")
                if d is None:
                    ok = False
                values[k] = d
        if btype == "tiered":
            tiers = self.tiers(raw.get("tiers"), raw.lines["tiers"])
            if tiers is None:
                return None
            values["tiers"] = tiers
        if not ok:
            return None
        return Benefit(type=btype, **values)

    def tiers(self, raw: Any, line: int) -> tuple[Tier, ...] | None:
        if not isinstance(raw, YList):
            self.err(line, "benefit.tiers", "tiers 应为列表，如 [{min: 100, amount: 5000}]")
            return None
        if not raw:
            self.err(line, "benefit.tiers", "列表不能为空")
            return None
        out: list[Tier] = []
        seen: dict[Decimal, int] = {}
        ok = True
        for i, t in enumerate(raw):
            key = f"benefit.tiers[{i}]"
            if not isinstance(t, YMap):
                self.err(raw.lines[i], key, "每一档应为 {min: …, amount: …}")
                ok = False
                continue
            for k in t:
                if k not in ("min", "amount"):
                    self.warn(t.lines[k], f"{key}.{k}", f"未知的键 \"{k}\"（已忽略）{_suggest(k, ('min', 'amount'))}")
                    ok = False
            lo = self.money(t, "min", key)
            amount = self.money(t, "amount", key)
            if lo is None or amount is None:
                ok = False
                continue
            if lo in seen:
                self.err(t.lines["min"], f"{key}.min", f"两档的 min 相同（{lo}，另见第 {seen[lo]} 行）")
                ok = False
                continue
            seen[lo] = t.lines["min"]
            out.append(Tier(lo, amount))
        if not ok:
            return None
        return tuple(sorted(out, key=lambda t: t.min))

    def text(self, doc: YMap, k: str, required: bool) -> str | None:
        v = doc.get(k)
        if v is None:
            if required:
                self.err(doc.line, k, f"缺少必填项 \"{k}\"")
            return None
        if isinstance(v, bool) or not isinstance(v, (str, int)):
            self.err(doc.lines[k], k, f"\"{k}\" 应为文本，而不是 \"{_fmt(v)}\"")
            return None
        v = str(v).strip()
        if not v:
            self.err(doc.lines[k], k, f"\"{k}\" 不能为空")
            return None
        return v

    def date(self, doc: YMap, k: str) -> dt.date | None:
        v = doc.get(k)
        if v is None:
            self.err(doc.line, k, f"缺少必填项 \"{k}\"")
            return None
        return self.typed(v, "date", k, doc.lines[k], k)

    def policy(self, doc: Any, file_hash: str) -> Policy | None:
        if not isinstance(doc, YMap):
            self.err(getattr(doc, "line", 1), "", "政策文件应为键值结构（id、name、conditions …）")
            return None
        n0 = len(self.errors)
        for k in doc:
            if k not in TOP_KEYS:
                self.warn(doc.lines[k], k, f"未知的键 \"{k}\"（已忽略）{_suggest(k, TOP_KEYS)}")
        pid = self.text(doc, "id", True)
        name = self.text(doc, "name", True)
        department = self.text(doc, "department", True)
        period = self.text(doc, "period", True)
        basis = self.text(doc, "basis", False)
        kind = doc.get("kind")
        if kind is None:
            self.err(doc.line, "kind", "缺少必填项 \"kind\"")
        elif kind not in KINDS:
            self.err(doc.lines["kind"], "kind", f"未知的政策类型 \"{_fmt(kind)}\"{_suggest(str(kind), KINDS)}（condition / name_list / manual）")
            kind = None
        valid_from = self.date(doc, "valid_from")
        valid_to = self.date(doc, "valid_to")
        if valid_from and valid_to and valid_to < valid_from:
            self.err(doc.lines["valid_to"], "valid_to", f"有效期止 {valid_to} 早于有效期起 {valid_from}")
        repealed_on = None
        if doc.get("repealed_on") is not None:
            repealed_on = self.typed(doc["repealed_on"], "date", "repealed_on", doc.lines["repealed_on"], "repealed_on")
            if repealed_on and valid_from and repealed_on < valid_from:
                self.err(doc.lines["repealed_on"], "repealed_on", f"废止日期 {repealed_on} 早于有效期起 {valid_from}")

        conditions: tuple[Node, ...] = ()
        raw_cond = doc.get("conditions")
        if raw_cond is None:
            if kind == "condition":
                self.err(doc.line, "conditions", "条件类（condition）政策缺少 conditions")
        else:
            cline = doc.lines["conditions"]
            if isinstance(raw_cond, YMap):
                # A single node instead of a list: `all:` is the list itself, anything else one item.
                if list(raw_cond) == ["all"]:
                    nodes = self.node_list(raw_cond["all"], "", "conditions.all", raw_cond.lines["all"])
                else:
                    node = self.node(raw_cond, "0", "conditions", cline)
                    nodes = None if node is None else [node]
            else:
                nodes = self.node_list(raw_cond, "", "conditions", cline)
            conditions = tuple(nodes or ())

        benefit = None
        raw_benefit = doc.get("benefit")
        if kind == "manual":
            for k in ("benefit", "exclusive_group", "budget"):
                if doc.get(k) is not None:
                    self.err(doc.lines[k], k, f"人工类（manual）政策不能设置 \"{k}\"")
        elif raw_benefit is None:
            if kind in ("condition", "name_list"):
                self.err(doc.line, "benefit", f"{'条件类' if kind == 'condition' else '名单类'}政策缺少 benefit")
        else:
            benefit = self.benefit(raw_benefit, kind or "", doc.lines["benefit"])

        max_amount = None
        if doc.get("max_amount") is not None:
            if kind != "manual":
                self.err(doc.lines["max_amount"], "max_amount", "max_amount（单户申请上限）只适用于人工类（manual）政策")
            else:
                max_amount = self.money(doc, "max_amount", "")
                if max_amount is not None and max_amount <= 0:
                    self.err(doc.lines["max_amount"], "max_amount", f"单户申请上限应大于零，而不是 {max_amount}")
                    max_amount = None

        guards = GUARDS
        raw_guards = doc.get("guards")
        if raw_guards is not None:
            gline = doc.lines["guards"]
            if not isinstance(raw_guards, YList):
                self.err(gline, "guards", "guards 应为列表，如 [registered, active, not_dishonest]")
            elif not raw_guards:
                self.err(gline, "guards", "列表不能为空")
            else:
                for i, g in enumerate(raw_guards):
                    if g not in GUARDS:
                        self.err(raw_guards.lines[i], f"guards[{i}]", f"未知的前置校验 \"{_fmt(g)}\"{_suggest(str(g), GUARDS)}")
                guards = tuple(g for g in GUARDS if g in raw_guards)

        budget = None
        if doc.get("budget") is not None and kind != "manual":
            budget = self.money(doc, "budget", "")
        budget_rule = doc.get("budget_rule")
        if budget_rule is None:
            budget_rule = "flag"
        elif budget_rule not in BUDGET_RULES:
            self.err(doc.lines["budget_rule"], "budget_rule", f"未知的预算规则 \"{_fmt(budget_rule)}\"（flag 或 pro_rata）")
        group = self.text(doc, "exclusive_group", False) if kind != "manual" else None

        publicity = doc.get("publicity_days")
        if publicity is not None and (not isinstance(publicity, int) or isinstance(publicity, bool) or publicity < 0):
            self.err(doc.lines["publicity_days"], "publicity_days", f"公示天数应为非负整数，而不是 \"{_fmt(publicity)}\"")
        deadlines = {}
        for k, default in DEADLINE_DEFAULTS.items():
            v = doc.get(k, default)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                self.err(doc.lines[k], k, f"期限应为正整数（工作日），而不是 \"{_fmt(v)}\"")
            deadlines[k] = v
        fund_source = self.text(doc, "fund_source", False)
        guide: tuple[tuple[str, str], ...] = ()
        raw_guide = doc.get("guide")
        if raw_guide is not None:
            if not isinstance(raw_guide, YMap):
                self.err(doc.lines["guide"], "guide", "guide（办事指南）应为键值结构：summary、time_limit、process、contact")
            else:
                guide = tuple((k, "" if v is None else str(v).strip()) for k, v in raw_guide.items())

        if len(self.errors) > n0:
            return None
        return Policy(
            id=pid, name=name, department=department, kind=kind, period=period,
            valid_from=valid_from, valid_to=valid_to, conditions=conditions, benefit=benefit,
            guards=guards, budget=budget, budget_rule=budget_rule, exclusive_group=group,
            publicity_days=publicity, guide=guide, basis=basis, fund_source=fund_source, max_amount=max_amount,
            **deadlines,
            file=self.file, file_hash=file_hash, repealed_on=repealed_on,
        )


# ---------------------------------------------------------------- public API

def load_text(text: str, file: str = "<text>", file_hash: str = "") -> tuple[Policy | None, list[PolicyError]]:
    """One policy from YAML text (no cross-file checks)."""
    checker = _Checker(file)
    try:
        doc, scalar_errors = read_yaml(text)
    except RecursionError:  # an anchor that contains itself (`&a [*a]`) or absurd nesting
        return None, [PolicyError(file, 1, "yaml", "YAML 格式错误：锚点（&/*）引用了自身，或嵌套层数过深")]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark else 1
        problem = getattr(exc, "problem", None) or str(exc)
        return None, [PolicyError(file, line, "yaml", f"YAML 格式错误：{problem}")]
    for line, key, message in scalar_errors:
        checker.err(line, key, message)
    if doc is None:
        checker.err(1, "", "文件为空")
        return None, checker.errors
    policy = checker.policy(doc, file_hash)
    if checker.errors:
        return None, checker.errors + checker.warnings
    return policy, checker.warnings


def file_hash(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def policy_files(path: Path) -> list[Path]:
    path = Path(path)
    return sorted(p for p in path.iterdir() if p.is_file() and p.suffix in (".yaml", ".yml")
                  and not p.name.startswith((".", "~")))


def load_dir(path: Path | str) -> tuple[list[Policy], list[PolicyError]]:
    """Every policy file in a folder. A bad file is skipped and its errors returned; the others load.

    Files that share an id are all skipped: which one is meant is for a person to decide.
    """
    policies: list[Policy] = []
    errors: list[PolicyError] = []
    path = Path(path)
    if not path.is_dir():
        return [], [PolicyError(str(path), 0, "", "政策目录不存在")]
    # id -> [(file, line of the id key)], over every file that names an id, bad ones included, so that
    # a duplicate id is reported in every file that has it (every error in every file at once).
    claims: dict[str, list[tuple[str, int]]] = {}
    for p in policy_files(path):
        raw = p.read_bytes()
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            errors.append(PolicyError(str(p), 1, "", "文件不是 UTF-8 编码"))
            continue
        policy, errs = load_text(text, str(p), hashlib.sha256(raw).hexdigest())
        errors.extend(errs)
        if policy is not None:
            policies.append(policy)
            claims.setdefault(policy.id, []).append((policy.file, _id_line_of(text)))
        else:
            found = _raw_id(text)
            if found is not None:
                claims.setdefault(found[0], []).append((str(p), found[1]))
    for pid, files in claims.items():
        if len(files) > 1:
            for file, line in files:
                others = "、".join(Path(o).name for o, _ in files if o != file)
                errors.append(PolicyError(file, line, "id", f"政策编号 \"{pid}\" 重复（另见 {others}）"))
    keep = [policy for policy in policies if len(claims[policy.id]) == 1]
    errors.sort(key=lambda e: (e.file, e.line))
    return keep, errors


def _raw_id(text: str) -> tuple[str, int] | None:
    """The id a (possibly bad) file claims, with its line, or None."""
    try:
        doc, _ = read_yaml(text)
    except Exception:  # noqa: BLE001 - a file that does not parse claims no id
        return None
    if not isinstance(doc, YMap):
        return None
    v = doc.get("id")
    if isinstance(v, bool) or not isinstance(v, (str, int)) or not str(v).strip():
        return None
    return str(v).strip(), doc.lines.get("id", 1)


def _id_line_of(text: str) -> int:
    found = _raw_id(text)
    return found[1] if found else 1


def in_force(policies: list[Policy], as_of: dt.date) -> list[Policy]:
    return [p for p in policies if p.in_force_on(as_of)]


def manifest(policies: list[Policy]) -> list[dict[str, str]]:
    """What a run records about the policy files it used."""
    return [{"policy_id": p.id, "file": Path(p.file).name, "sha256": p.file_hash} for p in policies]


def check_command(path: Path | str, out=None) -> int:
    """`mianshen policies check [DIR]`: print every error of every file; non-zero on any error."""
    out = out or sys.stdout
    policies, errors = load_dir(path)
    for e in errors:
        print(str(e), file=out)
    real = [e for e in errors if not e.warning]
    if real:
        files = len({e.file for e in real})
        print(f"共 {len(real)} 处错误，涉及 {files} 个文件；{len(policies)} 项政策可用。", file=out)
        return 1
    print(f"全部 {len(policies)} 项政策检查通过。", file=out)
    return 0
