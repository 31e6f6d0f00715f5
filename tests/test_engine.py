"""The vectorised engine against an independent per-row reference, plus one example per rule."""
from __future__ import annotations

import datetime as dt
import json
import math
from decimal import ROUND_HALF_UP, Decimal as D
from fractions import Fraction

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from pipelines.evidence import failing
from pipelines import contracts, engine, evidence
from pipelines.policies import FIELD_KINDS, Benefit, Group, Leaf, Policy, Tier, load_text

AS_OF = dt.date(2026, 11, 26)
GOOD = dict(registered=True, active=True, dishonest=False)


def portrait(rows: list[dict]) -> pa.Table:
    return pa.table({f.name: [r.get(f.name) for r in rows] for f in contracts.PORTRAIT_SCHEMA},
                     schema=contracts.PORTRAIT_SCHEMA)


def leaf(field, op, value=None, path="0"):
    return Leaf(path, field, op, value)


def renumber(nodes, prefix=""):
    """Give nodes their paths ("0", "2.1", ...) as the loader would."""
    out = []
    for i, n in enumerate(nodes):
        path = f"{prefix}.{i}" if prefix else str(i)
        if isinstance(n, Leaf):
            out.append(Leaf(path, n.field, n.op, n.value))
        else:
            out.append(Group(path, n.op, tuple(renumber(n.items, path))))
    return tuple(out)


def policy(pid="P1", conditions=(), benefit=Benefit("fixed", amount=D(1000)), **kw):
    base = dict(id=pid, name=f"政策{pid}", department="区财政局", kind="condition", period="2026",
                valid_from=dt.date(2026, 1, 1), valid_to=dt.date(2026, 12, 31))
    base.update(kw)
    if base["kind"] == "manual":
        benefit = None
    return Policy(conditions=renumber(conditions), benefit=benefit, **base)


def rows_of(table):
    """Result rows by (policy, code), each with its full evidence text put back together."""
    table = table.append_column("evidence", evidence.full_evidence(table))
    return {(r["policy_id"], r["uscc"]): r for r in table.to_pylist()}


# ---------------------------------------------------------------- the reference

def ref_leaf(row, lf):
    v = row.get(lf.field)
    if lf.op == "is_null":
        return v is None
    if lf.op == "not_null":
        return v is not None
    if v is None:
        return None
    if lf.op == "is_true":
        return v is True
    if lf.op == "is_false":
        return v is False
    conv = D if FIELD_KINDS[lf.field] in ("int", "decimal") else (lambda x: x)
    x = conv(v)
    if lf.op == "between":
        lo, hi = lf.value
        return (lo is None or x >= conv(lo)) and (hi is None or x <= conv(hi))
    if lf.op == "in":
        return x in {conv(c) for c in lf.value}
    if lf.op == "not_in":
        return x not in {conv(c) for c in lf.value}
    if lf.op == "prefix_in":
        return any(x.startswith(p) for p in lf.value)
    y = conv(lf.value)
    return {"eq": x == y, "ne": x != y, "gt": x > y, "ge": x >= y, "lt": x < y, "le": x <= y}[lf.op]


def all3(vals):
    if False in vals:
        return False
    return None if None in vals else True


def any3(vals):
    if True in vals:
        return True
    return None if None in vals else False


def ref_node(row, node, leaves):
    if isinstance(node, Leaf):
        leaves[node.path] = ref_leaf(row, node)
        return leaves[node.path]
    vals = [ref_node(row, n, leaves) for n in node.items]
    if node.op == "all":
        return all3(vals)
    a = any3(vals)
    return a if node.op == "any" else (None if a is None else not a)


def half_up(x):
    return D(x).quantize(D("0.01"), rounding=ROUND_HALF_UP)


def ref_amount(p, row, list_amount):
    b = p.benefit
    if b.type == "fixed":
        return half_up(b.amount)
    if b.type == "from_list":
        return None if list_amount is None else half_up(list_amount)
    base = row.get(b.base)
    if base is None:
        return None
    base = D(base)
    if b.type == "tiered":
        hit = [t for t in b.tiers if t.min <= base]
        return half_up(max(hit, key=lambda t: t.min).amount) if hit else D("0.00")
    raw = base * (b.rate if b.type == "rate" else b.amount_each)
    if b.type == "rate" and b.min is not None:
        raw = max(raw, b.min)
    if b.cap is not None:
        raw = min(raw, b.cap)
    return half_up(raw)


GUARD = {"registered": ("registered", True), "active": ("active", True), "not_dishonest": ("dishonest", False)}


