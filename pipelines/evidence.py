"""Match evidence: the JSON the engine writes for each result, and the Chinese text a
department reads from it (one condition per line, and the reminder's reason).

Both the engine (pure, no I/O) and the lists import this module; it imports
nothing of the ledger or the warehouse, so the same condition reads the same
wherever it is shown."""
from __future__ import annotations

import datetime as dt
import json
import re
from decimal import Decimal, InvalidOperation
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.contracts import FIELD_LABELS

OPS = {"eq": "等于", "ne": "不等于", "gt": "大于", "ge": "不低于", "lt": "小于", "le": "不高于",
       "in": "属于", "not_in": "不属于"}
GUARDS = {"registered": "在登记库中有登记信息", "active": "登记状态为存续（在业）",
          "not_dishonest": "未列入失信名单"}


# ---------------------------------------------------------------- the engine's JSON

def json_text(v) -> str:
    return json.dumps(v, ensure_ascii=False)


def json_value(v, kind: str):
    """A policy value as it reads in evidence: decimals as plain strings, dates ISO."""
    if v is None:
        return None
    if isinstance(v, tuple):
        return [json_value(x, kind) for x in v]
    if isinstance(v, bool):
        return v
    if isinstance(v, Decimal):
        if kind == "int" and v == v.to_integral_value():
            return int(v)
        return decimal_text(v)
    if isinstance(v, dt.date):
        return v.isoformat()
    return v


