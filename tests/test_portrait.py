"""The portrait contract of policies.md, field by field, on small hand-built feeds."""
from __future__ import annotations

import json
from datetime import date, timedelta
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings as hsettings, strategies as st

from pipelines import contracts, portrait
from pipelines.config import load_settings

AS_OF = date(2026, 1, 15)
D = Decimal


def feed(name: str, *rows: dict) -> pa.Table:
    return pa.Table.from_pylist(list(rows), schema=contracts.FEEDS[name].arrow_schema())


def reg(uscc: str = "E1", **kw) -> dict:
    return {"uscc": uscc, "name": f"{uscc}公司", "established_on": date(2020, 1, 1), "status": "存续",
            "industry_code": "C3311", **kw}


def run(as_of: date = AS_OF, **tables: pa.Table) -> dict[str, dict]:
    out = portrait.compute(tables, as_of)
    assert out.schema == contracts.PORTRAIT_SCHEMA
    rows = out.to_pylist()
    assert len({r["uscc"] for r in rows}) == len(rows)
    return {r["uscc"]: r for r in rows}


def one(as_of: date = AS_OF, **tables: pa.Table) -> dict:
    rows = run(as_of, **tables)
    assert len(rows) == 1
    return next(iter(rows.values()))


# --- shape and universe

def test_no_feeds_gives_an_empty_table_with_the_exact_schema():
    out = portrait.compute({}, AS_OF)
    assert out.num_rows == 0
    assert out.schema == contracts.PORTRAIT_SCHEMA
    assert portrait.compute({f: feed(f) for f in contracts.FEEDS}, AS_OF).schema == contracts.PORTRAIT_SCHEMA


def test_universe_is_every_uscc_of_every_feed_sorted_and_registered_only_with_a_registry_row():
    rows = run(
        registry=feed("registry", reg("E3")),
        tax=feed("tax", {"uscc": "E2", "tax_year": 2025, "revenue_10k": D(1)}),
        social_insurance=feed("social_insurance", {"uscc": "E4", "period": "2025-12", "insured_count": 3}),
        tech=feed("tech", {"uscc": "E5", "certification": "高新技术企业", "cert_no": "x",
                           "issued_on": date(2025, 1, 1), "expires_on": date(2027, 1, 1)}),
        credit=feed("credit", {"uscc": "E1", "list_type": "失信被执行人", "listed_on": date(2025, 1, 1)}),
    )
    assert list(rows) == ["E1", "E2", "E3", "E4", "E5"]
    assert [r["registered"] for r in rows.values()] == [False, False, True, False, False]
    stranger = rows["E2"]
    assert stranger["name"] is None and stranger["status"] is None and stranger["abnormal"] is None
    assert stranger["active"] is False          # not registered: never active
    assert stranger["revenue_10k"] == D(1)
    assert rows["E1"]["dishonest"] is True and rows["E1"]["registered"] is False
    assert rows["E5"]["high_tech"] is True


def test_an_enterprise_absent_from_a_feed_has_nulls_for_data_and_false_for_lists():
    row = one(registry=feed("registry", reg()))
    for field in ("tax_year", "revenue_10k", "tax_paid", "prev_tax_paid", "tax_growth", "rd_ratio",
                  "credit_rating", "general_taxpayer", "insured_count", "insured_avg_12m",
                  "new_hires_12m", "graduates_12m", "arrears", "size_class"):
        assert row[field] is None, field
    for flag in ("high_tech", "tech_sme", "specialized", "little_giant", "dishonest"):
        assert row[flag] is False, flag


def test_extra_columns_are_ignored_and_a_missing_column_in_a_non_empty_table_is_an_error():
    table = feed("registry", reg()).append_column("_row", pa.array([7]))
    assert one(registry=table)["name"] == "E1公司"
    with pytest.raises(ValueError, match="status"):
        portrait.compute({"registry": feed("registry", reg()).drop_columns(["status"])}, AS_OF)


