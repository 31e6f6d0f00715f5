"""The lists a night hands on: workbook form, SMS text, publicity privacy,
deterministic payout batches across a crash and rerun."""
from __future__ import annotations

import csv
from datetime import date, timedelta
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from openpyxl import load_workbook

from h5_support import (code, db_url, engine, match, settings, write_matches,  # noqa: F401
                        write_policy, write_portrait)
from pipelines import handoff, ledger, warehouse
from pipelines.outputs import payout, reminders, sms
from pipelines.outputs.workbook import Col, csv_bytes, workbook_bytes, write_workbook

D1 = date(2026, 11, 26)


def test_sms_message_reads_exactly_like_the_spec():
    assert sms.message("XX公司", "小微企业稳岗奖励", Decimal("5000.00"), date(2026, 12, 16),
                       "区人社局 0377-6xxxxxxx") == (
        "【卧龙区惠企政策】XX公司：经数据比对，贵单位符合“小微企业稳岗奖励”，预计可享受 5,000.00 元。"
        "请于2026年12月16日前登录平台确认申领意愿并签署信用承诺。咨询：区人社局 0377-6xxxxxxx")


def test_sms_rows_carry_the_deadline_in_working_days_and_the_guides_contact(settings):
    (settings.policies / "WL-RS-2026-01.yaml").write_text(
        "id: WL-RS-2026-01\nname: 小微企业稳岗奖励\ndepartment: 区人力资源和社会保障局\nkind: condition\n"
        "period: '2026'\nvalid_from: 2026-01-01\nvalid_to: 2026-12-31\nconfirm_days: 5\n"
        "conditions: [{field: arrears, op: is_false}]\nbenefit: {type: fixed, amount: 5000}\n"
        "guide: {contact: 区人社局就业促进股，0377-63211001}\n", encoding="utf-8")
    write_portrait(settings, date(2026, 9, 29), {code(1): ("13812345678", "王建国")})
    write_matches(settings, date(2026, 9, 29), [match(n=1)])
    handoff.ledger_and_outputs(settings, date(2026, 9, 29), "r1")
    with open(settings.run_dir(date(2026, 9, 29)) / "sms" / "短信待发清单.csv", encoding="utf-8-sig") as fh:
        [row] = list(csv.DictReader(fh))
    # 5 working days after Tue 09-29: 09-30, (National Day 10-01..07), 10-08, 10-09, Sat 10-10 (调休), 10-12
    assert row["确认截止日期"] == "2026-10-12"
    assert row["短信内容"].endswith("请于2026年10月12日前登录平台确认申领意愿并签署信用承诺。"
                                  "咨询：区人社局就业促进股，0377-63211001")


def test_no_sms_for_a_flag_policy_held_over_budget_until_the_night_of_its_release(settings):
    write_portrait(settings, D1, {code(1): ("13812345678", "王建国"), code(2): ("13812345679", "李四")})
    rows = [match(n=1), match(n=2, policy_id="WL-KJ-01", over_budget=True)]
    out = run(settings, D1, rows)
    assert out["sms"] == 1
    with warehouse.connect(settings.warehouse_url).connect() as conn:
        assert [r["uscc"] for r in ledger.rows_in(conn, "eligible")] == [code(2)]   # waits, still eligible
    d2 = D1 + timedelta(days=1)
    assert run(settings, d2, rows, "r2")["sms"] == 0
    out = run(settings, D1 + timedelta(days=2), rows, "r3", release_holds=["WL-KJ-01:2026"])
    assert out["sms"] == 1
    with open(settings.run_dir(D1 + timedelta(days=2)) / "sms" / "短信待发清单.csv", encoding="utf-8-sig") as fh:
        assert [r["统一社会信用代码"] for r in csv.DictReader(fh)] == [code(2)]