def ref_one(p, row, list_amount=None):
    leaves = {}
    items = [ref_node(row, n, leaves) for n in p.conditions]
    cond = all3(items)
    out = dict(outcome=None, amount=None, failed_item=None, failed_guard=None, leaves=leaves)
    if cond is None:
        out["outcome"] = "missing_data"
    elif cond is False:
        if items.count(False) == 1 and items.count(True) == len(items) - 1:
            out.update(outcome="near_miss", failed_item=items.index(False))
        else:
            out["outcome"] = "not_eligible"
    else:
        failed = [g for g in ("registered", "active", "not_dishonest")
                  if g in p.guards and row.get(GUARD[g][0]) is not GUARD[g][1]]
        if failed:
            out.update(outcome="guard_failed", failed_guard=failed[0])
        elif p.kind == "manual":
            out["outcome"] = "eligible"
        else:
            amount = ref_amount(p, row, list_amount)
            if amount is None:
                out["outcome"] = "missing_data"
            elif amount <= 0:
                out["outcome"] = "not_eligible"
            else:
                out.update(outcome="eligible", amount=amount)
    return out


def ref_evaluate(rows, policies, as_of, name_lists=None):
    results = {}
    by_code = {r["uscc"]: r for r in rows}
    for p in policies:
        if not (p.valid_from <= as_of <= p.valid_to):
            continue
        if p.kind == "name_list":
            listed = {}
            for e in (name_lists or {}).get(p.id, []):
                listed[e["uscc"]] = e
            population = [(by_code.get(c, {"uscc": c, "name": e["name"]}), e["amount"]) for c, e in listed.items()]
        else:
            population = [(r, None) for r in rows]
        for row, list_amount in population:
            r = ref_one(p, row, list_amount)
            if r["outcome"] != "not_eligible":
                r.update(excluded_by=None, over_budget=False, policy=p)
                results[(p.id, row["uscc"])] = r
    # exclusive groups
    buckets = {}
    for (pid, code), r in results.items():
        p = r["policy"]
        if r["outcome"] == "eligible" and p.kind != "manual" and p.exclusive_group is not None:
            buckets.setdefault((code, p.exclusive_group, p.period), []).append((pid, r))
    for members in buckets.values():
        members.sort(key=lambda m: (-m[1]["amount"], m[0]))
        for pid, r in members[1:]:
            r.update(outcome="excluded_by_group", excluded_by=members[0][0])
    # budgets
    for p in policies:
        if p.budget is None or p.kind == "manual":
            continue
        mine = [r for (pid, _), r in results.items() if pid == p.id and r["outcome"] == "eligible"]
        total = sum((r["amount"] for r in mine), D(0))
        if total > p.budget:
            for r in mine:
                if p.budget_rule == "flag":
                    r["over_budget"] = True
                else:
                    scaled = Fraction(r["amount"]) * Fraction(p.budget) / Fraction(total)
                    r["amount"] = D(math.floor(scaled * 100)) / 100
    return results


# ---------------------------------------------------------------- random portraits and policies

POOLS = {
    "division_code": ["411303", "411302"],
    "size_class": list(contracts.SIZE_CLASSES),
    "industry_code": ["C3311", "C33", "F5211", "I6510", ""],
    "insured_count": [0, 1, 5, 10, 20],
    "graduates_12m": [0, 3],
    "tax_growth": [D("-0.1"), D(0), D("0.2"), D("0.199999999999999999"), D("0.200000000000000001")],
    "revenue_10k": [D(0), D(300), D("299.999999"), D("1000.5"), D("0.333333")],
    "insured_avg_12m": [D("9.5"), D(10), D("10.333333333333333333")],
    "established_on": [dt.date(2020, 1, 1), dt.date(2023, 6, 30), AS_OF],
    "high_tech": [True, False],
    "arrears": [True, False],
}
BASES = ["insured_count", "revenue_10k", "tax_growth", "insured_avg_12m"]
FIELDS = list(POOLS)


@st.composite
def portraits(draw):
    n = draw(st.integers(1, 7))
    rows = []
    for i in range(n):
        row = {"uscc": f"U{i}", "name": f"企业{i}"}
        for f, pool in POOLS.items():
            row[f] = draw(st.sampled_from(pool + [None]))
        for g in ("registered", "active", "dishonest"):
            row[g] = draw(st.sampled_from([True] * 8 + [False, None]))
        row["dishonest"] = None if row["dishonest"] is None else not row["dishonest"]
        rows.append(row)
    return rows


def values_for(field):
    pool = POOLS[field]
    kind = FIELD_KINDS[field]
    if kind == "int":
        return st.sampled_from([D(v) for v in pool] + [D("2.5"), D(-1)])
    if kind == "decimal":
        return st.sampled_from(pool + [D("-0.05"), D("0.2")])
    return st.sampled_from(pool)


