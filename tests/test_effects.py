"""Payout effect analysis: a hand-computed difference-in-differences on two portraits and a ledger."""
from __future__ import annotations

import csv
import datetime as dt
import io
from decimal import Decimal as D
from fractions import Fraction

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import contracts, effects, engine, ledger, warehouse
from pipelines.config import load_settings

EARLY, BEFORE, AFTER = dt.date(2026, 6, 30), dt.date(2026, 10, 1), dt.date(2026, 11, 26)
PAID_ON = dt.date(2026, 10, 15)
POLICY = "WL-T-01"

# uscc: (size_class, industry_section, insured before, after, tax before, after)
ENTERPRISES = {
    "R1": ("小型", "C", 10, 14, "1000.00", "1500.50"),
    "R2": ("小型", "C", 20, 21, "2000.00", "1900.00"),
    "R3": ("微型", "F", 3, 2, "10.00", "40.00"),
    "R4": (None, "C", 5, 9, "10.00", "90.00"),       # no size class: no comparable cell
    "C1": ("小型", "C", 10, 11, "1000.00", "1100.00"),
    "C2": ("小型", "C", 30, 30, "500.00", "500.01"),
    "C5": ("小型", "C", 5, 6, "100.00", None),       # no tax in the latest portrait
    "U1": ("小型", "C", 10, 10, "100.00", "100.00"),   # eligible but never paid: a non-recipient
    "C3": ("微型", "F", 4, 6, "10.00", "10.00"),
    "C4": ("中型", "C", 100, 200, "9000.00", "1.00"),  # no recipient of its size: not compared
}
RECIPIENTS = ("R1", "R2", "R3", "R4")


def code(key: str) -> str:
    return f"91411303{key:0>10}"


def write_portrait(settings, day: dt.date, which: int, scale: int = 1) -> None:
    rows = []
    for key, (size, section, i0, i1, t0, t1) in ENTERPRISES.items():
        tax = (t0, t1)[which]
        rows.append({"uscc": code(key), "name": key, "size_class": size, "industry_section": section,
                     "insured_count": (i0, i1)[which] * scale, "tax_paid": None if tax is None else D(tax) * scale})
    table = pa.table({f.name: [r.get(f.name) for r in rows] for f in contracts.PORTRAIT_SCHEMA},
                     schema=contracts.PORTRAIT_SCHEMA)
    settings.portraits.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, settings.portrait_path(day))


def results(keys, policy_id=POLICY, as_of=BEFORE) -> pa.Table:
    rows = [{"as_of": as_of, "policy_id": policy_id, "policy_name": "测试奖励", "department": "区人社局",
             "kind": "condition", "period": "2026", "uscc": code(k), "name": k, "outcome": "eligible",
             "amount": D("1000.00"), "failed_item": None, "failed_guard": None, "excluded_by": None,
             "exclusive_group": None, "over_budget": False, "evidence": "[]"} for k in keys]
    return pa.Table.from_pylist(rows, schema=engine.RESULT_SCHEMA)


def pay(conn, keys, policy_id, scheduled_on, paid_on):
    for k in keys:
        key = (policy_id, "2026", code(k))
        for to in ("notified", "confirmed", "approved"):
            assert ledger.transition(conn, key, to, "test", "区人社局") is None
    batch = ledger.schedule_payout(conn, scheduled_on, "r1")
    for k in keys:
        assert ledger.record_payment(conn, (policy_id, "2026", code(k)), batch, D("1000.00"), paid_on, "pay.xlsx") is None


@pytest.fixture
def settings(tmp_path):
    s = load_settings({"MIANSHEN_DATA": str(tmp_path), "MIANSHEN_POLICIES": str(tmp_path / "policies")})
    write_portrait(s, EARLY, 0, scale=100)   # older and wildly different: must not be the base
    write_portrait(s, BEFORE, 0)
    write_portrait(s, AFTER, 1)
    warehouse.migrate(s.warehouse_url)
    db = warehouse.engine_for(s.warehouse_url)
    with db.begin() as conn:
        ledger.sync_from_matches(conn, BEFORE, results([*RECIPIENTS, "U1"]), "r1")
        ledger.sync_from_matches(conn, BEFORE, results(["C1"], policy_id="WL-T-OLD"), "r1")
    with db.begin() as conn:
        pay(conn, RECIPIENTS, POLICY, dt.date(2026, 10, 14), PAID_ON)
    with db.begin() as conn:   # paid before any portrait: not analysable
        pay(conn, ["C1"], "WL-T-OLD", dt.date(2026, 5, 1), dt.date(2026, 5, 2))
    yield s
    warehouse.dispose_all()


