"""再确认: the re-check before payout (pure findings, and the nightly moves with the
复核表 returned by the department), on SQLite and PostgreSQL."""
from __future__ import annotations

import json
from datetime import date, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
from openpyxl import load_workbook

from h5_support import code, db_url, engine, match, settings, write_matches, write_policy, write_portrait  # noqa: F401
from pipelines import handoff, ledger, recheck, warehouse
from pipelines.policies import load_text
from pipelines.recheck import Enterprise, Night, NightResult
from test_returns import handle, statuses

D1 = date(2026, 11, 26)
P = "WL-RS-2026-01"
KEY = (P, "2026", code(1))


def night(**kw) -> Night:
    n = Night(**kw)
    n.enterprises = kw.get("enterprises", {code(1): Enterprise(True, "存续", True)})
    return n


def test_a_result_that_still_qualifies_passes():
    assert recheck.finding(P, KEY, night(evaluated={P}, results={KEY: NightResult("eligible")})) is None


def test_guards_give_the_reasons_lifecycle_md_shows():
    listed = Enterprise(True, "存续", True, (("失信被执行人", date(2026, 11, 21)),))
    assert recheck.finding(P, KEY, night(enterprises={code(1): listed})) == "列入失信被执行人名单（2026-11-21）"
    gone = Enterprise(True, "注销", False)
    assert recheck.finding(P, KEY, night(enterprises={code(1): gone})) == "登记状态为注销"
    assert recheck.finding(P, KEY, night(enterprises={})) == "在登记库中无登记信息"


def test_conditions_are_rechecked_only_for_a_policy_evaluated_tonight():
    near = NightResult("near_miss", reason="近12个月平均参保人数不低于10（实际：8）")
    assert recheck.finding(P, KEY, night(evaluated={P}, results={KEY: near})) == \
        "条件不再满足：近12个月平均参保人数不低于10（实际：8）"
    assert recheck.finding(P, KEY, night(evaluated={P})) == "条件不再满足（本次比对不符合条件）"
    assert recheck.finding(P, KEY, night(evaluated=set())) is None      # out of force: guards only
    policy, errors = load_text("id: L\nname: 名单\ndepartment: 区科技局\nkind: name_list\nperiod: '2026'\n"
                               "valid_from: 2026-01-01\nvalid_to: 2026-12-31\n"
                               "benefit: {type: fixed, amount: 1000}\n")
    assert not errors
    assert recheck.finding("L", ("L", "2026", code(1)), night(evaluated={"L"}, policies={"L": policy})) == \
        "已不在已受理的名单中"


# ---------------------------------------------------------------- the nightly moves

def write_credit(settings, as_of, listings):
    """The validated credit delivery of as_of (and its verdict), as validation leaves them."""
    path = settings.validated_path("credit", as_of)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"uscc": pa.array([u for u, _ in listings], pa.string()),
                             "list_type": pa.array(["失信被执行人"] * len(listings), pa.string()),
                             "listed_on": pa.array([d for _, d in listings], pa.date32()),
                             "removed_on": pa.nulls(len(listings), pa.date32())}), path)
    verdict = settings.verdict_path("credit", as_of)
    verdict.parent.mkdir(parents=True, exist_ok=True)
    verdict.write_text(json.dumps({"status": "accepted", "validated_path": str(path)}), encoding="utf-8")


def night_run(settings, as_of, rows, people, run_id, status=None, listed=()):
    write_portrait(settings, as_of, people, status=status, dishonest={u for u, _ in listed})
    write_credit(settings, as_of, list(listed))
    write_matches(settings, as_of, rows)
    return handoff.ledger_and_outputs(settings, as_of, run_id)


def review_back(settings, tmp_path, book, answers, name):
    wb = load_workbook(book)
    ws = wb.active
    header = [c.value for c in ws[3]]
    col = {h: i + 1 for i, h in enumerate(header)}
    for r in range(4, ws.max_row + 1):
        uscc = ws.cell(r, col["uscc"]).value
        if uscc in answers:
            result, opinion = answers[uscc]
            ws.cell(r, col["审核结果"], result)
            ws.cell(r, col["审核意见"], opinion)
    out = tmp_path / "inbox" / "_reviews" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    wb.save(out)
    return handle(settings, "_reviews", out)