@st.composite
def leaves(draw):
    field = draw(st.sampled_from(FIELDS))
    kind = FIELD_KINDS[field]
    ops = ["eq", "ne", "in", "not_in", "is_null", "not_null"]
    if kind in ("int", "decimal", "date"):
        ops += ["gt", "ge", "lt", "le", "between"]
    if kind == "string":
        ops += ["prefix_in"]
    if kind == "bool":
        ops += ["is_true", "is_false"]
    op = draw(st.sampled_from(ops))
    if op in ("is_null", "not_null", "is_true", "is_false"):
        value = None
    elif op == "between":
        a, b = draw(st.one_of(st.none(), values_for(field))), draw(st.one_of(st.none(), values_for(field)))
        if a is not None and b is not None and a > b:
            a, b = b, a
        value = (a, b)
    elif op in ("in", "not_in"):
        value = tuple(draw(st.lists(values_for(field), min_size=1, max_size=3)))
    elif op == "prefix_in":
        value = tuple(draw(st.lists(st.sampled_from(["C", "C33", "F52", "I", "411"]), min_size=1, max_size=2)))
    else:
        value = draw(values_for(field))
    return Leaf("", field, op, value)


def nodes(depth=2):
    if depth == 0:
        return leaves()
    return st.one_of(
        leaves(), leaves(),
        st.builds(lambda op, items: Group("", op, tuple(items)),
                  st.sampled_from(["all", "any", "none"]), st.lists(nodes(depth - 1), min_size=1, max_size=3)),
    )


MONEY_VALUES = [D("0.005"), D("0.015"), D("1000.125"), D(500), D("0.03"), D("1.5"), D(0), D("-3")]


@st.composite
def benefits(draw, kind):
    if kind == "name_list":
        types = ["from_list", "fixed", "per_head"]
    else:
        types = ["fixed", "rate", "per_head", "tiered"]
    t = draw(st.sampled_from(types))
    if t == "fixed":
        return Benefit("fixed", amount=draw(st.sampled_from([D("1000"), D("0.005"), D("12.345"), D(0)])))
    if t == "from_list":
        return Benefit("from_list")
    base = draw(st.sampled_from(BASES))
    cap = draw(st.sampled_from([None, D(1000), D("1500.005"), D("0.01")]))
    if t == "rate":
        return Benefit("rate", base=base, rate=draw(st.sampled_from(MONEY_VALUES)),
                       min=draw(st.sampled_from([None, D(0), D("100.005"), D(50)])), cap=cap)
    if t == "per_head":
        return Benefit("per_head", base=base, amount_each=draw(st.sampled_from(MONEY_VALUES)), cap=cap)
    mins = draw(st.lists(st.sampled_from([D(0), D(1), D(5), D("10.5"), D(300), D("-1")]), min_size=1, max_size=3, unique=True))
    tiers = tuple(sorted((Tier(m, draw(st.sampled_from([D(100), D("200.005"), D(0)]))) for m in mins), key=lambda t: t.min))
    return Benefit("tiered", base=base, tiers=tiers)


@st.composite
def policy_sets(draw, codes):
    count = draw(st.integers(1, 4))
    out, lists = [], {}
    for i in range(count):
        kind = draw(st.sampled_from(["condition", "condition", "condition", "manual", "name_list"]))
        conds = draw(st.lists(nodes(), min_size=0 if kind != "condition" else 1, max_size=3))
        if draw(st.integers(0, 2)) == 0:   # always TRUE, so that groups and budgets get exercised
            conds = [Leaf("", "uscc", "not_null", None)]
        guards = tuple(g for g in ("registered", "active", "not_dishonest") if draw(st.booleans()) or i == 0)
        kw = dict(kind=kind, guards=guards or ("registered",), period=draw(st.sampled_from(["2026", "2026", "2027"])))
        if kind != "manual":
            kw["exclusive_group"] = draw(st.sampled_from([None, "G", "G", "G", "H"]))
            kw["budget"] = draw(st.sampled_from([None, D(1000), D("2000.5"), D(0)]))
            kw["budget_rule"] = draw(st.sampled_from(["flag", "pro_rata"]))
        if draw(st.integers(0, 9)) == 0:
            kw["valid_to"] = dt.date(2026, 6, 30)
        pid = f"P{draw(st.integers(0, 99)):02d}-{i}"
        out.append(policy(pid, conds, draw(benefits(kind)), **kw))
        if kind == "name_list":
            entries = draw(st.lists(st.tuples(st.sampled_from(codes + ["X9"]),
                                              st.sampled_from([None, D(800), D("1234.565"), D(0)])), max_size=5))
            lists[pid] = [{"uscc": c, "name": f"名单{c}", "amount": a} for c, a in entries]
    return out, lists