def test_duplicate_keys_that_would_change_a_field_are_refused():
    with pytest.raises(ValueError, match="social_insurance"):
        run(social_insurance=feed("social_insurance", {"uscc": "E1", "period": "2025-01"},
                                  {"uscc": "E1", "period": "2025-01"}, {"uscc": "E1", "period": "2025-12"}))
    with pytest.raises(ValueError, match="tax"):
        run(tax=feed("tax", {"uscc": "E1", "tax_year": 2024}, {"uscc": "E1", "tax_year": 2024},
                     {"uscc": "E1", "tax_year": 2025}))
    with pytest.raises(ValueError, match="registry"):
        run(registry=feed("registry", reg("E1"), reg("E1")))


# --- registry fields

def test_registry_fields_are_copied():
    row = one(registry=feed("registry", reg(
        legal_rep="张三", address="卧龙区某路1号", phone="13800000000", division_code="411303",
        enterprise_type="有限责任公司", abnormal=True, registered_capital_10k=D("123.456789"))))
    assert (row["name"], row["legal_rep"], row["address"], row["phone"]) == (
        "E1公司", "张三", "卧龙区某路1号", "13800000000")
    assert (row["division_code"], row["enterprise_type"], row["abnormal"]) == ("411303", "有限责任公司", True)
    assert row["registered_capital_10k"] == D("123.456789")
    assert row["established_on"] == date(2020, 1, 1)


@pytest.mark.parametrize("code, section", [("C3311", "C"), ("F", "F"), ("I6510", "I"), (None, None), ("", None)])
def test_industry_section_is_the_first_letter(code, section):
    assert one(registry=feed("registry", reg(industry_code=code)))["industry_section"] == section


@pytest.mark.parametrize("status, active", [("存续", True), ("在业", True), ("迁出", False), ("停业", False),
                                            ("吊销", False), ("注销", False), (None, False)])
def test_active(status, active):
    assert one(registry=feed("registry", reg(status=status)))["active"] is active


@pytest.mark.parametrize("established, as_of, age", [
    (date(2020, 6, 15), date(2026, 6, 14), 5),   # the day before the anniversary
    (date(2020, 6, 15), date(2026, 6, 15), 6),   # the anniversary itself
    (date(2020, 6, 15), date(2020, 6, 15), 0),
    (date(2020, 12, 31), date(2021, 1, 1), 0),
    (date(2019, 1, 1), date(2025, 12, 31), 6),
    # 29 February: in a common year the anniversary is 1 March
    (date(2020, 2, 29), date(2025, 2, 28), 4),
    (date(2020, 2, 29), date(2025, 3, 1), 5),
    (date(2020, 2, 29), date(2024, 2, 28), 3),
    (date(2020, 2, 29), date(2024, 2, 29), 4),
    (date(2019, 2, 28), date(2024, 2, 29), 5),
    (date(2019, 3, 1), date(2024, 2, 29), 4),
    (None, date(2026, 1, 1), None),
])
def test_age_years_counts_whole_years(established, as_of, age):
    assert one(as_of, registry=feed("registry", reg(established_on=established)))["age_years"] == age


# --- tax

def test_tax_fields_come_from_the_newest_year_only_without_fill_in():
    row = one(tax=feed(
        "tax",
        {"uscc": "E1", "tax_year": 2023, "revenue_10k": D(5), "tax_paid": D(50), "rd_expense_10k": D(1),
         "credit_rating": "A", "general_taxpayer": True},
        {"uscc": "E1", "tax_year": 2025, "revenue_10k": None, "tax_paid": D(70), "rd_expense_10k": None,
         "credit_rating": None, "general_taxpayer": None},
    ))
    assert row["tax_year"] == 2025
    assert (row["revenue_10k"], row["rd_expense_10k"], row["credit_rating"], row["general_taxpayer"]) == (
        None, None, None, None)
    assert row["tax_paid"] == D(70)
    assert row["prev_tax_paid"] is None          # 2024 is absent; 2023 is not the previous year
    assert row["tax_growth"] is None
    assert row["rd_ratio"] is None


