"""The matching engine: portrait x policies -> results (政策匹配库). Pure, no I/O.

Vectorised over enterprises with pyarrow.compute: a leaf is one comparison over
a whole column giving a nullable boolean array (null = UNKNOWN), and groups are
`and_kleene` / `or_kleene` / `invert`, which is exactly SQL three-valued logic.
Numbers are compared as decimal128(38, 18) (ints too), so `ge 0.2` against
exactly 0.2 is TRUE; money is never a float. Evidence JSON is built only for
the rows that are stored, with string kernels, not one dict per enterprise.
"""
from __future__ import annotations

import datetime as dt
import itertools
import os
import threading
from collections import deque
from decimal import Decimal
from functools import reduce
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc

from pipelines import contracts
from pipelines import evidence as evidence_text
from pipelines.evidence import json_actual, json_value
from pipelines.policies import FIELD_KINDS, NUMERIC_KINDS, Leaf, Node, Policy, in_force

NUM = contracts.RATIO                 # decimal128(38, 18): every numeric comparison
WIDE_NUM = pa.decimal256(52, 18)      # the same, for a portrait value of 1e20 or more (money is decimal(38, 6))
AMOUNT = pa.decimal128(38, 2)         # result amounts, to the 分
ROUND = dict(ndigits=2, round_mode="half_towards_infinity")   # == Decimal ROUND_HALF_UP

OUTCOMES = ("eligible", "missing_data", "near_miss", "guard_failed", "excluded_by_group", "not_eligible")
STORED = ("eligible", "missing_data", "near_miss", "guard_failed", "excluded_by_group")
_CODE = {o: i for i, o in enumerate(OUTCOMES)}
_OUTCOME_TEXT = pa.array(OUTCOMES, pa.string())

RESULT_SCHEMA = pa.schema(
    [
        ("as_of", pa.date32()),
        ("policy_id", pa.string()),
        ("policy_name", pa.string()),
        ("department", pa.string()),
        ("kind", pa.string()),
        ("period", pa.string()),
        ("uscc", pa.string()),
        ("name", pa.string()),
        ("outcome", pa.string()),
        ("amount", AMOUNT),
        ("failed_item", pa.int64()),
        ("failed_guard", pa.string()),
        ("excluded_by", pa.string()),
        ("exclusive_group", pa.string()),
        ("over_budget", pa.bool_()),
        # Evidence, normalised (policies.md): the policy version's template is stored once
        # (`evidence_templates`); each result keeps its actual values and its leaf and guard
        # results, in the template's order. evidence.render makes the full text.
        ("evidence_version", pa.string()),
        ("evidence_actual", pa.string()),     # a JSON array: each entry's actual value
        ("evidence_result", pa.string()),     # a character per leaf and guard: 1 / 0 / - (UNKNOWN)
        # Why the result is not (yet) eligible, as the reminder list says it (Chinese):
        # made from the evidence column-wise here, because the reminder list of a
        # province-scale night has millions of rows (evidence.reasons).
        ("reason", pa.string()),
    ]
)

# A guard: (portrait field, the value that passes). A null field fails.
GUARD_FIELDS = {"registered": ("registered", True), "active": ("active", True), "not_dishonest": ("dishonest", False)}

NAME_LIST_SCHEMA = pa.schema(
    [("uscc", pa.string()), ("name", pa.string()), ("amount", contracts.MONEY),
     ("note", pa.string()), ("source", pa.string())]
)


# ---------------------------------------------------------------- columns