def list_tables(lists):
    return {pid: pa.table({"uscc": [e["uscc"] for e in es], "name": [e["name"] for e in es],
                           "amount": pa.array([e["amount"] for e in es], contracts.MONEY),
                           "note": [None] * len(es), "source": ["t.xlsx"] * len(es)})
            for pid, es in lists.items()}


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_engine_agrees_with_reference(data):
    rows = data.draw(portraits())
    policies, lists = data.draw(policy_sets([r["uscc"] for r in rows]))
    got = rows_of(engine.evaluate(portrait(rows), policies, AS_OF, list_tables(lists)))
    want = ref_evaluate(rows, policies, AS_OF, lists)
    assert set(got) == set(want)
    for key, w in want.items():
        g = got[key]
        assert g["outcome"] == w["outcome"], key
        for f in ("failed_item", "failed_guard", "excluded_by", "over_budget"):
            assert g[f] == w[f], (key, f)
        if w["outcome"] in ("eligible", "excluded_by_group"):
            assert g["amount"] == w["amount"], key
        else:
            assert g["amount"] is None
        ev = json.loads(g["evidence"])
        assert {e["path"]: e["result"] for e in ev if "path" in e} == w["leaves"]
        # The reminder text made column-wise is what reading this row's evidence gives.
        if g["outcome"] in ("near_miss", "missing_data", "guard_failed"):
            assert g["reason"] == failing(g["outcome"], g["evidence"], g["failed_item"], g["failed_guard"]), key


# ---------------------------------------------------------------- one example per rule

def run(rows, policies, **kw):
    return rows_of(engine.evaluate(portrait(rows), policies, AS_OF, **kw))


def test_result_schema_is_exact():
    table = engine.evaluate(portrait([dict(GOOD, uscc="A")]), [policy()], AS_OF)
    assert table.schema == engine.RESULT_SCHEMA
    assert engine.evaluate(portrait([]), [policy()], AS_OF).schema == engine.RESULT_SCHEMA


def test_ge_is_exact_on_ratios_and_ints():
    p = policy(conditions=[leaf("tax_growth", "ge", D("0.2")), leaf("insured_count", "ge", D(10))])
    got = run([dict(GOOD, uscc="A", tax_growth=D("0.2"), insured_count=10),
               dict(GOOD, uscc="B", tax_growth=D("0.199999999999999999"), insured_count=10)], [p])
    assert got[("P1", "A")]["outcome"] == "eligible"
    assert got[("P1", "B")]["outcome"] == "near_miss" and got[("P1", "B")]["failed_item"] == 0


def test_three_valued_groups():
    # any: TRUE beats UNKNOWN; all: FALSE beats UNKNOWN; none keeps UNKNOWN
    any_p = policy("A1", [Group("", "any", (leaf("high_tech", "is_true"), leaf("insured_count", "ge", D(5))))])
    none_p = policy("N1", [Group("", "none", (leaf("arrears", "is_true"),))])
    got = run([dict(GOOD, uscc="A", high_tech=None, insured_count=6, arrears=None),
               dict(GOOD, uscc="B", high_tech=None, insured_count=1, arrears=False)], [any_p, none_p])
    assert got[("A1", "A")]["outcome"] == "eligible"
    assert got[("A1", "B")]["outcome"] == "missing_data"
    assert got[("N1", "A")]["outcome"] == "missing_data"
    assert got[("N1", "B")]["outcome"] == "eligible"


def test_is_null_is_never_unknown_and_dates_compare_as_dates():
    p = policy(conditions=[leaf("tax_year", "is_null"), leaf("established_on", "le", dt.date(2023, 6, 30))])
    got = run([dict(GOOD, uscc="A", established_on=dt.date(2023, 6, 30)),
               dict(GOOD, uscc="B", established_on=dt.date(2023, 7, 1), tax_year=2025)], [p])
    assert got[("P1", "A")]["outcome"] == "eligible"
    assert ("P1", "B") not in got   # two items FALSE: not_eligible, not stored


def test_near_miss_needs_all_other_items_true():
    p = policy(conditions=[leaf("division_code", "eq", "411303"), leaf("insured_count", "ge", D(10))])
    got = run([dict(GOOD, uscc="A", division_code="411302", insured_count=None),
               dict(GOOD, uscc="B", division_code="411302", insured_count=12)], [p])
    assert ("P1", "A") not in got   # one FALSE, the other UNKNOWN: FALSE but no near miss
    assert got[("P1", "B")]["outcome"] == "near_miss" and got[("P1", "B")]["failed_item"] == 0