def _growth(paid, prev):
    rows = [{"uscc": "E1", "tax_year": 2025, "tax_paid": paid}]
    if prev is not ...:
        rows.append({"uscc": "E1", "tax_year": 2024, "tax_paid": prev})
    return one(tax=feed("tax", *rows))


@pytest.mark.parametrize("paid, prev, growth", [
    (D("120"), D("100"), D("0.2")),                       # exactly 20 %: ge 0.2 must hold
    (D("1200000.12"), D("1000000.10"), D("0.2")),
    (D("100"), D("100"), D(0)),
    (D("0"), D("100"), D(-1)),
    (D("80"), D("100"), D("-0.2")),
    (D("400"), D("300"), D("0.333333333333333333")),       # 1/3
    (D("500"), D("300"), D("0.666666666666666667")),       # 2/3, rounded
    (D("0.000001"), D("3"), D("-0.999999666666666667")),
    (D("100"), D("0"), None),
    (D("100"), None, None),
    (None, D("100"), None),
])
def test_tax_growth(paid, prev, growth):
    row = _growth(paid, prev)
    assert row["prev_tax_paid"] == prev
    assert row["tax_growth"] == growth


def test_prev_tax_paid_is_null_without_a_previous_year_row():
    row = _growth(D(100), ...)
    assert row["prev_tax_paid"] is None and row["tax_growth"] is None


@pytest.mark.parametrize("rd, growth_delta, expected", [
    # with a denominator of 2·10^12, 0.000001 is exactly half a unit of the 18th place
    (D("0.000001"), D("-0.000001"), D(0)),                   # half -> even (0)
    (D("0.000003"), D("-0.000003"), D("2E-18")),             # one and a half -> even (2)
    (D("0.000005"), D("-0.000005"), D("2E-18")),             # two and a half -> even (2)
    (D("0.000007"), D("-0.000007"), D("4E-18")),
])
def test_ratios_round_half_even_at_the_18th_place(rd, growth_delta, expected):
    base = D(2 * 10**12)
    row = one(tax=feed("tax", {"uscc": "E1", "tax_year": 2025, "rd_expense_10k": rd, "revenue_10k": base,
                               "tax_paid": base + growth_delta},
                       {"uscc": "E1", "tax_year": 2024, "tax_paid": base}))
    assert row["rd_ratio"] == expected
    assert row["tax_growth"] == -expected                     # symmetric for negative values


@pytest.mark.parametrize("rd, revenue, ratio", [
    (D("3"), D("100"), D("0.03")),
    (D("1"), D("3"), D("0.333333333333333333")),
    (D("0"), D("100"), D(0)),
    (D("0"), D("0"), None),
    (D("1"), None, None),
    (None, D("100"), None),
])
def test_rd_ratio(rd, revenue, ratio):
    row = one(tax=feed("tax", {"uscc": "E1", "tax_year": 2025, "rd_expense_10k": rd, "revenue_10k": revenue}))
    assert row["rd_ratio"] == ratio


def test_ratio_columns_are_exact_decimals():
    out = portrait.compute({"tax": feed("tax", {"uscc": "E1", "tax_year": 2025, "tax_paid": D(1)})}, AS_OF)
    for name in ("tax_growth", "rd_ratio", "insured_avg_12m"):
        assert out.schema.field(name).type == pa.decimal128(38, 18)


def test_huge_money_values_take_the_exact_slow_path():
    big = D("12345678901234567890123.456789")      # beyond int64 once unscaled
    row = _growth(big * 3, big)
    assert row["tax_growth"] == D(2)


# --- social insurance

def si(uscc, period, insured=None, new=None, grads=None, arrears=None):
    return {"uscc": uscc, "period": period, "insured_count": insured, "new_hires": new,
            "graduates_hired": grads, "arrears": arrears}


