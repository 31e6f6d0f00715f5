"""Match evidence: the JSON the engine writes for each result, and the Chinese text a
department reads from it (one condition per line, and the reminder's reason).

One condition reads the same wherever it is shown (reminder lists, review and
复核 workbooks, `explain`): the field, the enterprise's value as a clerk writes
it, and what the policy needs, e.g. `研发费用占营业收入比例 2.87%，需 ≥ 3%`.
Values as people write them: ratios as percentages, division codes as place
names, amounts with their unit, dates as 年月日, at most 2 decimals.

Both the engine (pure, no I/O) and the lists import this module; it imports
nothing of the ledger or the warehouse. The text is made two ways that must
agree (tests/test_engine.py): row by row from a result's evidence (`failing`,
`readable`), and column-wise for a whole policy's results (`reasons`)."""
from __future__ import annotations

import datetime as dt
import json
import re
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.contracts import FIELD_LABELS, PORTRAIT_SCHEMA
from pipelines.divisions import place_name, place_names

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
    if 0 < arr.type.scale <= 6:
        # Arrow writes plain notation down to an adjusted exponent of -6, so every value of such
        # a scale (zero too: "0.000000") needs only its trailing zeros gone.
        return _strip_zeros(text)
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


# ---------------------------------------------------------------- evidence normalised per policy version
#
# What is constant for a policy version (each leaf's path, field, operator and value,
# each guard, whether a name list pays) is a *template*, stored once per version (in
# matches.parquet's footer and the warehouse's evidence_versions table). Each result
# keeps only its actual values (JSON text per entry) and leaf/guard results. `render`
# puts the two together into the full evidence JSON, the text the engine wrote per
# result before the lean model (tests/test_evidence_fixture.py holds it to that).

TEMPLATES_META = b"mianshen.evidence_templates"   # version -> template, in a result table's schema metadata


def templates_of(schema: pa.Schema) -> dict[str, list[dict]]:
    """The templates a result table or matches.parquet carries (empty when it carries none)."""
    raw = (schema.metadata or {}).get(TEMPLATES_META)
    return json.loads(raw) if raw else {}


def with_templates(table: pa.Table, templates: dict[str, list[dict]]) -> pa.Table:
    meta = dict(table.schema.metadata or {})
    meta[TEMPLATES_META] = json.dumps(templates, ensure_ascii=False)
    return table.replace_schema_metadata(meta)