def test_did_by_hand(settings):
    page = effects.analyse(settings)
    assert page == settings.output / "effects" / f"effects_{AFTER}.html"
    raw = page.with_suffix(".csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"))))
    ours = {r["指标"]: r for r in rows if r["政策编号"] == POLICY}
    ins, tax = ours["参保人数（人）"], ours["纳税总额（元）"]
    assert (ins["基期画像日期"], ins["末期画像日期"], ins["支付日期（起）"]) == (str(BEFORE), str(AFTER), str(PAID_ON))
    # insured: recipients +4, +1 (cell 小型/C), -1 (微型/F) -> 4/3; comparison 小型/C {+1, 0, +1, 0} -> 1/2,
    # 微型/F {+2} -> 2, weighted 2/3 and 1/3 -> 1; DiD 1/3. R4 has no size class; C4's cell has no recipient.
    assert (ins["受益企业数"], ins["对照企业数"], ins["未纳入的受益企业数"]) == ("3", "5", "1")
    assert (ins["受益企业平均变化"], ins["对照企业平均变化（按受益企业结构加权）"], ins["双重差分"]) == ("1.33", "1.00", "0.33")
    # tax: recipients 500.50, -100, 30 -> 143.50; comparison 小型/C {100, 0.01, 0} (C5 has no tax) -> 100.01/3,
    # 微型/F {0}; weighted 2/3 x 100.01/3 = 22.2244..; DiD 121.2755..
    assert (tax["受益企业数"], tax["对照企业数"]) == ("3", "4")
    assert (tax["受益企业平均变化"], tax["对照企业平均变化（按受益企业结构加权）"], tax["双重差分"]) == \
        ("143.50", "22.22", "121.28")
    old = [r for r in rows if r["政策编号"] == "WL-T-OLD"]
    assert len(old) == 2 and all("之前没有企业画像" in r["说明"] for r in old)
    text = page.read_text(encoding="utf-8")
    assert "描述性统计，非因果推断" in text and "<svg" in text and "121.28" in text


def test_exact_figures_of_the_pure_core():
    before = {u: {"size_class": "小型", "industry_section": "C", "tax_paid": D(t)} for u, t in
              (("a", "0.10"), ("b", "0.20"), ("c", "0.00"))}
    after = {u: {"size_class": "小型", "industry_section": "C", "tax_paid": D(t)} for u, t in
             (("a", "0.20"), ("b", "0.30"), ("c", "0.10"))}
    n_r, n_c, mean_r, mean_c, dropped = effects.did_figures(["a", "b"], ["c"], before, after, "tax_paid")
    # 0.1 + 0.2 would not be 0.3 in binary floats; here the means are exact.
    assert (n_r, n_c, mean_r, mean_c, dropped) == (2, 1, Fraction(1, 10), Fraction(1, 10), 0)
    assert effects.two(Fraction(1, 200)) == "0.01" and effects.two(Fraction(-1, 200)) == "-0.01"
    assert effects.paid_on("批次 PB-20261014-01 实付，支付日期 2026-10-15", dt.datetime(2026, 10, 20, 9)) == PAID_ON
    assert effects.paid_on(None, dt.datetime(2026, 10, 20, 9)) == dt.date(2026, 10, 20)


def test_no_payments_yet_and_no_portrait(tmp_path):
    s = load_settings({"MIANSHEN_DATA": str(tmp_path), "MIANSHEN_POLICIES": str(tmp_path / "policies")})
    err = io.StringIO()
    assert effects.effects_command(s, err=err) == 2 and "未找到企业画像" in err.getvalue()
    write_portrait(s, AFTER, 1)
    out = io.StringIO()
    assert effects.effects_command(s, AFTER, out=out) == 0
    page = s.output / "effects" / f"effects_{AFTER}.html"
    assert str(page) in out.getvalue() and "尚无已拨付的记录" in page.read_text(encoding="utf-8")
    warehouse.dispose_all()