def test_insured_count_and_arrears_come_from_the_enterprise_newest_period_without_fill_in():
    rows = run(social_insurance=feed(
        "social_insurance",
        si("E1", "2025-11", 10, arrears=True), si("E1", "2025-12", None, arrears=None),
        si("E2", "2024-12", 5, arrears=False), si("E2", "2025-02", 7, arrears=True),
    ))
    assert (rows["E1"]["insured_count"], rows["E1"]["arrears"]) == (None, None)
    assert (rows["E2"]["insured_count"], rows["E2"]["arrears"]) == (7, True)


def test_the_12_month_window_ends_at_the_newest_period_of_the_whole_feed():
    rows = run(social_insurance=feed(
        "social_insurance",
        si("NEW", "2025-12", 1),                                   # makes 2025-12 the feed's newest period
        si("OLD", "2024-12", 1000, 100, 100),                      # just outside: 2025-01 .. 2025-12
        si("OLD", "2025-01", 10, 1, 0), si("OLD", "2025-03", 21, 2, 1),
        si("GONE", "2024-12", 9, 9, 9), si("GONE", "2023-05", 9, 9, 9),
    ))
    old = rows["OLD"]
    assert old["insured_count"] == 21                              # its own newest period
    assert old["insured_avg_12m"] == D("15.5")                     # (10 + 21) / 2: gaps are absent, not 0
    assert (old["new_hires_12m"], old["graduates_12m"]) == (3, 1)
    gone = rows["GONE"]
    assert gone["insured_count"] == 9
    assert (gone["insured_avg_12m"], gone["new_hires_12m"], gone["graduates_12m"]) == (None, None, None)


def test_the_window_crosses_a_year_boundary():
    rows = run(social_insurance=feed(
        "social_insurance",
        si("E1", "2024-02", 100), si("E1", "2024-03", 1), si("E1", "2024-12", 2), si("E1", "2025-02", 6),
    ))
    assert rows["E1"]["insured_avg_12m"] == D(3)                   # 2024-03 .. 2025-02


def test_twelve_full_months_and_a_repeating_average():
    rows = run(social_insurance=feed(
        "social_insurance", *[si("E1", f"2025-{m:02d}", 1 if m < 12 else 2, 1, 0) for m in range(1, 13)],
    ))
    assert rows["E1"]["insured_avg_12m"] == D("1.083333333333333333")    # 13/12
    assert rows["E1"]["new_hires_12m"] == 12 and rows["E1"]["graduates_12m"] == 0


def test_a_present_month_with_a_null_value_does_not_count_for_that_field():
    rows = run(social_insurance=feed(
        "social_insurance", si("E1", "2025-11", 10, 2, None), si("E1", "2025-12", None, None, None),
        si("E2", "2025-12", None, None, None),
    ))
    assert rows["E1"]["insured_avg_12m"] == D(10)                  # divides by the one known month
    assert (rows["E1"]["new_hires_12m"], rows["E1"]["graduates_12m"]) == (2, None)
    assert (rows["E2"]["insured_avg_12m"], rows["E2"]["new_hires_12m"], rows["E2"]["graduates_12m"]) == (
        None, None, None)


# --- certificates and credit lists

def cert(kind, issued, expires, uscc="E1", no="1"):
    return {"uscc": uscc, "certification": kind, "cert_no": no, "issued_on": issued, "expires_on": expires}


@pytest.mark.parametrize("issued, expires, valid", [
    (AS_OF, AS_OF, True),                                   # both boundaries inclusive
    (AS_OF - timedelta(days=1), AS_OF + timedelta(days=1), True),
    (AS_OF + timedelta(days=1), AS_OF + timedelta(days=9), False),   # not yet issued
    (AS_OF - timedelta(days=9), AS_OF - timedelta(days=1), False),   # expired yesterday
    (None, AS_OF + timedelta(days=1), False),
    (AS_OF - timedelta(days=1), None, False),
])
def test_certificate_validity(issued, expires, valid):
    assert one(tech=feed("tech", cert("高新技术企业", issued, expires)))["high_tech"] is valid