class Columns:
    """The population's columns, with numeric casts and texts made once per evaluate call.
    Policies are evaluated in two threads (`evaluate_stream`): each derived column is made
    once, under its own lock, by the first thread that needs it."""

    def __init__(self, table: pa.Table):
        self.table = table
        self.n = table.num_rows
        self._made: dict[tuple[str, str], pa.Array] = {}
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()

    def _once(self, kind: str, name: str, make) -> pa.Array:
        key = (kind, name)
        if key not in self._made:
            with self._guard:
                lock = self._locks.setdefault(key, threading.Lock())
            with lock:
                if key not in self._made:
                    self._made[key] = make()
        return self._made[key]

    def json(self, name: str) -> pa.Array:
        """The field's values as JSON text, for the whole population (evidence takes its rows)."""
        return self._once("json", name, lambda: json_actual(self.raw(name)))

    def value_text(self, name: str) -> pa.Array:
        """The field's values as a clerk writes them (the reasons' text), for the whole
        population: made once per field, not once per policy that names it."""
        return self._once("text", name, lambda: evidence_text.number_column(name, self.raw(name))
                          if FIELD_KINDS[name] in NUMERIC_KINDS else evidence_text.value_column(name, self.json(name)))

    def order(self) -> pa.Array:
        """Row indices in uscc order (stable), so that stored rows come out sorted without a final sort."""
        return self._once("order", "uscc", lambda: pc.sort_indices(self.raw("uscc"), sort_keys=[("", "ascending")])
                          if self.n else pa.array([], pa.uint64()))

    def raw(self, name: str) -> pa.Array:
        return self._once("raw", name, lambda: self._raw(name))

    def _raw(self, name: str) -> pa.Array:
        if name not in self.table.column_names:
            # A portrait without the field: every value unknown.
            return pa.nulls(self.n, contracts.PORTRAIT_SCHEMA.field(name).type)
        col = self.table.column(name).combine_chunks()
        want = contracts.PORTRAIT_SCHEMA.field(name).type if name in contracts.PORTRAIT_SCHEMA.names else col.type
        return col.cast(want) if col.type != want and not pa.types.is_decimal(want) else col

    def num(self, name: str) -> pa.Array:
        return self._once("num", name, lambda: self._num(name))

    def _num(self, name: str) -> pa.Array:
        col = self.raw(name)
        try:
            return col.cast(NUM)
        except pa.ArrowInvalid:
            # A legal portrait value (money is decimal(38, 6)) beyond decimal128(38, 18): compare it
            # in a wider exact type rather than stop the run.
            return col.cast(WIDE_NUM)


def _lit(value, kind: str) -> pa.Scalar:
    if kind in NUMERIC_KINDS:
        return pa.scalar(Decimal(value), NUM)
    if kind == "date":
        return pa.scalar(value, pa.date32())
    if kind == "bool":
        return pa.scalar(value, pa.bool_())
    return pa.scalar(value, pa.string())


def _column(cols: Columns, name: str) -> pa.Array:
    return cols.num(name) if FIELD_KINDS[name] in NUMERIC_KINDS else cols.raw(name)


def _unknown_where_null(result: pa.Array, col: pa.Array) -> pa.Array:
    return pc.if_else(pc.is_null(col), pa.scalar(None, pa.bool_()), result)


_COMPARE = {"eq": pc.equal, "ne": pc.not_equal, "gt": pc.greater, "ge": pc.greater_equal,
            "lt": pc.less, "le": pc.less_equal}


def leaf_result(cols: Columns, leaf: Leaf) -> pa.Array:
    """TRUE / FALSE / null (UNKNOWN) per enterprise."""
    kind = FIELD_KINDS[leaf.field]
    col = _column(cols, leaf.field)
    op = leaf.op
    if op == "is_null":
        return pc.is_null(col)
    if op == "not_null":
        return pc.is_valid(col)
    if op == "is_true":
        return pc.equal(col, pa.scalar(True))
    if op == "is_false":
        return pc.equal(col, pa.scalar(False))
    if op in _COMPARE:
        return _COMPARE[op](col, _lit(leaf.value, kind))
    if op == "between":
        lo, hi = leaf.value
        parts = []
        if lo is not None:
            parts.append(pc.greater_equal(col, _lit(lo, kind)))
        if hi is not None:
            parts.append(pc.less_equal(col, _lit(hi, kind)))
        if not parts:
            return _unknown_where_null(pa.repeat(pa.scalar(True), cols.n), col)
        return reduce(pc.and_kleene, parts)
    if op in ("in", "not_in"):
        type_ = NUM if kind in NUMERIC_KINDS else col.type
        values = pa.array([Decimal(v) if kind in NUMERIC_KINDS else v for v in leaf.value], type_)
        found = _unknown_where_null(pc.is_in(col, value_set=values), col)
        return found if op == "in" else pc.invert(found)
    if op == "prefix_in":
        return reduce(pc.or_kleene, [pc.starts_with(col, p) for p in leaf.value])
    raise ValueError(f"unknown operator {op}")