def test_suspended_before_payout_then_resumed_overridden_or_rejected(settings, tmp_path):
    write_policy(settings, P, None)
    people = {code(n): ("", "") for n in range(1, 5)}
    rows = [match(n=n) for n in range(1, 5)]
    night_run(settings, D1, rows, people, "r1")
    with warehouse.connect(settings.warehouse_url).begin() as conn:
        for n in range(1, 5):
            for to in ("confirmed", "approved"):
                assert ledger.transition(conn, (P, "2026", code(n)), to, "t", None) is None

    # night 2: code 1 listed as 失信, codes 2 and 4 注销: suspended, not paid, on the 复核表
    d2 = D1 + timedelta(days=1)
    gone = {code(2): "注销", code(4): "吊销"}
    out = night_run(settings, d2, rows, people, "r2", status=gone, listed=[(code(1), date(2026, 11, 21))])
    assert (out["recheck_suspended"], out["payout_items"]) == (3, 1)
    assert statuses(settings) == {code(1): "suspended", code(2): "suspended", code(3): "scheduled",
                                  code(4): "suspended"}
    book = settings.run_dir(d2) / "review" / "区人力资源和社会保障局" / f"{P}_复核表.xlsx"
    ws = load_workbook(book).active
    header = [c.value for c in ws[3]]
    reasons = {r[header.index("uscc")]: r[header.index("暂缓拨付原因")]
               for r in ws.iter_rows(min_row=4, max_row=6, values_only=True)}
    assert reasons == {code(1): "列入失信被执行人名单（2026-11-21）", code(2): "登记状态为注销",
                       code(4): "登记状态为吊销"}

    # the department: 通过 without 审核意见 is refused; with one it overrides; 不通过 rejects
    result = review_back(settings, tmp_path, book, {code(2): ("通过", None), code(4): ("不通过", "已吊销")}, "a.xlsx")
    assert "须填写审核意见" in result.rows[1].error and result.rows[2].error is None
    result = review_back(settings, tmp_path, book, {code(2): ("通过", "注销前已完成招用，经核实同意拨付")}, "b.xlsx")
    assert [o.error for o in result.rows if o.values.get("审核结果")] == [None]
    assert statuses(settings)[code(2)] == "approved" and statuses(settings)[code(4)] == "rejected"

    # night 3: code 1's listing is gone: back to approved and paid; code 2 (still 注销) paid by the override
    d3 = d2 + timedelta(days=1)
    out = night_run(settings, d3, rows, people, "r3", status=gone)
    assert out["recheck_resumed"] == 1 and out["payout_items"] == 2
    assert statuses(settings) == {code(1): "scheduled", code(2): "scheduled", code(3): "scheduled",
                                  code(4): "rejected"}
    with warehouse.connect(settings.warehouse_url).connect() as conn:
        hist = [(h["to_status"], h["note"]) for h in ledger.history(conn, KEY)]
    assert ("suspended", "再确认未通过，暂缓拨付：列入失信被执行人名单（2026-11-21）") in hist
    assert hist[-2:] == [("approved", "再确认通过，恢复审核通过"), ("scheduled", "列入拨付批次 PB-20261128-01")]


def test_without_the_nights_portrait_nothing_is_paid_or_suspended(settings):
    write_policy(settings, P, None)
    write_matches(settings, D1, [match(n=1)])
    handoff.ledger_and_outputs(settings, D1, "r1")
    with warehouse.connect(settings.warehouse_url).begin() as conn:
        for to in ("confirmed", "approved"):
            ledger.transition(conn, KEY, to, "t", None)
    write_matches(settings, D1 + timedelta(days=1), [match(n=1)])
    out = handoff.ledger_and_outputs(settings, D1 + timedelta(days=1), "r2")
    assert out["payout_items"] == 0 and statuses(settings) == {code(1): "approved"}