def test_each_certificate_type_sets_its_own_flag():
    start, end = date(2025, 1, 1), date(2027, 1, 1)
    rows = run(tech=feed(
        "tech",
        *[cert(kind, start, end, uscc=field, no=field) for kind, field in contracts.CERT_FIELDS.items()],
        cert("专精特新中小企业", date(2020, 1, 1), date(2021, 1, 1), uscc="high_tech", no="old"),
        cert(None, start, end, uscc="NONE", no="n"),
    ))
    for field in contracts.CERT_FIELDS.values():
        assert [f for f in contracts.CERT_FIELDS.values() if rows[field][f]] == [field]
    assert not any(rows["NONE"][f] for f in contracts.CERT_FIELDS.values())


@pytest.mark.parametrize("listed, removed, dishonest", [
    (AS_OF, None, True),                                    # listed today
    (AS_OF + timedelta(days=1), None, False),               # listed tomorrow
    (date(2024, 1, 1), AS_OF, False),                       # removed today: no longer listed
    (date(2024, 1, 1), AS_OF + timedelta(days=1), True),
    (date(2024, 1, 1), AS_OF - timedelta(days=1), False),
])
def test_dishonest(listed, removed, dishonest):
    row = one(credit=feed("credit", {"uscc": "E1", "list_type": "严重失信主体", "listed_on": listed,
                                     "removed_on": removed}))
    assert row["dishonest"] is dishonest


def test_dishonest_when_any_one_listing_is_current():
    row = one(credit=feed(
        "credit",
        {"uscc": "E1", "list_type": "失信被执行人", "listed_on": date(2020, 1, 1), "removed_on": date(2021, 1, 1)},
        {"uscc": "E1", "list_type": None, "listed_on": date(2025, 1, 1), "removed_on": None},
    ))
    assert row["dishonest"] is True


# --- size_class, against the table of policies.md written out here independently

SPEC_SIZE = {  # code: (large (E, R), medium, small); R None = not used
    "C3311": ((1000, 40000), (300, 2000), (20, 300)),
    "B0610": ((1000, 40000), (300, 2000), (20, 300)),
    "D4411": ((1000, 40000), (300, 2000), (20, 300)),
    "F5123": ((200, 40000), (20, 5000), (5, 1000)),
    "F52": ((300, 20000), (50, 500), (10, 100)),
    "I6510": ((300, 10000), (100, 1000), (10, 50)),
    "A0111": ((300, None), (100, None), (10, None)),
    "F5811": ((300, None), (100, None), (10, None)),     # F but neither F51 nor F52
    "I6410": ((300, None), (100, None), (10, None)),     # I but not I65
}


def _reference_size(code, employees, revenue):
    tiers = SPEC_SIZE[code]
    for label, (e, r) in zip(("大型", "中型", "小型"), tiers):
        if employees >= e and (r is None or revenue >= r):
            return label
    return "微型"


def _size_cases():
    labels = ("大型", "中型", "小型")
    for code, tiers in SPEC_SIZE.items():
        for i, (e, r) in enumerate(tiers):
            rev = D(r) if r is not None else D("0.000001")
            yield code, e, rev, labels[i]                        # exactly at the threshold
            # one employee or a hair of revenue short: the next tier down, per the ladder
            yield code, e - 1, rev, _reference_size(code, e - 1, rev)
            if r is not None:
                yield code, e, rev - D("0.000001"), _reference_size(code, e, rev - D("0.000001"))
    # a few worked out by hand:
    yield "C3311", 999, D(40000), "中型"
    yield "C3311", 5000, D(100), "微型"          # many employees, tiny revenue: the spec's "and"
    yield "F5123", 199, D(40000), "中型"
    yield "F52", 49, D(500), "小型"
    yield "I6510", 9, D(50), "微型"
    yield "A0111", 299, None, None               # revenue missing: null even where unused