def node_result(cols: Columns, node: Node, leaves: dict[str, pa.Array]) -> pa.Array:
    if isinstance(node, Leaf):
        res = leaf_result(cols, node)
        leaves[node.path] = res
        return res
    items = [node_result(cols, item, leaves) for item in node.items]
    if node.op == "all":
        return reduce(pc.and_kleene, items)
    anyof = reduce(pc.or_kleene, items)
    return anyof if node.op == "any" else pc.invert(anyof)


# ---------------------------------------------------------------- amounts

def _dec_type(d: Decimal, wide: bool = True) -> pa.DataType:
    """The smallest decimal type that holds d exactly (1.0E+6 has 7 integer digits, 0.005 a scale of 3)."""
    sign, digits, exp = d.as_tuple()
    scale = max(0, -exp)
    integer_digits = max(0, len(digits) + exp)
    precision = max(integer_digits + scale, 1)
    return pa.decimal256(precision, scale) if wide else pa.decimal128(precision, scale)


def _times(base: pa.Array, factor: Decimal) -> pa.Array:
    """base (decimal(38 or 52, 18)) x an exact policy number, with no precision lost."""
    return pc.multiply(base.cast(pa.decimal256(base.type.precision, 18)), pa.scalar(factor, _dec_type(factor)))


def _clamp(amount: pa.Array, low: Decimal | None, high: Decimal | None) -> pa.Array:
    if low is not None:
        amount = pc.max_element_wise(amount, pa.scalar(low, amount.type), skip_nulls=False)
    if high is not None:
        amount = pc.min_element_wise(amount, pa.scalar(high, amount.type), skip_nulls=False)
    return amount


def to_fen(amount: pa.Array) -> pa.Array:
    """Round half-up to the 分 and give the result amount type."""
    return pc.round(amount, **ROUND).cast(AMOUNT)


def raw_amounts(cols: Columns, policy: Policy, list_amount: pa.Array | None,
                rows: pa.Array | None = None) -> tuple[pa.Array, pa.Array]:
    """(amount rounded to the 分 or null, base is null) per enterprise, or per row of `rows` when given."""
    b = policy.benefit
    n = cols.n if rows is None else len(rows)

    def pick(arr: pa.Array) -> pa.Array:
        return arr if rows is None else arr.take(rows)

    no = pa.repeat(pa.scalar(False), n)
    if b is None:
        return pa.nulls(n, AMOUNT), no
    if b.type == "fixed":
        return to_fen(pa.repeat(pa.scalar(b.amount, _dec_type(b.amount, wide=False)), n)), no
    if b.type == "from_list":
        amount = pick(list_amount) if list_amount is not None else pa.nulls(n, contracts.MONEY)
        return to_fen(amount), pc.is_null(amount)
    base = pick(cols.num(b.base))
    if b.type == "rate":
        amount = _clamp(_times(base, b.rate), b.min, b.cap)
    elif b.type == "per_head":
        amount = _clamp(_times(base, b.amount_each), None, b.cap)
    elif b.type == "tiered":
        amount = pa.repeat(pa.scalar(Decimal(0), NUM), n)
        for tier in b.tiers:   # ascending: the last tier whose min <= base wins
            amount = pc.if_else(pc.greater_equal(base, pa.scalar(tier.min, NUM)), pa.scalar(tier.amount, NUM), amount)
        amount = pc.if_else(pc.is_null(base), pa.scalar(None, NUM), amount)
    else:
        raise ValueError(f"unknown benefit type {b.type}")
    return to_fen(amount), pc.is_null(base)


# ---------------------------------------------------------------- evidence

def evidence_template(policy: Policy) -> list[dict]:
    """What the evidence of every result of this policy version shares: its leaves (path,
    field, operator, value, negated), its guards, and whether a name list pays."""
    negated = policy.negated_paths()
    out: list[dict] = []
    for leaf in policy.leaves():
        entry = {"path": leaf.path, "field": leaf.field, "op": leaf.op,
                 "value": json_value(leaf.value, FIELD_KINDS[leaf.field])}
        if leaf.path in negated:
            entry["negated"] = True
        out.append(entry)
    out += [{"guard": g, "field": GUARD_FIELDS[g][0]} for g in policy.guards]
    if policy.kind == "name_list":
        out.append({"name_list": True})
    return out


def evidence_templates(policies: list[Policy]) -> dict[str, list[dict]]:
    """version -> template, for the given policies (the footer of matches.parquet)."""
    return {evidence_text.version_of(p.id, evidence_template(p)): evidence_template(p) for p in policies}