def test_guards_in_order_and_null_fails_and_not_consulted_for_near_miss():
    p = policy(conditions=[leaf("insured_count", "ge", D(1))])
    got = run([dict(uscc="A", registered=True, active=False, dishonest=True, insured_count=1),
               dict(uscc="B", registered=True, active=True, dishonest=None, insured_count=1),
               dict(uscc="C", registered=False, active=False, dishonest=True, insured_count=0)], [p])
    assert got[("P1", "A")]["failed_guard"] == "active"
    assert got[("P1", "B")]["outcome"] == "guard_failed" and got[("P1", "B")]["failed_guard"] == "not_dishonest"
    assert got[("P1", "C")]["outcome"] == "near_miss" and got[("P1", "C")]["failed_guard"] is None


def test_narrowed_guards():
    p = policy(conditions=[leaf("insured_count", "ge", D(1))], guards=("registered",))
    got = run([dict(uscc="A", registered=True, active=False, dishonest=True, insured_count=1)], [p])
    assert got[("P1", "A")]["outcome"] == "eligible"


def test_order_guard_then_null_base_then_zero_amount():
    p = policy(conditions=[leaf("division_code", "eq", "411303")],
               benefit=Benefit("per_head", base="insured_count", amount_each=D(500)))
    got = run([dict(uscc="A", division_code="411303", registered=False, insured_count=None),
               dict(GOOD, uscc="B", division_code="411303", insured_count=None),
               dict(GOOD, uscc="C", division_code="411303", insured_count=0)], [p])
    assert got[("P1", "A")]["outcome"] == "guard_failed"
    assert got[("P1", "B")]["outcome"] == "missing_data"
    assert ("P1", "C") not in got


def test_amount_types():
    base = dict(GOOD, uscc="A", insured_count=12, revenue_10k=D("1000.5"), tax_paid=D("0"))
    ps = [
        policy("F", benefit=Benefit("fixed", amount=D("0.005"))),
        policy("R", benefit=Benefit("rate", base="revenue_10k", rate=D("0.015"))),          # 15.0075 -> 15.01
        policy("RM", benefit=Benefit("rate", base="tax_paid", rate=D("0.03"), min=D(200))),  # base 0 gets min
        policy("RC", benefit=Benefit("rate", base="revenue_10k", rate=D(10), min=D(1), cap=D("9999.995"))),
        policy("H", benefit=Benefit("per_head", base="insured_count", amount_each=D(500), cap=D(5000))),
        policy("T", benefit=Benefit("tiered", base="insured_count",
                                    tiers=(Tier(D(0), D(0)), Tier(D(10), D(3000)), Tier(D(13), D(9000))))),
        policy("T0", benefit=Benefit("tiered", base="insured_count", tiers=(Tier(D(13), D(9000)),))),
    ]
    got = run([base], ps)
    amounts = {k[0]: v["amount"] for k, v in got.items()}
    assert amounts == {"F": D("0.01"), "R": D("15.01"), "RM": D("200.00"), "RC": D("10000.00"),
                       "H": D("5000.00"), "T": D("3000.00")}


def test_exclusive_group_highest_then_smaller_id():
    ps = [policy("B", benefit=Benefit("fixed", amount=D(500)), exclusive_group="稳岗"),
          policy("A", benefit=Benefit("fixed", amount=D(500)), exclusive_group="稳岗"),
          policy("C", benefit=Benefit("fixed", amount=D(300)), exclusive_group="稳岗"),
          policy("D", benefit=Benefit("fixed", amount=D(900)), exclusive_group="稳岗", period="2027")]
    got = run([dict(GOOD, uscc="U")], ps)
    assert got[("A", "U")]["outcome"] == "eligible"
    assert got[("B", "U")]["outcome"] == "excluded_by_group" and got[("B", "U")]["excluded_by"] == "A"
    assert got[("C", "U")]["excluded_by"] == "A" and got[("C", "U")]["amount"] == D("300.00")
    assert got[("D", "U")]["outcome"] == "eligible"   # another period


def test_budget_flag_is_strict():
    rows = [dict(GOOD, uscc=f"U{i}") for i in range(3)]
    at = run(rows, [policy(budget=D(3000))])
    over = run(rows, [policy(budget=D("2999.99"))])
    assert not any(r["over_budget"] for r in at.values())
    assert all(r["over_budget"] and r["amount"] == D("1000.00") for r in over.values())


def test_budget_pro_rata_rounds_down():
    rows = [dict(GOOD, uscc=f"U{i}") for i in range(3)]
    got = run(rows, [policy(budget=D(1000), budget_rule="pro_rata")])
    assert [r["amount"] for r in got.values()] == [D("333.33")] * 3
    assert not any(r["over_budget"] for r in got.values())