@pytest.mark.parametrize("code, employees, revenue, expected", list(_size_cases()))
def test_size_class_boundaries(code, employees, revenue, expected):
    row = one(
        registry=feed("registry", reg(industry_code=code)),
        tax=feed("tax", {"uscc": "E1", "tax_year": 2025, "revenue_10k": revenue}),
        social_insurance=feed("social_insurance", si("E1", "2025-12", employees)),
    )
    assert row["size_class"] == expected


@pytest.mark.parametrize("code, employees, revenue", [("C3311", None, D(100)), ("C3311", 50, None)])
def test_size_class_is_null_when_an_input_is_missing(code, employees, revenue):
    row = one(
        registry=feed("registry", reg(industry_code=code)),
        tax=feed("tax", {"uscc": "E1", "tax_year": 2025, "revenue_10k": revenue}),
        social_insurance=feed("social_insurance", si("E1", "2025-12", employees)),
    )
    assert row["size_class"] is None


@pytest.mark.parametrize("code", [None, ""])
def test_no_industry_code_counts_as_any_other_industry(code):
    # policies.md: null only when employees or revenue is missing; 50 employees
    # in "any other industry" is 小型 (E >= 10), in 工业 with R=100 it would be 微型.
    row = one(
        registry=feed("registry", reg(industry_code=code)),
        tax=feed("tax", {"uscc": "E1", "tax_year": 2025, "revenue_10k": D(100)}),
        social_insurance=feed("social_insurance", si("E1", "2025-12", 50)),
    )
    assert row["size_class"] == "小型"


# --- a plain-Python reference, per enterprise, against random feeds

def _reference(tables: dict[str, list[dict]], as_of: date) -> dict[str, dict]:
    def months(p):
        return int(p[:4]) * 12 + int(p[5:])

    all_si = tables["social_insurance"]
    end = max((months(r["period"]) for r in all_si), default=None)
    out = {}
    usccs = sorted({r["uscc"] for rows in tables.values() for r in rows})
    for u in usccs:
        tax = {r["tax_year"]: r for r in tables["tax"] if r["uscc"] == u}
        year = max(tax, default=None)
        now = tax.get(year, {})
        prev = tax.get(year - 1, {}).get("tax_paid") if year is not None else None
        paid = now.get("tax_paid")
        mine = sorted((r for r in all_si if r["uscc"] == u), key=lambda r: months(r["period"]))
        newest = mine[-1] if mine else {}
        window = [r for r in mine if end - 12 < months(r["period"]) <= end]
        known = [r["insured_count"] for r in window if r["insured_count"] is not None]
        hires = [r["new_hires"] for r in window if r["new_hires"] is not None]
        out[u] = {
            "tax_year": year,
            "prev_tax_paid": prev,
            "tax_growth": None if paid is None or not prev else _q(paid - prev, prev),
            "rd_ratio": None if now.get("rd_expense_10k") is None or not now.get("revenue_10k")
            else _q(now["rd_expense_10k"], now["revenue_10k"]),
            "insured_count": newest.get("insured_count"),
            "insured_avg_12m": _q(D(sum(known)), D(len(known))) if known else None,
            "new_hires_12m": sum(hires) if hires else None,
            "dishonest": any(r["uscc"] == u and r["listed_on"] <= as_of
                             and (r["removed_on"] is None or r["removed_on"] > as_of)
                             for r in tables["credit"]),
        }
    return out


def _q(n: Decimal, d: Decimal) -> Decimal:
    """Reference division: Python Decimal at 80 digits, quantised half-even (no shared code)."""
    from decimal import ROUND_HALF_EVEN, localcontext
    with localcontext() as ctx:
        ctx.prec = 80
        return (D(n) / D(d)).quantize(D(1).scaleb(-18), rounding=ROUND_HALF_EVEN)


money = st.one_of(st.none(), st.decimals(min_value=0, max_value=10**6, places=2, allow_nan=False))
ids = st.sampled_from(["E1", "E2", "E3"])