def stored_evidence(policy: Policy, cols: "Columns", rows: pa.Array, leaves: dict[str, pa.Array],
                    guards: dict[str, pa.Array], list_amount: pa.Array | None) -> tuple[pa.Array, pa.Array]:
    """(evidence_actual, evidence_result) of the given rows, in `evidence_template`'s order."""
    actual = [cols.json(leaf.field).take(rows) for leaf in policy.leaves()]
    result = [leaves[leaf.path].take(rows) for leaf in policy.leaves()]
    for g in policy.guards:
        actual.append(cols.json(GUARD_FIELDS[g][0]).take(rows))
        result.append(guards[g].take(rows))
    if policy.kind == "name_list":
        amounts = list_amount if list_amount is not None else pa.nulls(cols.n, contracts.MONEY)
        actual.append(json_actual(amounts.take(rows)))
    m = len(rows)
    return (evidence_text.actual_arrays(actual) if actual else pa.array(["[]"] * m, pa.string()),
            evidence_text.result_codes(result) if result else pa.array([""] * m, pa.string()))


# ---------------------------------------------------------------- one policy

def _population(portrait: pa.Table, policy: Policy, name_lists: dict[str, pa.Table] | None):
    """(table, list amount or None): the whole portrait, or the enterprises on the policy's list."""
    if policy.kind != "name_list":
        return portrait, None
    lst = (name_lists or {}).get(policy.id)
    if lst is None or lst.num_rows == 0:
        return portrait.slice(0, 0), pa.array([], contracts.MONEY)
    lst = _dedupe_list(lst)
    idx = pc.index_in(lst.column("uscc"), value_set=portrait.column("uscc"))
    table = portrait.take(idx)
    # Listed enterprises missing from the portrait keep their code and listed name;
    # with every other field null they fail the registered guard (or are UNKNOWN).
    uscc = lst.column("uscc").combine_chunks()
    names = pc.coalesce(table.column("name"), lst.column("name").cast(pa.string())) if "name" in lst.column_names \
        else table.column("name")
    table = table.set_column(table.schema.get_field_index("uscc"), "uscc", uscc)
    table = table.set_column(table.schema.get_field_index("name"), "name", names)
    amount = lst.column("amount").combine_chunks().cast(contracts.MONEY) if "amount" in lst.column_names \
        else pa.nulls(lst.num_rows, contracts.MONEY)
    return table, amount


def _dedupe_list(lst: pa.Table) -> pa.Table:
    """One row per uscc: the last one given wins (match.py orders rows by received_at)."""
    n = lst.num_rows
    codes = lst.column("uscc").combine_chunks()
    reversed_codes = codes.take(pa.array(range(n - 1, -1, -1), pa.int64()))
    first_in_reversed = pc.index_in(pc.unique(codes), value_set=reversed_codes).cast(pa.int64())
    last = pc.subtract(pa.scalar(n - 1, pa.int64()), first_in_reversed)
    return lst.take(pc.take(last, pc.sort_indices(last)))