def test_workbook_has_the_government_form_and_neutralises_formulas(tmp_path):
    cols = (Col("序号", "seq", "int"), Col("企业名称", "name"), Col("金额（元）", "amount", "money"))
    rows = [{"seq": 1, "name": "=HYPERLINK(\"http://x\")", "amount": Decimal("1234.5")},
            {"seq": 2, "name": "@SUM(A1)", "amount": Decimal("0.5")},
            {"seq": 3, "name": "南阳市卧龙区某某有限公司", "amount": None}]
    path = write_workbook(tmp_path / "t.xlsx", "测试清单", cols, rows, unit="某单位", made_on=D1)
    ws = load_workbook(path).active
    assert "A1:C1" in [str(r) for r in ws.merged_cells.ranges] and ws["A1"].value == "测试清单"
    assert ws["A2"].value == "制表日期：2026年11月26日"
    assert ws["A3"].font.bold and ws.freeze_panes == "A4"
    assert ws["B4"].value == "'=HYPERLINK(\"http://x\")" and ws["B4"].data_type == "s"
    assert ws["B5"].value == "'@SUM(A1)"
    assert ws["C4"].number_format == "#,##0.00" and ws["C4"].border.left.style == "thin"
    assert (ws["A7"].value, ws["C7"].value) == ("合计", 1235)
    assert ws["A9"].value == "制表单位：某单位"
    assert ws.column_dimensions["B"].width >= 24   # fitted to the longest Chinese name
    data = csv_bytes(cols, rows)
    assert data.startswith(b"\xef\xbb\xbf")
    lines = list(csv.reader(data.decode("utf-8-sig").splitlines()))
    assert lines[1] == ["1", "'=HYPERLINK(\"http://x\")", "1234.50"]


def run(settings, as_of, rows, run_id="r1", **kw):
    write_matches(settings, as_of, rows)
    return handoff.ledger_and_outputs(settings, as_of, run_id, **kw)


def approve_all(settings):
    with warehouse.connect(settings.warehouse_url).begin() as conn:
        for row in ledger.rows_in(conn, "notified"):
            key = (row["policy_id"], row["period"], row["uscc"])
            assert ledger.transition(conn, key, "confirmed", "t", None) is None
            assert ledger.transition(conn, key, "approved", "t", None) is None


def test_publicity_list_carries_no_phone_or_personal_name(settings):
    write_policy(settings, "WL-RS-2026-01", 5)
    write_portrait(settings, D1, {code(1): ("13812345678", "王建国")})
    run(settings, D1, [match(n=1)])
    approve_all(settings)
    d2 = D1 + timedelta(days=1)
    write_portrait(settings, d2, {code(1): ("13812345678", "王建国")})
    out = run(settings, d2, [match(n=1)], "r2")
    assert out["publicity_rows"] == 1 and out["payout_items"] == 0
    ws = load_workbook(settings.run_dir(d2) / "publicity" / "WL-RS-2026-01_公示名单.xlsx").active
    cells = [str(c) for row in ws.iter_rows(values_only=True) for c in row if c is not None]
    assert any("南阳市卧龙区示范1有限公司" in c for c in cells)
    assert not any("13812345678" in c or "王建国" in c for c in cells)
    assert any("2026年11月27日至2026年12月03日" in c for c in cells)
    # the SMS outbox of day 1 does carry the phone
    sms_csv = (settings.run_dir(D1) / "sms" / "短信待发清单.csv").read_text(encoding="utf-8-sig")
    assert "13812345678" in sms_csv and "预计可享受 5,000.00 元" in sms_csv
    # paid only once the five working days 11-27..12-03 are over
    assert run(settings, date(2026, 12, 3), [], "r3")["payout_items"] == 0
    write_portrait(settings, date(2026, 12, 4), {code(1): ("13812345678", "王建国")})
    assert run(settings, date(2026, 12, 4), [], "r4")["payout_batches"] == ["PB-20261204-01"]