@st.composite
def random_feeds(draw):
    tax = {(u, y): {"uscc": u, "tax_year": y, "tax_paid": draw(money), "revenue_10k": draw(money),
                    "rd_expense_10k": draw(money)}
           for u, y in draw(st.sets(st.tuples(ids, st.integers(2021, 2025)), max_size=8))}
    si_rows = {(u, p): {"uscc": u, "period": p,
                        "insured_count": draw(st.one_of(st.none(), st.integers(0, 50))),
                        "new_hires": draw(st.one_of(st.none(), st.integers(0, 5))),
                        "graduates_hired": None, "arrears": None}
               for u, p in draw(st.sets(st.tuples(ids, st.sampled_from(
                   [f"{y}-{m:02d}" for y in (2024, 2025) for m in range(1, 13)])), max_size=20))}
    day = st.dates(min_value=date(2025, 12, 1), max_value=date(2026, 2, 28))
    credit = [{"uscc": u, "list_type": None, "listed_on": listed,
               "removed_on": draw(st.one_of(st.none(), st.dates(min_value=listed, max_value=date(2026, 3, 31))))}
              for u, listed in draw(st.lists(st.tuples(ids, day), max_size=3, unique=True))]
    return {"tax": list(tax.values()), "social_insurance": list(si_rows.values()), "credit": credit}


@hsettings(max_examples=40, deadline=None)
@given(random_feeds())
def test_matches_a_plain_python_reference(rows):
    tables = {name: feed(name, *r) for name, r in rows.items()}
    got = run(**tables)
    want = _reference(rows, AS_OF)
    assert list(got) == list(want)
    for u, fields in want.items():
        for field, value in fields.items():
            assert got[u][field] == value, (u, field)


# --- the I/O edge

def test_build_reads_accepted_verdicts_and_writes_the_portrait_atomically(tmp_path):
    settings = load_settings({"MIANSHEN_DATA": str(tmp_path)})
    quality = settings.quality_dir(AS_OF)
    quality.mkdir(parents=True)
    validated = settings.work / "validated"
    validated.mkdir(parents=True)
    pq.write_table(feed("registry", reg("E1")), validated / "registry.parquet")
    pq.write_table(feed("tax", {"uscc": "E2", "tax_year": 2025}), validated / "tax.parquet")
    pq.write_table(feed("credit", {"uscc": "E3", "listed_on": date(2025, 1, 1)}), validated / "credit.parquet")
    verdicts = {
        "registry": {"status": "accepted", "validated_path": str(validated / "registry.parquet")},
        "tax": {"status": "accepted", "validated_path": "validated/tax.parquet"},      # relative to work/
        "credit": {"status": "rejected", "validated_path": str(validated / "credit.parquet")},
        "tech": {"status": "missing"},
    }
    for name, verdict in verdicts.items():
        (quality / f"{name}.json").write_text(json.dumps(verdict, ensure_ascii=False), encoding="utf-8")

    path = portrait.build(settings, AS_OF)
    assert path == settings.portraits / "2026-01-15.parquet"
    table = pq.read_table(path)
    assert table.schema == contracts.PORTRAIT_SCHEMA
    assert table.column("uscc").to_pylist() == ["E1", "E2"]       # the rejected credit feed is absent
    assert [p.name for p in settings.portraits.iterdir()] == ["2026-01-15.parquet"]

    (quality / "tax.json").unlink()
    assert pq.read_table(portrait.build(settings, AS_OF)).column("uscc").to_pylist() == ["E1"]


@pytest.mark.parametrize("newest, first", [("2025-12", "2025-01"), ("2025-11", "2024-12"), ("2025-01", "2024-02"),
                                           ("2000-01", "1999-02")])
def test_window_start(newest, first):
    table = feed("social_insurance", si("E1", newest), si("E2", "1990-05"))
    start, number = portrait.window(table)
    assert start == first and number == int(first[:4]) * 12 + int(first[5:])
    assert portrait.window(feed("social_insurance")) == (None, None)