class Decision:
    """One policy over its population: each enterprise's outcome code and amount, and what
    the stored rows' evidence and reasons are made from."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


def decide(portrait: pa.Table, policy: Policy, name_lists: dict[str, pa.Table] | None = None,
           cols: Columns | None = None) -> Decision:
    """Conditions, guards and amounts of one policy for its whole population (no evidence)."""
    portrait = with_registered(portrait)
    table, list_amount = _population(portrait, policy, name_lists)
    if cols is None or policy.kind == "name_list":
        cols = Columns(table)
    n = cols.n
    leaves: dict[str, pa.Array] = {}
    items = [node_result(cols, node, leaves) for node in policy.conditions]
    true_ = pa.scalar(True)
    if items:
        cond = reduce(pc.and_kleene, items)
        false_count = reduce(pc.add, [pc.fill_null(pc.invert(i), False).cast(pa.int64()) for i in items])
        true_count = reduce(pc.add, [pc.fill_null(i, False).cast(pa.int64()) for i in items])
        failed_at = reduce(pc.add, [pc.if_else(pc.fill_null(pc.invert(it), False), k, 0) for k, it in enumerate(items)])
        near = pc.and_(pc.equal(false_count, 1), pc.equal(true_count, len(items) - 1))
    else:
        cond = pa.repeat(true_, n)
        near = pa.repeat(pa.scalar(False), n)
        failed_at = pa.repeat(pa.scalar(0, pa.int64()), n)

    guards: dict[str, pa.Array] = {}
    failed_guard = pa.nulls(n, pa.string())
    for g in policy.guards:
        fname, passes = GUARD_FIELDS[g]
        guards[g] = pc.fill_null(pc.equal(cols.raw(fname), pa.scalar(passes)), False)
    for g in reversed(policy.guards):   # the first failing guard, in GUARDS order
        failed_guard = pc.if_else(guards[g], failed_guard, pa.scalar(g))
    guard_ok = pc.is_null(failed_guard)

    # Outcome codes (index into OUTCOMES), from the lowest precedence to the highest. The amount is
    # computed only where conditions are TRUE and every guard holds: elsewhere it cannot matter.
    cond_true = pc.fill_null(cond, False)
    cond_unknown = pc.is_null(cond)
    cond_false = pc.fill_null(pc.invert(cond), False)
    cand = pc.and_(cond_true, guard_ok)
    code = pa.repeat(pa.scalar(_CODE["not_eligible"], pa.int8()), n)
    amount = pa.nulls(n, AMOUNT)
    if policy.kind == "manual":
        code = pc.if_else(cand, pa.scalar(_CODE["eligible"], pa.int8()), code)
    else:
        idx = pc.indices_nonzero(cand)
        if len(idx):
            amt_c, base_null_c = raw_amounts(cols, policy, list_amount, idx)
            positive_c = pc.fill_null(pc.greater(amt_c, pa.scalar(Decimal(0), AMOUNT)), False)
            code_c = pc.if_else(base_null_c, pa.scalar(_CODE["missing_data"], pa.int8()),
                                pc.if_else(positive_c, pa.scalar(_CODE["eligible"], pa.int8()),
                                           pa.scalar(_CODE["not_eligible"], pa.int8())))
            code = pc.replace_with_mask(code, cand, code_c)
            amount = pc.replace_with_mask(amount, cand, amt_c.cast(AMOUNT))
    code = pc.if_else(pc.and_(cond_true, pc.invert(guard_ok)), pa.scalar(_CODE["guard_failed"], pa.int8()), code)
    code = pc.if_else(pc.and_(cond_false, near), pa.scalar(_CODE["near_miss"], pa.int8()), code)
    code = pc.if_else(cond_unknown, pa.scalar(_CODE["missing_data"], pa.int8()), code)
    return Decision(cols=cols, list_amount=list_amount, leaves=leaves, guards=guards, code=code,
                    amount=amount, failed_at=failed_at, failed_guard=failed_guard)


def evaluate_policy(portrait: pa.Table, policy: Policy, as_of: dt.date,
                    name_lists: dict[str, pa.Table] | None = None, keep_all: bool = False,
                    cols: Columns | None = None) -> pa.Table:
    """One policy, before exclusive groups and budgets. keep_all also returns not_eligible rows."""
    d = decide(portrait, policy, name_lists, cols)
    cols, list_amount, leaves, guards = d.cols, d.list_amount, d.leaves, d.guards
    code, amount, failed_at, failed_guard = d.code, d.amount, d.failed_at, d.failed_guard
    n = cols.n
    if keep_all:
        rows = pa.array(range(n), pa.int64())
    else:
        # The stored rows, in uscc order (the result's order within a policy).
        order = cols.order()
        stored = pc.not_equal(code, pa.scalar(_CODE["not_eligible"], pa.int8())).take(order)
        rows = order.filter(stored)
    outcome = _OUTCOME_TEXT.take(code.take(rows))
    m = len(rows)
    is_eligible = pc.equal(outcome, pa.scalar("eligible"))
    actual, result = stored_evidence(policy, cols, rows, leaves, guards, list_amount)
    failed_item = pc.if_else(pc.equal(outcome, pa.scalar("near_miss")), failed_at.take(rows),
                             pa.scalar(None, pa.int64()))
    failed_guard = pc.if_else(pc.equal(outcome, pa.scalar("guard_failed")), failed_guard.take(rows),
                              pa.scalar(None, pa.string()))
    shown = policy.leaves()
    negated = policy.negated_paths()
    shown_field = {l.path: l.field for l in shown}
    reason = evidence_text.reasons(
        [{"path": l.path, "field": l.field, "op": l.op, "value": json_value(l.value, FIELD_KINDS[l.field]),
          "negated": l.path in negated} for l in shown],
        lambda path, at: cols.value_text(shown_field[path]).take(rows.take(at)),
        lambda path, at: leaves[path].take(rows.take(at)), outcome, failed_item, failed_guard)

    def const(value, type_):
        return pa.repeat(pa.scalar(value, type_), m) if m else pa.array([], type_)

    group = policy.exclusive_group if policy.kind != "manual" else None
    return pa.table(
        {
            "as_of": const(as_of, pa.date32()),
            "policy_id": const(policy.id, pa.string()),
            "policy_name": const(policy.name, pa.string()),
            "department": const(policy.department, pa.string()),
            "kind": const(policy.kind, pa.string()),
            "period": const(policy.period, pa.string()),
            "uscc": cols.raw("uscc").take(rows).cast(pa.string()),
            "name": cols.raw("name").take(rows).cast(pa.string()),
            "outcome": outcome,
            "amount": pc.if_else(is_eligible, amount.take(rows), pa.scalar(None, AMOUNT)),
            "failed_item": failed_item,
            "failed_guard": failed_guard,
            "excluded_by": pa.nulls(m, pa.string()),
            "exclusive_group": const(group, pa.string()),
            "over_budget": const(False, pa.bool_()),
            "evidence_version": const(evidence_text.version_of(policy.id, evidence_template(policy)), pa.string()),
            "evidence_actual": actual,
            "evidence_result": result,
            "reason": reason,
        },
        schema=RESULT_SCHEMA,
    )


# ---------------------------------------------------------------- groups and budgets

def apply_groups(table: pa.Table) -> pa.Table:
    """就高不重复: per enterprise, exclusive_group and period, the highest eligible amount stays."""
    cand = pc.and_(pc.equal(table.column("outcome"), pa.scalar("eligible")), pc.is_valid(table.column("exclusive_group")))
    idx = pc.indices_nonzero(pc.fill_null(cand, False))
    if len(idx) < 2:
        return table
    sub = table.select(["uscc", "exclusive_group", "period", "amount", "policy_id"]).take(idx)
    sub = sub.append_column("row", idx)
    sub = sub.sort_by([("uscc", "ascending"), ("exclusive_group", "ascending"), ("period", "ascending"),
                       ("amount", "descending"), ("policy_id", "ascending")])
    keys = [sub.column(k).combine_chunks() for k in ("uscc", "exclusive_group", "period")]
    n = sub.num_rows
    same = reduce(pc.and_, [pc.equal(k.slice(1), k.slice(0, n - 1)) for k in keys])
    start = pa.concat_arrays([pa.array([True]), pc.invert(same)])
    pid = sub.column("policy_id").combine_chunks()
    winner = pc.fill_null_forward(pc.if_else(start, pid, pa.scalar(None, pa.string())))
    losers = pc.indices_nonzero(pc.invert(start))
    if len(losers) == 0:
        return table
    lost = pa.table({"row": sub.column("row").take(losers), "by": winner.take(losers)}).sort_by("row")
    mask = pc.is_in(pa.array(range(table.num_rows), pa.uint64()), value_set=lost.column("row").cast(pa.uint64()))
    outcome = pc.replace_with_mask(table.column("outcome").combine_chunks(), mask,
                                   pa.repeat(pa.scalar("excluded_by_group"), len(lost)))
    excluded_by = pc.replace_with_mask(table.column("excluded_by").combine_chunks(), mask,
                                       lost.column("by").combine_chunks())
    table = table.set_column(table.schema.get_field_index("outcome"), "outcome", outcome)
    return table.set_column(table.schema.get_field_index("excluded_by"), "excluded_by", excluded_by)


def _pro_rata(amount: pa.Array, budget: Decimal, total: Decimal) -> pa.Array:
    """floor(amount x budget / total) to the 分, in exact integers: the budget is not rounded first.

    In 分: new = floor(fen x m / q) with m / q = budget / total, as Python integers (no precision limit).
    """
    num, den = budget.as_integer_ratio()
    tnum, tden = total.as_integer_ratio()
    m, q = num * tden, den * tnum
    try:
        fen = pc.multiply(amount.cast(pa.decimal128(34, 2)), pa.scalar(Decimal(100), pa.decimal128(3, 0))).cast(pa.int64())
    except pa.ArrowInvalid:   # beyond 9.2e18 分: exact but slow
        fen_list = [None if a is None else int(a * 100) for a in amount.to_pylist()]
        return pa.array([None if f is None else Decimal((f * m) // q).scaleb(-2) for f in fen_list], AMOUNT)
    # Python integers: exact whatever the size of m and q; the result is <= the amount, so it fits int64.
    scaled = pa.array([None if f is None else (f * m) // q for f in fen.to_pylist()], pa.int64())
    return pc.multiply(scaled.cast(pa.decimal128(20, 0)), pa.scalar(Decimal("0.01"), pa.decimal128(2, 2))).cast(AMOUNT)


def apply_budget(part: pa.Table, policy: Policy) -> pa.Table:
    """One policy's rows: flag or scale when its eligible total strictly exceeds the budget."""
    if policy.budget is None or policy.kind == "manual" or part.num_rows == 0:
        return part
    eligible = pc.equal(part.column("outcome"), pa.scalar("eligible"))
    total = pc.sum(pc.if_else(eligible, part.column("amount"), pa.scalar(None, AMOUNT))).as_py() or Decimal(0)
    if total <= policy.budget:
        return part
    if policy.budget_rule == "pro_rata":
        amount = part.column("amount").combine_chunks()
        scaled = _pro_rata(pc.fill_null(amount, Decimal(0)), policy.budget, total)
        new = pc.if_else(eligible, scaled, amount)
        return part.set_column(part.schema.get_field_index("amount"), "amount", new)
    return part.set_column(part.schema.get_field_index("over_budget"), "over_budget", eligible)