def version_of(policy_id: str, template: list[dict]) -> str:
    """A policy version's key: a short hash of the policy id and its template's canonical JSON."""
    import hashlib

    canonical = json.dumps([policy_id, template], ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def _prefix(entry: dict) -> str:
    """The literal text of one evidence entry up to its actual value."""
    if entry.get("name_list"):
        return '{"name_list": true, "amount": '
    if "guard" in entry:
        return f'{{"guard": {json_text(entry["guard"])}, "field": {json_text(entry["field"])}, "actual": '
    return (f'{{"path": {json_text(entry["path"])}, "field": {json_text(entry["field"])}, '
            f'"op": {json_text(entry["op"])}, "value": {json_text(entry["value"])}, '
            + ('"negated": true, ' if entry.get("negated") else "") + '"actual": ')


def has_result(entry: dict) -> bool:
    return not entry.get("name_list")


RESULT_CODES = {True: "1", False: "0", None: "-"}
_RESULT_OF = {v: k for k, v in RESULT_CODES.items()}


def result_codes(results: list[pa.Array]) -> pa.Array:
    """Leaf and guard results (TRUE / FALSE / UNKNOWN arrays, in template order) as one short
    text per row, a character each: "1", "0", "-" (e.g. "10-1")."""
    chars = [pc.fill_null(pc.if_else(r, "1", "0"), "-") for r in results]
    if not chars:
        return None
    return chars[0] if len(chars) == 1 else pc.binary_join_element_wise(*chars, "")


def actual_arrays(actual: list[pa.Array]) -> pa.Array:
    """Each entry's actual value (JSON text arrays, in template order) as one JSON array per row."""
    if not actual:
        return None
    args = []
    for i, a in enumerate(actual):
        args += ["[" if i == 0 else ", ", a]
    return pc.binary_join_element_wise(*args, "]", "")


def render(template: list[dict], actual: str, result: str) -> str:
    """One result's full evidence JSON from its version's template, its actual values (a JSON
    array, as evidence_actual holds them) and its results (as evidence_result codes them)."""
    values = json.loads(actual) if actual else []
    codes = iter(result or "")
    parts = []
    for entry, value in zip(template, values):
        text = _prefix(entry) + json_text(value)
        if has_result(entry):
            text += ', "result": ' + json_text(_RESULT_OF[next(codes)])
        parts.append(text + "}")
    return "[" + ", ".join(parts) + "]"


def split(entries: list[dict]) -> tuple[list[dict], str, str]:
    """`render`'s inverse: full evidence entries -> (template, actual values, result codes)."""
    template, actual, result = [], [], ""
    for e in entries:
        template.append({k: v for k, v in e.items() if k not in ("actual", "result", "amount")}
                        if not e.get("name_list") else {"name_list": True})
        actual.append(e.get("amount") if e.get("name_list") else e.get("actual"))
        if has_result(e):
            result += RESULT_CODES[e.get("result")]
    return template, json_text(actual), result


def full_evidence(table: pa.Table, templates: dict[str, list[dict]] | None = None) -> pa.Array:
    """The full evidence JSON of every row of a result table (columns evidence_version,
    evidence_actual, evidence_result), with the templates of its versions (by default
    those the table carries). Row by row: for explaining and checking, not for bulk."""
    templates = templates_of(table.schema) if templates is None else templates
    return pa.array([render(templates[v], a, r) if v is not None else None for v, a, r in zip(
        *(table.column(c).to_pylist() for c in ("evidence_version", "evidence_actual", "evidence_result")))],
        pa.string())


# ---------------------------------------------------------------- values as a clerk writes them

PERCENT_FIELDS = frozenset({"tax_growth", "rd_ratio"})
UNITS = {"age_years": "年", "registered_capital_10k": "万元", "revenue_10k": "万元", "tax_paid": "元",
         "rd_expense_10k": "万元", "prev_tax_paid": "元", "insured_count": "人", "insured_avg_12m": "人",
         "new_hires_12m": "人", "graduates_12m": "人"}
DECIMALS = 2            # shown; a ratio keeps 2 decimals of its percentage
_TYPES = {f.name: f.type for f in PORTRAIT_SCHEMA}
NO_DATA = "无数据"


def label(field: str) -> str:
    """The field's name without its unit, when its values carry the unit (营业收入, not 营业收入（万元）)."""
    text = FIELD_LABELS.get(field, field)
    return re.sub(r"（[^（）]*）$", "", text) if field in UNITS else text


def _number(value: Any, field: str) -> str:
    try:
        d = Decimal(str(value))
    except InvalidOperation:
        return str(value)
    if field in PERCENT_FIELDS:
        return decimal_text(d.quantize(Decimal(1).scaleb(-DECIMALS - 2), rounding=ROUND_HALF_UP).scaleb(2)) + "%"
    return decimal_text(d.quantize(Decimal(1).scaleb(-DECIMALS), rounding=ROUND_HALF_UP)) + UNITS.get(field, "")


def value_text(field: str, value: Any) -> str:
    """A portrait or policy value (as the evidence's JSON holds it) as a clerk writes it."""
    if value is None:
        return NO_DATA
    if isinstance(value, (list, tuple)):
        return "、".join(value_text(field, v) for v in value)
    if isinstance(value, bool):
        return "是" if value else "否"
    t = _TYPES.get(field)
    if field == "division_code":
        return place_name(str(value))
    if t is not None and (pa.types.is_decimal(t) or pa.types.is_integer(t)) and not isinstance(value, bool):
        return _number(value, field)
    if t is not None and pa.types.is_date(t) and isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return f"{value[:4]}年{value[5:7]}月{value[8:]}日"
    return str(value)


NEEDS = {"eq": "为 {}", "ne": "不为 {}", "gt": " > {}", "ge": " ≥ {}", "lt": " < {}", "le": " ≤ {}",
         "in": "为 {} 之一", "not_in": "不为 {}", "prefix_in": "以 {} 开头",
         "is_true": "为“是”", "is_false": "为“否”", "is_null": "为空", "not_null": "有数据"}


def need(leaf: dict) -> str:
    """What the policy needs of the field: `需 ≥ 3%`, or `不得 …` under a `none` group."""
    field, op, value = str(leaf.get("field") or ""), leaf.get("op"), leaf.get("value")
    if op == "between":
        lo, hi = (list(value) + [None, None])[:2] if isinstance(value, (list, tuple)) else (None, None)
        if lo is not None and hi is not None:
            text = f"在 {value_text(field, lo)} 至 {value_text(field, hi)} 之间"
        else:
            text = f" ≥ {value_text(field, lo)}" if lo is not None else f" ≤ {value_text(field, hi)}"
    elif op in NEEDS:
        shown_value = "、".join(map(str, value)) if op == "prefix_in" and isinstance(value, (list, tuple)) \
            else value_text(field, value)
        text = NEEDS[op].format(shown_value)
    else:
        text = f"{op} {value_text(field, value)}"
    return ("不得" if leaf.get("negated") else "需") + text


def condition_text(leaf: dict, actual: Any) -> str:
    """One condition with the enterprise's value: `研发费用占营业收入比例 2.87%，需 ≥ 3%`."""
    return f"{label(str(leaf.get('field') or ''))} {value_text(str(leaf.get('field') or ''), actual)}，{need(leaf)}"


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


def verdict(result: Any) -> str:
    text = str(result).lower()
    if result is True or text == "true":
        return "符合"
    if result is False or text == "false":
        return "不符合"
    return "数据缺失"


def line(leaf: dict) -> str:
    if "guard" in leaf:   # registered / active / not_dishonest checks
        guard = str(leaf["guard"])
        return f"【{verdict(leaf.get('result'))}】{GUARDS.get(guard, guard)}"
    if leaf.get("name_list"):
        return f"【名单】部门报送名单金额：{value_text('tax_paid', leaf.get('amount'))}"
    result = leaf.get("result")
    if leaf.get("negated") and result is not None:   # the leaf holds, so the `none` group fails
        result = not result
    return f"【{verdict(result)}】{condition_text(leaf, leaf.get('actual'))}"


def _conditions(ls: list[dict]) -> list[dict]:
    return [l for l in ls if "op" in l]


def readable(evidence: Any) -> str:
    """The whole evidence, one condition a line, for review workbooks and the 复核 list."""
    return "\n".join(line(l) for l in leaves(evidence))


def top_item(path: Any) -> int | None:
    m = re.search(r"\d+", str(path or ""))
    return int(m.group()) if m else None


def failing_polarity(leaf: dict) -> bool:
    """The leaf result that makes its top-level item fail: FALSE, or TRUE under a `none` group."""
    return bool(leaf.get("negated"))


MISSING_PREFIX = "数据缺失："
MISSING_BENEFIT_BASE = "兑现金额计算所需数据缺失"


def failing(outcome: str, evidence: Any, failed_item: int | None = None,
            failed_guard: str | None = None) -> str:
    """Why a result is not (yet) eligible: the failing conditions, the missing data or the guard."""
    ls = _conditions(leaves(evidence))
    if outcome == "guard_failed" and failed_guard:
        return "未满足：" + GUARDS.get(failed_guard, failed_guard)
    if outcome == "missing_data":
        missing = [l for l in ls if verdict(l.get("result")) == "数据缺失"]
        if not missing:
            return MISSING_BENEFIT_BASE
        names = dict.fromkeys(FIELD_LABELS.get(str(l.get("field")), str(l.get("field"))) for l in missing)
        return MISSING_PREFIX + "、".join(names)
    if outcome == "near_miss":
        item = [l for l in ls if failed_item is not None and top_item(l.get("path")) == failed_item]
        chosen = [l for l in item if l.get("result") is failing_polarity(l)] or \
            [l for l in ls if l.get("result") is failing_polarity(l)]
        return "；".join(condition_text(l, l.get("actual")) for l in chosen)
    return ""


_FIELD_OF_LABEL = {v: k for k, v in FIELD_LABELS.items()}


def missing_fields(reason: str) -> list[str]:
    """The portrait fields a missing-data reason names ([] for a missing benefit base)."""
    if not reason or not reason.startswith(MISSING_PREFIX):
        return []
    return [_FIELD_OF_LABEL.get(name, name) for name in reason[len(MISSING_PREFIX):].split("、")]


# ---------------------------------------------------------------- column-wise (the engine's stored rows)

def _unquoted(json_text: pa.Array) -> pa.Array:
    """JSON string literals as their text (other JSON as it is)."""
    quoted = pc.fill_null(pc.match_substring_regex(json_text, r'^".*"$'), False)
    inner = pc.utf8_slice_codeunits(json_text, 1, -1)
    inner = pc.replace_substring(pc.replace_substring(inner, '\\"', '"'), "\\\\", "\\")
    return pc.if_else(quoted, inner, json_text)


def _numbers(text: pa.Array, field: str) -> pa.Array:
    """`_number` column-wise: half-up to DECIMALS (of the percentage for a ratio), plain, unit."""
    # decimal256: a portrait value may be as large as decimal(38, 6) holds (1e32), with 18 decimals
    return _number_text(text.cast(pa.decimal256(76, 18)), field)


def number_column(field: str, values: pa.Array) -> pa.Array:
    """`value_column` of a numeric field from its typed values (ints or decimals), without
    going through their JSON text: the same text, made without parsing it back. Integers
    and decimals of up to 38 digits are rounded in their own type (a wide decimal costs
    several times the time, and the engine makes this text for every numeric field)."""
    null = pc.is_null(values)
    t = values.type
    if field in PERCENT_FIELDS or not (pa.types.is_integer(t) or pa.types.is_decimal128(t)):
        exact = values.cast(pa.decimal256(76, 18))
        return pc.if_else(null, NO_DATA, _number_text(pc.fill_null(exact, pa.scalar(Decimal(0), exact.type)), field))
    if pa.types.is_integer(t):
        plain = pc.fill_null(values, 0).cast(pa.string())
    else:
        if t.scale > DECIMALS:
            values = pc.round(values, ndigits=DECIMALS, round_mode="half_towards_infinity")
        shown = values.cast(pa.decimal128(38, DECIMALS))
        plain = decimal_json_text(pc.fill_null(shown, pa.scalar(Decimal(0), shown.type)))
    return pc.if_else(null, NO_DATA, pc.binary_join_element_wise(plain, UNITS.get(field, ""), ""))


def _number_text(exact: pa.Array, field: str) -> pa.Array:
    digits = DECIMALS + (2 if field in PERCENT_FIELDS else 0)
    rounded = pc.round(exact, ndigits=digits, round_mode="half_towards_infinity").cast(pa.decimal256(70, digits))
    if field in PERCENT_FIELDS:
        rounded = pc.multiply(rounded, pa.scalar(Decimal(100), pa.decimal256(3, 0)))
        return pc.binary_join_element_wise(decimal_json_text(rounded), "%", "")
    return pc.binary_join_element_wise(decimal_json_text(rounded), UNITS.get(field, ""), "")


def value_column(field: str, json_text: pa.Array) -> pa.Array:
    """`value_text` of each value given as JSON text (the evidence's `actual`), column-wise."""
    t = _TYPES.get(field)
    null = pc.fill_null(pc.equal(json_text, "null"), True)
    text = _unquoted(json_text)
    if t is not None and pa.types.is_boolean(t):
        text = pc.if_else(pc.equal(json_text, "true"), "是", "否")
    elif field == "division_code":
        names = place_names()
        known = pa.array(list(names), pa.string())
        named = pc.take(pa.array(list(names.values()), pa.string()), pc.index_in(text, value_set=known))
        text = pc.coalesce(named, text)
    elif t is not None and (pa.types.is_decimal(t) or pa.types.is_integer(t)):
        safe = pc.if_else(null, "0", text)
        text = _numbers(safe, field)
    elif t is not None and pa.types.is_date(t):
        text = pc.replace_substring_regex(text, r"^(\d{4})-(\d{2})-(\d{2})$", r"\1年\2月\3日")
    return pc.if_else(null, NO_DATA, text)


def _join(arrays: list[pa.Array], sep: str) -> pa.Array:
    """Join per row, skipping nulls. (pyarrow's own null_handling="skip" returns an
    empty array when every value is null, and a join of one array does not broadcast.)"""
    if len(arrays) == 1:
        return pc.fill_null(arrays[0], "")
    ended = [pc.fill_null(pc.binary_join_element_wise(a, pa.scalar(sep), ""), "") for a in arrays]
    joined = pc.binary_join_element_wise(*ended, "")
    return pc.utf8_slice_codeunits(joined, 0, -len(sep)) if sep else joined


def reasons(leaves: list[dict], value_text, result, outcome: pa.Array, failed_item: pa.Array,
            failed_guard: pa.Array) -> pa.Array:
    """`failing` for a whole column of one policy's results, built from the same
    evidence without parsing it row by row: `leaves` are the policy's condition
    leaves as the evidence writes them (path, field, op, value, negated);
    `result(path, rows)` a leaf's results and `value_text(path, rows)` its actual
    values as a clerk writes them (`value_column`), at the given row indices. Each
    kind of reason is made only from the rows it is for."""
    m = len(outcome)
    if not m:
        return pa.nulls(m, pa.string())
    made: list[tuple[pa.Array, pa.Array]] = []   # (rows, their text); the kinds' rows are disjoint

    def fill(mask: pa.Array, text_of) -> None:
        rows = pc.indices_nonzero(mask)
        if len(rows):
            made.append((rows, text_of(rows)))

    def guard_text(rows):
        named = failed_guard.take(rows)
        text = pc.binary_join_element_wise("未满足：", named, "")
        for guard, label_ in GUARDS.items():
            text = pc.if_else(pc.equal(named, guard), "未满足：" + label_, text)
        return text

    fill(pc.and_(pc.equal(outcome, "guard_failed"), pc.is_valid(failed_guard)), guard_text)

    def missing_text(rows):
        # the fields whose leaves are UNKNOWN, each named once, in leaf order
        labels = {}
        for leaf in leaves:
            if leaf["op"] in ("is_null", "not_null"):   # never UNKNOWN: it must not set the field's place
                continue
            unknown = pc.is_null(result(leaf["path"], rows))
            field = str(leaf["field"])
            labels[field] = unknown if field not in labels else pc.or_(labels[field], unknown)
        if not labels:
            return pa.repeat(pa.scalar(MISSING_BENEFIT_BASE), len(rows))
        named = [pc.if_else(u, FIELD_LABELS.get(f, f), pa.scalar(None, pa.string())) for f, u in labels.items()]
        joined = _join(named, "、")
        return pc.if_else(pc.equal(joined, ""), MISSING_BENEFIT_BASE,
                          pc.binary_join_element_wise(MISSING_PREFIX, joined, ""))

    fill(pc.equal(outcome, "missing_data"), missing_text)

    # near_miss: the conditions under the failing top-level item that make it fail
    near = pc.and_(pc.equal(outcome, "near_miss"), pc.is_valid(failed_item))
    for item in pc.unique(failed_item.filter(near)).to_pylist() if pc.any(near).as_py() else []:
        def near_text(rows, item=item):
            # A FALSE top-level item always holds a leaf of failing polarity, so (unlike
            # `failing` on hand-made evidence) no fallback is needed.
            pieces = []
            for leaf in (l for l in leaves if top_item(l.get("path")) == item):
                fails = pc.fill_null(pc.equal(result(leaf["path"], rows), failing_polarity(leaf)), False)
                text = pc.binary_join_element_wise(label(str(leaf["field"])) + " ", value_text(leaf["path"], rows),
                                                   "，" + need(leaf), "")
                pieces.append(pc.if_else(fails, text, pa.scalar(None, pa.string())))
            return _join(pieces, "；") if pieces else pa.repeat(pa.scalar(""), len(rows))

        fill(pc.and_(near, pc.fill_null(pc.equal(failed_item, item), False)), near_text)
    if not made:
        return pa.nulls(m, pa.string())
    # Put together once (a replace per kind would copy the whole column each time).
    rows = np.concatenate([r.to_numpy() for r, _ in made])
    at = np.full(m, -1, dtype=np.int64)
    at[rows] = np.arange(len(rows))
    texts = pa.concat_arrays([t.cast(pa.string()) for _, t in made])
    return texts.take(pa.array(at, mask=at < 0))