def test_budget_counts_after_groups():
    ps = [policy("A", benefit=Benefit("fixed", amount=D(800)), exclusive_group="G", budget=D(900)),
          policy("B", benefit=Benefit("fixed", amount=D(1000)), exclusive_group="G")]
    got = run([dict(GOOD, uscc="U1"), dict(GOOD, uscc="U2")], ps)
    assert {r["outcome"] for k, r in got.items() if k[0] == "A"} == {"excluded_by_group"}
    assert not any(r["over_budget"] for r in got.values())


def test_manual_policy():
    p = policy("M", [leaf("high_tech", "is_true")], kind="manual", exclusive_group=None)
    got = run([dict(GOOD, uscc="A", high_tech=True), dict(GOOD, uscc="B", high_tech=False)], [p])
    assert got[("M", "A")]["outcome"] == "eligible" and got[("M", "A")]["amount"] is None
    assert got[("M", "B")]["outcome"] == "near_miss"


def test_name_list_population_amounts_and_guards():
    p = policy("L", [], Benefit("from_list"), kind="name_list")
    lists = {"L": [{"uscc": "A", "name": "甲", "amount": D(100)}, {"uscc": "B", "name": "乙", "amount": None},
                   {"uscc": "Z", "name": "丙", "amount": D(5)}, {"uscc": "A", "name": "甲", "amount": D(200)}]}
    got = run([dict(GOOD, uscc="A", name="甲"), dict(GOOD, uscc="B", name="乙"), dict(GOOD, uscc="C")], [p],
              name_lists=list_tables(lists))
    assert got[("L", "A")]["amount"] == D("200.00")          # the last row for a code wins
    assert got[("L", "B")]["outcome"] == "missing_data"
    assert got[("L", "Z")]["failed_guard"] == "registered" and got[("L", "Z")]["name"] == "丙"
    assert ("L", "C") not in got


def test_not_in_force_is_not_evaluated():
    got = run([dict(GOOD, uscc="A")], [policy(valid_to=dt.date(2026, 11, 25))])
    assert got == {}


def test_evidence_shapes():
    p = policy(conditions=[leaf("tax_growth", "ge", D("0.20")), leaf("established_on", "lt", dt.date(2026, 1, 1)),
                           leaf("size_class", "in", ("小型", "微型")), leaf("insured_count", "between", (D(1), None))])
    got = run([dict(GOOD, uscc="A", tax_growth=D("0.25"), established_on=dt.date(2020, 5, 1), size_class="小型",
                    insured_count=None)], [p])
    ev = json.loads(got[("P1", "A")]["evidence"])
    assert ev[0] == {"path": "0", "field": "tax_growth", "op": "ge", "value": "0.2", "actual": "0.25", "result": True}
    assert ev[1]["value"] == "2026-01-01" and ev[1]["actual"] == "2020-05-01"
    assert ev[2]["value"] == ["小型", "微型"] and ev[2]["actual"] == "小型"
    assert ev[3] == {"path": "3", "field": "insured_count", "op": "between", "value": [1, None], "actual": None,
                     "result": None}
    assert {"guard": "not_dishonest", "field": "dishonest", "actual": False, "result": True} in ev


def test_evidence_escapes_text():
    p = policy(conditions=[leaf("industry_code", "ne", "x")])
    got = run([dict(GOOD, uscc="A", industry_code='C"3\\3\n')], [p])
    assert json.loads(got[("P1", "A")]["evidence"])[0]["actual"] == 'C"3\\3\n'


def test_loaded_yaml_numbers_are_exact():
    text = """
id: Y1
name: 测试
department: 区财政局
kind: condition
period: "2026"
valid_from: 2026-01-01
valid_to: 2026-12-31
conditions:
  - {field: tax_growth, op: ge, value: 0.2}
benefit: {type: rate, base: tax_paid, rate: 0.03}
"""
    p, errors = load_text(text)
    assert not errors
    got = run([dict(GOOD, uscc="A", tax_growth=D("0.2"), tax_paid=D("1000.5"))], [p])
    assert got[("Y1", "A")]["amount"] == D("30.02")   # 30.015 half-up


# ---------------------------------------------------------------- review: divergences from policies.md

def test_amounts_written_with_an_exponent_are_exact():
    # "Numbers written in a policy file are exact decimals": 1.0e+6 is one million, not a crash.
    ps = [policy("F", benefit=Benefit("fixed", amount=D("1.0E+6"))),
          policy("H", benefit=Benefit("per_head", base="insured_count", amount_each=D("5E+2"), cap=D("1E+4")))]
    got = run([dict(GOOD, uscc="A", insured_count=30)], ps)
    assert got[("F", "A")]["amount"] == D("1000000.00")
    assert got[("H", "A")]["amount"] == D("10000.00")