# ---------------------------------------------------------------- all policies

def with_registered(portrait: pa.Table) -> pa.Table:
    """The portrait with its `registered` flag (the guard's field).

    policies.md's portrait has no such column; a portrait without it takes registry presence from
    the registry's required `name` (an enterprise with no registry row has a null name).
    """
    if "registered" in portrait.column_names:
        return portrait
    name = portrait.column("name") if "name" in portrait.column_names else pa.nulls(portrait.num_rows, pa.string())
    return portrait.append_column("registered", pc.is_valid(name))


def _eligible_core(policy: Policy, d: Decision) -> pa.Table:
    """The eligible rows of one decision, with what 就高不重复 ranks them by."""
    rows = pc.indices_nonzero(pc.equal(d.code, pa.scalar(_CODE["eligible"], pa.int8())))
    m = len(rows)
    return pa.table({"uscc": d.cols.raw("uscc").take(rows).cast(pa.string()),
                     "exclusive_group": pa.repeat(pa.scalar(policy.exclusive_group, pa.string()), m),
                     "period": pa.repeat(pa.scalar(policy.period, pa.string()), m),
                     "amount": d.amount.take(rows),
                     "policy_id": pa.repeat(pa.scalar(policy.id, pa.string()), m),
                     "outcome": pa.repeat(pa.scalar("eligible"), m),
                     "excluded_by": pa.nulls(m, pa.string())})