def decimal_text(d: Decimal) -> str:
    """Plain notation without trailing zeros: 0.2, 12, -0.05."""
    text = format(d, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


_CONTROL = [chr(i) for i in range(32)]


def _json_strings(arr: pa.Array) -> pa.Array:
    """Each string as a JSON string literal (null -> null literal)."""
    s = pc.replace_substring(arr, "\\", "\\\\")
    s = pc.replace_substring(s, '"', '\\"')
    if pc.any(pc.match_substring_regex(s, "[\\x00-\\x1f]")).as_py():
        for ch in _CONTROL:
            s = pc.replace_substring(s, ch, json.dumps(ch)[1:-1])
    return pc.fill_null(pc.binary_join_element_wise('"', s, '"', ""), "null")


def _quoted(text: pa.Array) -> pa.Array:
    """Text that needs no escaping (numbers, ISO dates) as JSON strings; null -> null."""
    return pc.fill_null(pc.binary_join_element_wise('"', text, '"', ""), "null")


def _strip_zeros(text: pa.Array) -> pa.Array:
    """Plain decimal text without trailing fractional zeros ("12.500000" -> "12.5", "3.000" -> "3")."""
    has_point = pc.match_substring(text, ".")
    stripped = pc.utf8_rtrim(pc.utf8_rtrim(text, characters="0"), characters=".")
    return pc.if_else(has_point, stripped, text)


def decimal_json_text(arr: pa.Array) -> pa.Array:
    """Decimals as plain text (never "0E-18" or "1.0E-7", which Arrow writes for small values)."""
    text = arr.cast(pa.string())
    scientific = pc.fill_null(pc.match_substring(text, "E"), False)
    zero = pc.fill_null(pc.equal(arr, pa.scalar(Decimal(0), arr.type)), False)
    text = pc.if_else(zero, pa.scalar("0"), text)
    rest = pc.indices_nonzero(pc.and_not(scientific, zero))
    text = _strip_zeros(text)
    if len(rest):
        plain = pa.array([decimal_text(d) for d in arr.take(rest).to_pylist()], pa.string())
        mask = pc.is_in(pa.array(range(len(arr)), pa.int64()), value_set=rest.cast(pa.int64()))
        text = pc.replace_with_mask(text, mask, plain)
    return text


def json_actual(arr: pa.Array) -> pa.Array:
    """Portrait values as JSON: text and dates as strings (ISO), decimals as plain strings, ints, bools."""
    t = arr.type
    if pa.types.is_decimal(t):
        return _quoted(decimal_json_text(arr))
    if pa.types.is_integer(t) or pa.types.is_boolean(t):
        return pc.fill_null(arr.cast(pa.string()), "null")
    if pa.types.is_date(t):
        return _quoted(arr.cast(pa.string()))
    return _json_strings(arr.cast(pa.string()))


def json_bools(arr: pa.Array) -> pa.Array:
    return pc.fill_null(arr.cast(pa.string()), "null")


# ---------------------------------------------------------------- reading it


def leaves(evidence: Any) -> list[dict]:
    if evidence is None or evidence == "":
        return []
    if isinstance(evidence, str):
        try:
            evidence = json.loads(evidence)
        except ValueError:
            return []
    return [e for e in evidence if isinstance(e, dict)] if isinstance(evidence, list) else []


def show(value: Any) -> str:
    if value is None:
        return "无数据"
    if isinstance(value, bool):
        return "是" if value else "否"
    if isinstance(value, (list, tuple)):
        return "、".join(show(v) for v in value)
    if isinstance(value, (int, float, Decimal)) or (isinstance(value, str) and re.fullmatch(r"-?\d+\.\d+", value)):
        try:
            d = Decimal(str(value))
        except InvalidOperation:
            return str(value)
        text = format(d.normalize(), "f")
        return text
    return str(value)


def verdict(result: Any) -> str:
    text = str(result).lower()
    if result is True or text == "true":
        return "符合"
    if result is False or text == "false":
        return "不符合"
    return "数据缺失"


def condition(leaf: dict) -> str:
    field = str(leaf.get("field") or "")
    label = FIELD_LABELS.get(field, field)
    op, value = leaf.get("op"), leaf.get("value")
    if op in OPS:
        return f"{label}{OPS[op]}{show(value)}"
    if op == "between":
        lo, hi = (list(value) + [None, None])[:2] if isinstance(value, (list, tuple)) else (None, None)
        if lo is not None and hi is not None:
            return f"{label}介于{show(lo)}至{show(hi)}"
        return f"{label}不低于{show(lo)}" if lo is not None else f"{label}不高于{show(hi)}"
    if op == "prefix_in":
        return f"{label}以{show(value)}开头"
    return {"is_true": f"{label}为“是”", "is_false": f"{label}为“否”",
            "is_null": f"{label}为空", "not_null": f"{label}不为空"}.get(op, f"{label} {op} {show(value)}")


def line(leaf: dict) -> str:
    if "guard" in leaf:   # registered / active / not_dishonest checks
        guard = str(leaf["guard"])
        return f"【{verdict(leaf.get('result'))}】{GUARDS.get(guard, guard)}"
    if leaf.get("name_list"):
        return f"【名单】部门报送名单金额：{show(leaf.get('amount'))} 元"
    return f"【{verdict(leaf.get('result'))}】{condition(leaf)}（实际：{show(leaf.get('actual'))}）"


def _conditions(ls: list[dict]) -> list[dict]:
    return [l for l in ls if "op" in l]


def readable(evidence: Any) -> str:
    return "\n".join(line(l) for l in leaves(evidence))


def _top_item(path: Any) -> int | None:
    m = re.search(r"\d+", str(path or ""))
    return int(m.group()) if m else None


def failing(outcome: str, evidence: Any, failed_item: int | None = None,
            failed_guard: str | None = None) -> str:
    """Why a result is not (yet) eligible: the failing item, the missing data or the guard."""
    ls = _conditions(leaves(evidence))
    if outcome == "guard_failed" and failed_guard:
        return "未满足：" + GUARDS.get(failed_guard, failed_guard)
    if outcome == "missing_data":
        missing = [l for l in ls if verdict(l.get("result")) == "数据缺失"]
        if not missing:
            return "兑现金额计算所需数据缺失"
        names = dict.fromkeys(FIELD_LABELS.get(str(l.get("field")), str(l.get("field"))) for l in missing)
        return "数据缺失：" + "、".join(names)
    if outcome == "near_miss":
        chosen = [l for l in ls if failed_item is not None and _top_item(l.get("path")) == failed_item]
        if not chosen:
            chosen = [l for l in ls if verdict(l.get("result")) == "不符合"]
        return "未满足：" + "；".join(f"{condition(l)}（实际：{show(l.get('actual'))}）" for l in chosen)
    return ""


# ---------------------------------------------------------------- column-wise (the engine's stored rows)

NUMBER_TEXT = r"^-?\d+\.\d+$"


def shown(json_text: pa.Array) -> pa.Array:
    """`show` of each value given as JSON text (the evidence's `actual`), column-wise."""
    quoted = pc.fill_null(pc.match_substring_regex(json_text, r'^".*"$'), False)
    inner = pc.utf8_slice_codeunits(json_text, 1, -1)
    inner = pc.replace_substring(pc.replace_substring(inner, '\\"', '"'), "\\\\", "\\")
    text = pc.if_else(quoted, inner, json_text)
    number = pc.fill_null(pc.match_substring_regex(text, NUMBER_TEXT), False)
    stripped = pc.utf8_rtrim(pc.utf8_rtrim(text, characters="0"), characters=".")
    text = pc.if_else(number, stripped, text)
    bare = pc.invert(quoted)
    for literal, word in (("null", "无数据"), ("true", "是"), ("false", "否")):
        text = pc.if_else(pc.and_(bare, pc.fill_null(pc.equal(json_text, literal), False)), word, text)
    return pc.fill_null(text, "无数据")


def _join(arrays: list[pa.Array], sep: str) -> pa.Array:
    """Join per row, skipping nulls. (pyarrow's own null_handling="skip" returns an
    empty array when every value is null, and a join of one array does not broadcast.)"""
    if len(arrays) == 1:
        return pc.fill_null(arrays[0], "")
    ended = [pc.fill_null(pc.binary_join_element_wise(a, pa.scalar(sep), ""), "") for a in arrays]
    joined = pc.binary_join_element_wise(*ended, "")
    return pc.utf8_slice_codeunits(joined, 0, -len(sep)) if sep else joined


def reasons(leaves: list[dict], actual: dict[str, pa.Array], result: dict[str, pa.Array],
            outcome: pa.Array, failed_item: pa.Array, failed_guard: pa.Array) -> pa.Array:
    """`failing` for a whole column of one policy's results, built from the same
    evidence without parsing it row by row: `leaves` are the policy's condition
    leaves as the evidence writes them (path, field, op, value), `actual` their
    values as JSON text and `result` their results per row (path -> array)."""
    m = len(outcome)
    out = pa.nulls(m, pa.string())
    if not m:
        return out
    is_guard = pc.and_(pc.equal(outcome, "guard_failed"), pc.is_valid(failed_guard))
    if pc.any(is_guard).as_py():
        named = pc.binary_join_element_wise("未满足：", failed_guard, "")
        for guard, text in GUARDS.items():
            named = pc.if_else(pc.equal(failed_guard, guard), "未满足：" + text, named)
        out = pc.if_else(is_guard, named, out)

    # missing_data: the fields whose leaves are UNKNOWN, each named once, in leaf order
    labels = {}
    for leaf in leaves:
        unknown = pc.is_null(result[leaf["path"]])
        field = str(leaf["field"])
        labels[field] = unknown if field not in labels else pc.or_(labels[field], unknown)
    missing = pc.equal(outcome, "missing_data")
    if labels:
        named = [pc.if_else(u, FIELD_LABELS.get(f, f), pa.scalar(None, pa.string())) for f, u in labels.items()]
        joined = _join(named, "、")
        text = pc.if_else(pc.equal(joined, ""), "兑现金额计算所需数据缺失",
                          pc.binary_join_element_wise("数据缺失：", joined, ""))
    else:
        text = pa.repeat(pa.scalar("兑现金额计算所需数据缺失"), m)
    out = pc.if_else(missing, text, out)

    # near_miss: every condition under the failing top-level item, with its actual value
    near = pc.and_(pc.equal(outcome, "near_miss"), pc.is_valid(failed_item))
    for item in pc.unique(failed_item.filter(near)).to_pylist() if pc.any(near).as_py() else []:
        # A top-level item always holds a leaf, so (unlike `failing` on hand-made
        # evidence) there is no fallback to the FALSE leaves.
        chosen = [l for l in leaves if _top_item(l.get("path")) == item]
        parts = []
        for leaf in chosen:
            parts += [condition(leaf) + "（实际：", shown(actual[leaf["path"]]), "）"]
        if parts:
            pieces = [pc.binary_join_element_wise(*parts[i:i + 3], "") for i in range(0, len(parts), 3)]
            text = pc.binary_join_element_wise("未满足：", _join(pieces, "；"), "")
        else:
            text = pa.repeat(pa.scalar("未满足："), m)
        out = pc.if_else(pc.and_(near, pc.fill_null(pc.equal(failed_item, item), False)), text, out)
    return out