def test_pro_rata_scales_by_the_exact_budget():
    # "pro_rata scales every amount by budget/total, rounded down to the 分": the budget itself is
    # not rounded first. 2.00 x 1.515 / 3.00 = 1.01 exactly; 1.00 x 1.515 / 3.00 = 0.505 -> 0.50.
    p = policy(benefit=Benefit("per_head", base="insured_count", amount_each=D(1)), budget=D("1.515"),
               budget_rule="pro_rata")
    got = run([dict(GOOD, uscc="A", insured_count=2), dict(GOOD, uscc="B", insured_count=1)], [p])
    assert got[("P1", "A")]["amount"] == D("1.01") and got[("P1", "B")]["amount"] == D("0.50")


def test_pro_rata_with_large_amounts_never_exceeds_the_budget():
    # amounts up to 1e12 元, totals far beyond: exact integer 分, floor, total <= budget.
    rows = [dict(GOOD, uscc=f"U{i}", tax_paid=D("999999999999.99") - i) for i in range(7)]
    p = policy(benefit=Benefit("rate", base="tax_paid", rate=D("0.999999")), budget=D("3333333333333.33"),
               budget_rule="pro_rata")
    got = run(rows, [p])
    amounts = [r["amount"] for r in got.values()]
    raw = [(D("999999999999.99") - i) * D("0.999999") for i in range(7)]
    raw = [half_up(x) for x in raw]
    total = sum(raw)
    assert amounts == [D(math.floor(Fraction(a) * Fraction(p.budget) / Fraction(total) * 100)) / 100 for a in raw]
    assert sum(amounts) <= p.budget


def test_a_policy_that_fails_at_run_time_is_skipped_and_reported():
    # "At run time a bad policy is skipped and reported; it never stops the other policies."
    bad = policy("BAD", benefit=Benefit("bogus"))
    errors = []
    got = rows_of(engine.evaluate(portrait([dict(GOOD, uscc="A")]), [bad, policy("OK")], AS_OF, errors=errors))
    assert set(got) == {("OK", "A")}
    assert [e.key for e in errors] == ["BAD"] and errors[0].message


def test_portrait_values_beyond_the_comparison_type_do_not_stop_the_run():
    # registered_capital_10k is decimal(38, 6): values up to 1e32 are legal portrait values.
    p = policy(conditions=[leaf("registered_capital_10k", "ge", D("0.5"))],
               benefit=Benefit("rate", base="registered_capital_10k", rate=D("0.000001"), cap=D(5000)))
    got = run([dict(GOOD, uscc="A", registered_capital_10k=D("1E+25")),
               dict(GOOD, uscc="B", registered_capital_10k=D("0.4"))], [p])
    assert got[("P1", "A")]["outcome"] == "eligible" and got[("P1", "A")]["amount"] == D("5000.00")
    assert got[("P1", "B")]["outcome"] == "near_miss"
    assert json.loads(got[("P1", "A")]["evidence"])[0]["actual"] == "10000000000000000000000000"


def test_order_operators_on_text_compare_as_text():
    # "eq ne gt ge lt le (value is a scalar), between (value [lo, hi], inclusive ...)": no kind restriction
    # for text, so an industry range C13..C43 is a legal condition, compared in code-point order.
    p = policy(conditions=[leaf("industry_code", "between", ("C13", "C43"))])
    got = run([dict(GOOD, uscc="A", industry_code="C3311"), dict(GOOD, uscc="B", industry_code="F5211"),
               dict(GOOD, uscc="C", industry_code=None)], [p])
    assert got[("P1", "A")]["outcome"] == "eligible"
    assert got[("P1", "B")]["outcome"] == "near_miss"
    assert got[("P1", "C")]["outcome"] == "missing_data"


def test_portrait_without_registered_column_uses_the_registry_name():
    # The `registered` guard is "not in registry"; policies.md's portrait has no `registered` field,
    # so a portrait without it takes registry presence from the registry's required name.
    table = portrait([dict(GOOD, uscc="A", name="甲"), dict(GOOD, uscc="B", name=None)]).drop_columns(["registered"])
    got = rows_of(engine.evaluate(table, [policy()], AS_OF))
    assert got[("P1", "A")]["outcome"] == "eligible"
    assert got[("P1", "B")]["outcome"] == "guard_failed" and got[("P1", "B")]["failed_guard"] == "registered"