def group_losers(portrait: pa.Table, active: list[Policy], name_lists, cols: Columns,
                 on_error, pool=None) -> dict[str, pa.Table]:
    """就高不重复 decided before any evidence is made: policy id -> its results that another
    policy of its group outranks (uscc, excluded_by). Only policies that share an
    exclusive group and period with another are evaluated here (without evidence; in
    `pool`'s threads when given); a policy that fails is passed to on_error and left out,
    as the main pass leaves it out."""
    by_group: dict[tuple, list[Policy]] = {}
    for p in active:
        if p.kind != "manual" and p.exclusive_group is not None:
            by_group.setdefault((p.exclusive_group, p.period), []).append(p)
    grouped = [p for group in by_group.values() if len(group) > 1 for p in group]

    def core(p: Policy) -> pa.Table:
        return _eligible_core(p, decide(portrait, p, name_lists, cols))

    made = [pool.submit(core, p) for p in grouped] if pool is not None else None
    cores = []
    for i, p in enumerate(grouped):
        try:
            cores.append(made[i].result() if made is not None else core(p))
        except Exception as exc:  # noqa: BLE001 - one bad policy never stops the others
            on_error(p, exc)
    if not cores:
        return {}
    ranked = apply_groups(pa.concat_tables(cores))
    lost = ranked.filter(pc.equal(ranked.column("outcome"), "excluded_by_group"))
    ids = lost.column("policy_id")
    return {pid: lost.filter(pc.equal(ids, pid)).select(["uscc", "excluded_by"])
            for pid in pc.unique(ids).to_pylist()}