@pytest.mark.parametrize("crash_in", ["payout", "reminders"])
def test_a_rerun_after_a_crash_yields_the_same_batch_and_files(settings, monkeypatch, crash_in):
    rows = [match(n=1), match(n=2, department="区科学技术局", policy_id="WL-KJ-01",
                              amount="12345.67")]
    run(settings, D1, rows)
    approve_all(settings)
    d2 = D1 + timedelta(days=1)
    write_portrait(settings, d2, {code(1): ("", ""), code(2): ("", "")})

    real = {"payout": payout.write, "reminders": reminders.write}[crash_in]
    module = {"payout": payout, "reminders": reminders}[crash_in]

    def crash(*a, **k):
        if crash_in == "reminders":   # the payout list is already on disk
            real(*a, **k)
        raise RuntimeError("worker killed")

    monkeypatch.setattr(module, "write", crash)
    with pytest.raises(RuntimeError):
        run(settings, d2, rows, "r2")
    first = (settings.run_dir(d2) / "payout" / "payout.csv").read_bytes() if crash_in == "reminders" else None
    monkeypatch.setattr(module, "write", real)
    out = run(settings, d2, rows, "r2-retry")
    assert out["payout_batches"] == ["PB-20261127-01"] and out["payout_items"] == 2
    assert out["payout_total"] == "17345.67"
    folder = settings.run_dir(d2) / "payout"
    if first is not None:
        assert (folder / "payout.csv").read_bytes() == first
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["payout.csv", "payout.parquet", "区人力资源和社会保障局_拨付清单.xlsx", "区科学技术局_拨付清单.xlsx"])
    with warehouse.connect(settings.warehouse_url).connect() as conn:
        assert conn.execute(sa.select(warehouse.payout_batches.c.batch_id)).scalars().all() == [
            "PB-20261127-01"]
    ws = load_workbook(folder / "区科学技术局_拨付清单.xlsx").active
    values = [r for r in ws.iter_rows(values_only=True)]
    total_row = next(r for r in values if r[0] == "合计")
    assert total_row[-2] == pytest.approx(12345.67) and total_row[-1] == "人民币壹万贰仟叁佰肆拾伍元陆角柒分"


def _portrait(settings, as_of, rows: dict[str, dict]) -> None:
    """A portrait of the given codes: registered, active, not dishonest, in the district unless said otherwise."""
    settings.portraits.mkdir(parents=True, exist_ok=True)
    base = {"registered": True, "active": True, "dishonest": False, "division_code": "411303", "phone": "13800000000",
            "insured_count": 12}
    full = [{"uscc": u, "name": f"企业{u[-4:]}", **base, **r} for u, r in rows.items()]
    pq.write_table(pa.Table.from_pylist(full), settings.portrait_path(as_of))


NEAR_EVIDENCE = [
    {"path": "0", "field": "division_code", "op": "eq", "value": "411303", "actual": "411303", "result": True},
    {"path": "1", "field": "insured_avg_12m", "op": "ge", "value": 10, "actual": "8.083333333333333333",
     "result": False}]


def test_reminder_lists_are_actionable_and_read_as_a_clerk_writes(settings):
    near = match(n=5, outcome="near_miss", amount=None, failed_item=1, evidence=NEAR_EVIDENCE)
    outside = match(n=8, outcome="near_miss", amount=None, failed_item=1, evidence=NEAR_EVIDENCE)
    dishonest = match(n=9, outcome="near_miss", amount=None, failed_item=1, evidence=NEAR_EVIDENCE)
    missing = match(n=6, outcome="missing_data", amount=None, evidence=[
        {"path": "0", "field": "tax_growth", "op": "ge", "value": "0.2", "actual": None, "result": None}])
    manual = match(n=7, kind="manual", amount=None, policy_id="WL-M-01", policy_name="人才引进补贴")
    _portrait(settings, D1, {code(5): {}, code(6): {}, code(7): {"registered": False},
                             code(8): {"division_code": "411302"}, code(9): {"dishonest": True}})
    out = run(settings, D1, [near, outside, dishonest, missing, manual])
    assert out["reminders"] == 1 and out["ledger_new"] == 0 and out["sms"] == 0
    assert out["reminder_lists"]["区人力资源和社会保障局"] == {
        "应享未享提醒": 1, "差一项清单": 1, "数据缺口清单": 1,
        "top_gaps": [["纳税增长率", "区税务局（年度纳税信息）", 1]]}
    folder = settings.run_dir(D1) / "reminders"
    text = "\n".join(str(c) for row in load_workbook(folder / "区人力资源和社会保障局_差一项清单.xlsx").active
                     .iter_rows(values_only=True) for c in row if c)
    assert "近12个月平均参保人数 8.08人，需 ≥ 10人" in text
    assert code(5) in text and code(8) not in text and code(9) not in text
    first = "\n".join(str(c) for row in load_workbook(folder / "区人力资源和社会保障局_应享未享提醒.xlsx").active
                      .iter_rows(values_only=True) for c in row if c)
    assert "人工核定类政策：预筛符合，请告知企业申报" in first and "名称未登记" in first
    gaps = (folder / "区人力资源和社会保障局_数据缺口清单_企业明细.csv").read_text(encoding="utf-8-sig")
    assert code(6) in gaps and "区税务局（年度纳税信息）" in gaps