def test_exclusive_group_spans_name_list_and_condition_kinds_and_ignores_guard_failures():
    # "among one enterprise's eligible results in the same exclusive_group and period": kinds do not
    # matter, and a result that failed a guard (not eligible) cannot win or lose the group.
    ps = [policy("C1", benefit=Benefit("fixed", amount=D(500)), exclusive_group="G"),
          policy("L1", [], Benefit("from_list"), kind="name_list", exclusive_group="G"),
          policy("C0", benefit=Benefit("fixed", amount=D(9000)), exclusive_group="G", guards=("registered", "active")),
          policy("M1", [leaf("uscc", "not_null")], kind="manual", exclusive_group=None)]
    lists = {"L1": [{"uscc": "A", "name": "甲", "amount": D("500.00")}]}
    got = run([dict(uscc="A", name="甲", registered=True, active=True, dishonest=True)], ps,
              name_lists=list_tables(lists))
    assert got[("C0", "A")]["outcome"] == "eligible"            # narrowed guards: wins with 9000
    assert got[("C1", "A")]["outcome"] == "guard_failed"        # not eligible: no part in the group
    assert got[("L1", "A")]["outcome"] == "guard_failed"
    got = run([dict(GOOD, uscc="A", name="甲")], ps[:2], name_lists=list_tables(lists))
    assert got[("C1", "A")]["outcome"] == "eligible"            # tie 500 = 500: smaller id C1 < L1
    assert got[("L1", "A")]["outcome"] == "excluded_by_group" and got[("L1", "A")]["excluded_by"] == "C1"


def test_near_miss_on_a_single_item_and_on_a_group_item():
    # "exactly one item of the top-level list is FALSE and all others TRUE; the failing item is named".
    single = policy("S", [leaf("insured_count", "ge", D(10))])
    grouped = policy("G", [leaf("division_code", "eq", "411303"),
                           Group("", "any", (leaf("high_tech", "is_true"), leaf("tech_sme", "is_true")))])
    got = run([dict(GOOD, uscc="A", insured_count=3, division_code="411303", high_tech=False, tech_sme=False)],
              [single, grouped])
    assert got[("S", "A")]["outcome"] == "near_miss" and got[("S", "A")]["failed_item"] == 0
    assert got[("G", "A")]["outcome"] == "near_miss" and got[("G", "A")]["failed_item"] == 1
    ev = json.loads(got[("G", "A")]["evidence"])
    assert [e["path"] for e in ev if "path" in e] == ["0", "1.0", "1.1"]
    assert all(r["failed_item"] is None for k, r in got.items() if r["outcome"] != "near_miss")


def test_evidence_decimals_are_plain_text_even_when_tiny_or_zero():
    # Evidence keeps "the enterprise's actual value": Arrow writes 0 at scale 18 as "0E-18" and 1e-7 as
    # "1.00000000000E-7"; evidence reads "0" and "0.0000001" like the policy values do.
    p = policy(conditions=[leaf("tax_growth", "ge", D(0)), leaf("rd_ratio", "ge", D(0)),
                           leaf("insured_avg_12m", "ge", D(0)), leaf("revenue_10k", "ge", D(0))])
    got = run([dict(GOOD, uscc="A", tax_growth=D(0), rd_ratio=D("0.0000001"), insured_avg_12m=D("1E-18"),
                    revenue_10k=D("120.5")),
               dict(GOOD, uscc="B", tax_growth=D("-0.25"), rd_ratio=D("12"), insured_avg_12m=D("10.5"),
                    revenue_10k=D(0))], [p])
    a = [e["actual"] for e in json.loads(got[("P1", "A")]["evidence"]) if "path" in e]
    b = [e["actual"] for e in json.loads(got[("P1", "B")]["evidence"]) if "path" in e]
    assert a == ["0", "0.0000001", "0.000000000000000001", "120.5"]
    assert b == ["-0.25", "12", "10.5", "0"]


def test_two_threads_hand_on_what_one_thread_does():
    """Policies are evaluated two at a time; the stream is the one-thread stream, policy for
    policy and cell for cell (a seeded 1,500-enterprise portrait, the sample policies of
    tests/fixtures/evidence_before, groups, budgets and name lists included)."""
    from pathlib import Path

    import pyarrow.parquet as pq

    from pipelines.policies import load_dir

    here = Path(__file__).resolve().parent / "fixtures" / "evidence_before"
    portrait = pq.read_table(here / "portrait.parquet")
    policies, _ = load_dir(here / "policies")
    lists = {f.stem.removeprefix("name_list-"): pq.read_table(f) for f in here.glob("name_list-*.parquet")}
    one = [(p.id, part) for p, part in engine.evaluate_stream(portrait, policies, AS_OF, lists, threads=1)]
    two = [(p.id, part) for p, part in engine.evaluate_stream(portrait, policies, AS_OF, lists, threads=2)]
    assert [pid for pid, _ in two] == [pid for pid, _ in one] == sorted(pid for pid, _ in one)
    assert len(one) > 10
    for (pid, a), (_, b) in zip(one, two):
        assert b.equals(a), pid