def mark_excluded(part: pa.Table, lost: pa.Table | None) -> pa.Table:
    """One policy's results with the rows `group_losers` found set to excluded_by_group."""
    if lost is None or lost.num_rows == 0 or part.num_rows == 0:
        return part
    where = pc.index_in(part.column("uscc"), value_set=lost.column("uscc"))
    hit = pc.is_valid(where)
    outcome = pc.if_else(hit, pa.scalar("excluded_by_group"), part.column("outcome"))
    by = pc.if_else(hit, lost.column("excluded_by").combine_chunks().take(where), part.column("excluded_by"))
    part = part.set_column(part.schema.get_field_index("outcome"), "outcome", outcome)
    return part.set_column(part.schema.get_field_index("excluded_by"), "excluded_by", by)


EVAL_THREADS = min(2, os.cpu_count() or 1)


def evaluate_stream(portrait: pa.Table, policies: list[Policy], as_of: dt.date,
                    name_lists: dict[str, pa.Table] | None = None, errors: list | None = None,
                    apply_budgets: bool = True, threads: int = EVAL_THREADS) -> Iterator[tuple[Policy, pa.Table]]:
    """Every policy in force on `as_of`, one at a time in id order: (policy, its final results).

    Nothing holds the night's results at once: exclusive groups are decided first from the
    grouped policies' eligible rows alone (`group_losers`), so each policy's results are
    final when made; its budget is over its own rows. apply_budgets=False leaves budgets
    out (a shard of the enterprises: the merge applies them).

    `threads` policies are evaluated at once (Arrow's kernels run outside the GIL, so a
    second thread is a second core); the results still come in id order, and at most
    `threads` policies' results are held beside the one being handed on.

    A policy that fails at run time is skipped and, when `errors` is given, reported there as
    a PolicyError (file, line 0, key = the policy id); it never stops the other policies.
    """
    from concurrent.futures import ThreadPoolExecutor

    from pipelines.policies import PolicyError

    portrait = with_registered(portrait)
    active = sorted(in_force(policies, as_of), key=lambda p: p.id)
    cols = Columns(portrait)
    failed: set[str] = set()

    def on_error(p: Policy, exc: Exception) -> None:
        if p.id not in failed and errors is not None:
            errors.append(PolicyError(p.file or p.id, 0, p.id, f"政策运行出错，已跳过：{type(exc).__name__}: {exc}"))
        failed.add(p.id)

    def final(p: Policy) -> pa.Table:
        part = mark_excluded(evaluate_policy(portrait, p, as_of, name_lists, cols=cols), losers.get(p.id))
        return apply_budget(part, p) if apply_budgets else part

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        losers = group_losers(portrait, active, name_lists, cols, on_error, pool)
        todo = iter([p for p in active if p.id not in failed])
        pending = deque((p, pool.submit(final, p)) for p in itertools.islice(todo, max(1, threads)))
        while pending:
            p, result = pending.popleft()
            if (after := next(todo, None)) is not None:
                pending.append((after, pool.submit(final, after)))
            try:
                part = result.result()
            except Exception as exc:  # noqa: BLE001 - one bad policy never stops the others
                on_error(p, exc)
                continue
            yield p, part


def evaluate(portrait: pa.Table, policies: list[Policy], as_of: dt.date,
             name_lists: dict[str, pa.Table] | None = None, errors: list | None = None,
             apply_budgets: bool = True) -> pa.Table:
    """`evaluate_stream`'s results as one table (RESULT_SCHEMA): policies in id order, each
    policy's rows in code order. For a district, a test or the sandbox; the nightly match
    stage writes the stream to Parquet policy by policy instead."""
    parts, ran = [], []
    for policy, part in evaluate_stream(portrait, policies, as_of, name_lists, errors, apply_budgets):
        parts.append(part)
        ran.append(policy)
    table = pa.concat_tables(parts) if parts else RESULT_SCHEMA.empty_table()
    return evidence_text.with_templates(table, evidence_templates(ran))