def _reminder_night(settings):
    near = match(n=5, outcome="near_miss", amount=None, failed_item=1, evidence=NEAR_EVIDENCE)
    missing = match(n=6, outcome="missing_data", amount=None, evidence=[
        {"path": "0", "field": "tax_growth", "op": "ge", "value": "0.2", "actual": None, "result": None}])
    _portrait(settings, D1, {code(5): {}, code(6): {}, code(1): {}})
    return [near, missing, match(n=1)]


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _lists_in_a_second_process(monkeypatch) -> list:
    """From now on every night, however small, writes its 差一项 and 数据缺口 lists in a second
    process; returns the list the jobs started are recorded in."""
    started = []

    class Recorded(reminders.ListsJob):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            started.append(self)

    monkeypatch.setattr(handoff, "SEPARATE_LISTS_FROM_RESULTS", 0)
    monkeypatch.setattr(handoff.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(reminders, "ListsJob", Recorded)
    return started


def test_near_miss_and_gap_lists_written_in_a_second_process_are_the_same_files(settings, monkeypatch):
    rows = _reminder_night(settings)
    in_line = run(settings, D1, rows)
    folder = settings.run_dir(D1) / "reminders"
    expected = _files(folder)
    assert {"区人力资源和社会保障局_差一项清单.xlsx", "区人力资源和社会保障局_数据缺口清单_企业明细.csv"} <= set(expected)

    started = _lists_in_a_second_process(monkeypatch)
    for path in folder.iterdir():
        path.unlink()
    beside = run(settings, D1, rows, "r1-again")
    assert [job.process.returncode for job in started] == [0]
    assert _files(folder) == expected
    assert beside["reminder_lists"] == in_line["reminder_lists"]
    assert not list((settings.work / "lists").iterdir())   # the child's scratch folder is gone


def test_a_stage_that_fails_stops_its_lists_process_and_leaves_no_half_files(settings, monkeypatch):
    from pipelines.files import is_temporary

    started = _lists_in_a_second_process(monkeypatch)
    real_notify = ledger.notify

    def killed(*a, **k):
        raise RuntimeError("worker killed")

    monkeypatch.setattr(ledger, "notify", killed)
    rows = _reminder_night(settings)
    with pytest.raises(RuntimeError, match="worker killed"):
        run(settings, D1, rows)
    [job] = started
    assert job.process.returncode is not None        # stopped, not left running
    left = [p for p in settings.work.parent.rglob("*") if is_temporary(p) or p.name.startswith("lists-")]
    assert not left, left
    monkeypatch.setattr(ledger, "notify", real_notify)
    out = run(settings, D1, rows, "r1-retry")
    assert out["reminder_lists"]["区人力资源和社会保障局"]["差一项清单"] == 1


def test_a_lists_process_stopped_midway_removes_its_scratch_and_half_written_files(settings):
    import time

    from pipelines.files import is_temporary

    write_matches(settings, D1, _reminder_night(settings))
    scratch = settings.work / "lists"
    job = reminders.ListsJob(settings.reminders_dir(D1), D1, settings.matches_path(D1), settings.portrait_path(D1),
                             settings.policies, "单位", scratch)
    deadline = time.monotonic() + 60
    while not (scratch.is_dir() and any(scratch.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.005)   # until the child is at work: its scratch folder is there
    assert job.process.poll() is None, "the child finished before it could be stopped"
    job.stop()
    assert job.process.returncode == 128 + 15        # it ended through its SIGTERM handler
    left = [p for p in settings.work.parent.rglob("*") if is_temporary(p) or p.name.startswith("lists-")]
    assert not left, left


def test_a_lists_process_that_fails_fails_the_stage_with_its_exit_code(tmp_path):
    job = reminders.ListsJob(tmp_path / "reminders", D1, tmp_path / "missing.parquet", None, tmp_path, "单位", None)
    with pytest.raises(RuntimeError, match=r"near-miss and data-gap lists failed in process \d+ \(exit code 1\)"):
        job.result()


def test_a_workbook_carries_no_clock_time_so_a_rerun_writes_the_same_bytes():
    import io
    import zipfile

    cols = (Col("企业名称", "name"), Col("金额（元）", "amount", "money"))
    made = workbook_bytes("清单", cols, [{"name": "甲公司", "amount": Decimal("1.50")}], unit="单位",
                          made_on=date(2026, 11, 27))
    with zipfile.ZipFile(io.BytesIO(made)) as zf:
        assert {i.date_time for i in zf.infolist()} == {(2026, 11, 27, 0, 0, 0)}
        core = zf.read("docProps/core.xml").decode("utf-8")
    assert core.count("2026-11-27T00:00:00Z") == 2
    wb = load_workbook(io.BytesIO(made))
    assert wb.properties.modified.isoformat() == "2026-11-27T00:00:00"
    assert wb.active["A4"].value == "甲公司"


def test_a_list_longer_than_a_person_reads_goes_out_as_csv(tmp_path, monkeypatch):
    from pipelines.outputs import workbook

    monkeypatch.setattr(workbook, "XLSX_MAX_ROWS", 3)
    cols = (workbook.Col("企业名称", "name"), workbook.Col("金额", "amount", "money"))
    short = workbook.write_list(tmp_path / "a.xlsx", "标题", cols, [{"name": "=甲", "amount": "1.00"}] * 3,
                                unit="单位", made_on=date(2026, 11, 26))
    long = workbook.write_list(tmp_path / "b.xlsx", "标题", cols, [{"name": "=甲", "amount": "1.00"}] * 4,
                               unit="单位", made_on=date(2026, 11, 26))
    assert short.suffix == ".xlsx" and long.suffix == ".csv" and not (tmp_path / "b.xlsx").exists()
    text = long.read_bytes().decode("utf-8")
    assert text.startswith("\ufeff企业名称,金额") and "'=甲,1.00" in text


def test_the_payout_workbook_reads_back_with_every_column_the_totals_and_signatures(tmp_path):
    from types import SimpleNamespace

    policy = SimpleNamespace(basis="卧政〔2026〕3号", fund_source="区级惠企政策专项资金")
    items = [{"batch_id": "PB-20261203-01", "department": "区人力资源和社会保障局", "name": f"示范{n}有限公司",
              "uscc": code(n), "policy_id": "WL-RS-2026-01", "policy_name": "小微企业稳岗奖励", "period": "2026",
              "payee_name": f"示范{n}有限公司", "bank_name": "中国工商银行南阳卧龙支行",
              "bank_account": f"62220214000012{n:02d}", "amount": Decimal(a)}
             for n, a in ((1, "100000.00"), (2, "10.10"))]
    [csv_path, parquet_path, book] = payout.write(tmp_path, D1, items, "某平台", {"WL-RS-2026-01": policy})
    ws = load_workbook(book).active
    rows = [list(r) for r in ws.iter_rows(values_only=True)]
    assert rows[0][0] == "惠企政策免申即享资金拨付清单" and rows[1][0].startswith("制表日期：2026年11月26日")
    assert rows[2] == ["序号", "批次号", "企业名称", "统一社会信用代码", "政策编号", "政策名称", "期次", "政策依据",
                       "资金来源", "收款户名", "开户银行", "银行账号", "金额（元）", "金额（大写）"]
    assert rows[3] == [1, "PB-20261203-01", "示范1有限公司", code(1), "WL-RS-2026-01", "小微企业稳岗奖励", "2026",
                       "卧政〔2026〕3号", "区级惠企政策专项资金", "示范1有限公司", "中国工商银行南阳卧龙支行",
                       "6222021400001201", 100000, "人民币壹拾万元整"]
    assert rows[4][11:] == ["6222021400001202", 10.1, "人民币壹拾元壹角"]
    total = rows[5]
    assert (total[0], total[12], total[13]) == ("合计", 100010.1, "人民币壹拾万零壹拾元壹角")
    assert rows[7][0] == "制表单位：某平台"
    assert rows[9][0] == "经办人：__________　　　　审核人：__________　　　　负责人：__________"
    assert ws.cell(4, 13).number_format == "#,##0.00"
    # the machine handoff: the same rows with the department, and the batch id on each
    with open(csv_path, encoding="utf-8-sig") as fh:
        listed = list(csv.DictReader(fh))
    assert [(r["批次号"], r["银行账号"], r["金额（元）"], r["金额（大写）"], r["执行部门"]) for r in listed] == [
        ("PB-20261203-01", "6222021400001201", "100000.00", "人民币壹拾万元整", "区人力资源和社会保障局"),
        ("PB-20261203-01", "6222021400001202", "10.10", "人民币壹拾元壹角", "区人力资源和社会保障局")]
    assert pq.read_table(parquet_path).column("bank_account").to_pylist() == [
        "6222021400001201", "6222021400001202"]
