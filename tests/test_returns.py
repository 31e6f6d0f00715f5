"""Returned files (confirmations, reviews, objections, payments) and one full
lifecycle from a hand-made match to a paid result, on SQLite and PostgreSQL."""
from __future__ import annotations

import csv
import hashlib
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import sqlalchemy as sa
from openpyxl import Workbook, load_workbook
from openpyxl.utils import get_column_letter

from h5_support import (code, db_url, engine, match, settings, write_matches,  # noqa: F401
                        write_policy, write_portrait)
from pipelines import handoff, intake, ledger, returns, warehouse
from tests.namelist_workbooks import xls_bytes, xlsx

D1 = date(2026, 11, 26)
P = "WL-RS-2026-01"


def write_csv(path, header, rows, title=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8-sig", newline="") as fh:
        w = csv.writer(fh)
        if title:
            w.writerow([title])
            w.writerow([])
        w.writerow(header)
        w.writerows(rows)
    return path


def handle(settings, folder, path, sha=None):
    # the inbox passes the file's content hash: a file's own moves are recognised by it
    sha = sha or hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return intake.HANDLERS[folder](settings, path, sha, folder)


def statuses(settings):
    with warehouse.connect(settings.warehouse_url).connect() as conn:
        return dict(conn.execute(sa.select(warehouse.ledger.c.uscc, warehouse.ledger.c.status)).all())


def setup_notified(settings, n=3):
    write_matches(settings, D1, [match(n=i) for i in range(1, n + 1)])
    handoff.ledger_and_outputs(settings, D1, "r1")


CONFIRM_HEADER = ["统一社会信用代码", "政策编号", "期次", "确认结果", "确认时间", "信用承诺", "收款户名", "开户银行",
                  "银行账号"]


def payee(n: int, account: str = "6222 0214 0000 1234") -> list[str]:
    """信用承诺, 收款户名 (the registered name of match(n=n)), 开户银行, 银行账号 of a good row."""
    return ["已承诺", f"南阳市卧龙区示范{n}有限公司", "中国工商银行南阳卧龙支行", account]


def test_handlers_are_registered():
    assert {"_confirmations", "_reviews", "_objections", "_payments"} <= set(intake.HANDLERS)


def test_confirmations_apply_good_rows_and_refuse_the_rest(settings, tmp_path):
    setup_notified(settings)
    path = write_csv(tmp_path / "c.csv", CONFIRM_HEADER, [
        [code(1), P, "2026", "确认申领", "2026-11-27 09:00", *payee(1)],
        [code(2).lower(), P, 2026, "放弃", ""],               # lower case code, numeric period
        [code(9), P, "2026", "确认申领", "", *payee(9)],       # unknown
        [code(3), P, "2026", "同意吧", ""],                    # bad answer
        ["", "", "", "", ""],
        [code(1), P, "2026", "放弃", ""],                      # already confirmed
    ], title="企业申领意愿确认结果")
    result = handle(settings, "_confirmations", path)
    assert result.accepted
    errors = [(o.row, o.error is None) for o in result.rows]
    assert errors == [(4, True), (5, True), (6, False), (7, False), (9, False)]
    assert "无此匹配结果" in result.rows[2].error and "确认结果“同意吧”" in result.rows[3].error
    assert "当前状态为“已确认申领”" in result.rows[4].error
    assert result.summary == "接收 2 行，错误 3 行，金额合计 5,000.00 元"
    assert result.department == "区人力资源和社会保障局"
    assert statuses(settings) == {code(1): "confirmed", code(2): "declined", code(3): "notified"}


def test_confirmations_need_the_commitment_and_a_well_formed_payee_row_by_row(settings, tmp_path):
    setup_notified(settings, 6)
    name = lambda n: f"南阳市卧龙区示范{n}有限公司"  # noqa: E731
    path = write_csv(tmp_path / "c.csv", CONFIRM_HEADER, [
        [code(1), P, "2026", "确认申领", "", "", name(1), "工行", "6222021234567890"],     # no commitment
        [code(2), P, "2026", "确认申领", "", "已承诺", "南阳市别的有限公司", "工行", "6222021234567890"],
        [code(3), P, "2026", "确认申领", "", "已承诺", name(3), "工行", "6222-02x1-2345"],  # malformed
        [code(4), P, "2026", "确认申领", "", "已承诺", name(4), "", "1234567"],            # no bank, too short
        [code(5), P, "2026", "确认申领", "", "已承诺", f" {name(5)} ".replace("有限", "有 限"), "工行",
         "6222-0212 3456-7890"],                                                        # spaces are no difference
        [code(6), P, "2026", "放弃", "", "", "", "", ""],                                 # 放弃 needs none
    ])
    result = handle(settings, "_confirmations", path)
    errors = [o.error for o in result.rows]
    assert "未签署信用承诺" in errors[0]
    assert errors[1] == f"收款户名“南阳市别的有限公司”与企业登记名称“{name(2)}”不一致"
    assert errors[2] == "银行账号应为8至32位数字（尾号2345）"
    assert errors[3] == "开户银行为空；银行账号应为8至32位数字（尾号4567）"
    assert errors[4:] == [None, None]
    assert statuses(settings) == {code(1): "notified", code(2): "notified", code(3): "notified",
                                  code(4): "notified", code(5): "confirmed", code(6): "declined"}
    with warehouse.connect(settings.warehouse_url).connect() as conn:
        row = ledger.get(conn, (P, "2026", code(5)))
    assert (row["commitment"], row["bank_name"], row["bank_account"]) == ("已承诺", "工行", "6222021234567890")
    # the answer shows the account's last four digits only
    assert [o.values["银行账号"] for o in result.rows] == [
        "****7890", "****7890", "****2345", "****4567", "****7890", ""]


def test_an_account_typed_as_a_long_number_is_refused():
    from pipelines.returns import bank_account

    assert bank_account(6222021234567890.0) is None      # Excel kept 15 digits of it
    assert bank_account(12345678.0) == "12345678"


def test_a_file_without_the_header_is_refused_whole(settings, tmp_path):
    path = write_csv(tmp_path / "c.csv", ["企业", "结果"], [["a", "b"]])
    result = handle(settings, "_confirmations", path)
    assert not result.accepted and "未找到表头" in result.reason


def test_a_hidden_first_sheet_is_not_read_and_the_answer_says_so(settings, tmp_path):
    setup_notified(settings)
    path = xlsx(tmp_path / "c.xlsx", {"旧版": [CONFIRM_HEADER, [code(1), P, "2026", "放弃", ""]],
                                      "确认结果": [CONFIRM_HEADER, [code(1), P, "2026", "确认申领", "", *payee(1)]]},
                hidden={"旧版": "hidden"})
    result = handle(settings, "_confirmations", path)
    assert result.summary == "接收 1 行，错误 0 行，金额合计 5,000.00 元；隐藏的工作表「旧版」未读取（只读取可见的工作表）"
    assert statuses(settings)[code(1)] == "confirmed"


def test_a_legacy_xls_confirmation_is_read_by_the_one_reader(settings, tmp_path):
    setup_notified(settings)
    path = tmp_path / "c.xls"
    path.write_bytes(xls_bytes([CONFIRM_HEADER, [code(1), P, "2026", "确认申领", None, *payee(1)]]))
    assert handle(settings, "_confirmations", path).summary == "接收 1 行，错误 0 行，金额合计 5,000.00 元"
    damaged = tmp_path / "d.xls"  # makes calamine abort its process: read in the guarded child
    damaged.write_bytes((Path(__file__).parent / "hardening" / "data" / "calamine_oom.xls").read_bytes())
    result = handle(settings, "_confirmations", damaged)
    assert not result.accepted and "已损坏" in result.reason


def schedule(settings, keys_amounts):
    with warehouse.connect(settings.warehouse_url).begin() as conn:
        for key in keys_amounts:
            for to in ("confirmed", "approved"):
                assert ledger.transition(conn, key, to, "t", None) is None
        return ledger.schedule_payout(conn, D1, "r1")


def test_a_payment_file_received_twice_pays_once(settings, tmp_path):
    setup_notified(settings, 2)
    batch = schedule(settings, [(P, "2026", code(1)), (P, "2026", code(2))])
    header = ["批次号", "统一社会信用代码", "政策编号", "期次", "实付金额", "支付日期"]
    pay = write_csv(tmp_path / "pay.csv", header, [
        [batch, code(1), P, "2026", "5,000.00", "2026-11-30"],
        [batch, code(2), P, "2026", "4999.00", "2026-11-30"],      # amount differs
    ])
    first = handle(settings, "_payments", pay, "a" * 64)
    assert [o.error is None for o in first.rows] == [True, False]
    assert "与台账金额 5,000.00 元不一致" in first.rows[1].error
    again = write_csv(tmp_path / "pay2.csv", header, [[batch, code(1), P, "2026", "5000", "2026-12-01"]])
    second = handle(settings, "_payments", again, "b" * 64)
    assert "已拨付" in second.rows[0].error and "不重复支付" in second.rows[0].error
    wrong_batch = write_csv(tmp_path / "pay3.csv", header, [["PB-20991231-01", code(2), P, "2026", "5000", ""]])
    assert "批次号不符" in handle(settings, "_payments", wrong_batch).rows[0].error
    assert statuses(settings) == {code(1): "paid", code(2): "scheduled"}
    with warehouse.connect(settings.warehouse_url).connect() as conn:
        paid_moves = conn.execute(sa.select(sa.func.count()).select_from(warehouse.ledger_transitions)
                                  .where(warehouse.ledger_transitions.c.to_status == "paid")).scalar()
    assert paid_moves == 1
    assert first.department == "区财政局"


def test_objections_open_dismiss_uphold_and_refuse_on_scheduled(settings, tmp_path):
    setup_notified(settings, 4)
    with warehouse.connect(settings.warehouse_url).begin() as conn:
        for n in (1, 2, 3, 4):
            for to in ("confirmed", "approved"):
                ledger.transition(conn, (P, "2026", code(n)), to, "t", None)
        ledger.transition(conn, (P, "2026", code(4)), "scheduled", "t", None)
    header = ["统一社会信用代码", "政策编号", "期次", "异议内容", "处理结果"]
    opened = handle(settings, "_objections", write_csv(tmp_path / "o1.csv", header, [
        [code(1), P, "2026", "实际参保人数不足", ""],
        [code(2), P, "2026", "该企业已停业", ""],
        [code(3), P, "2026", "重复享受", "维持"],            # objection and decision together
        [code(4), P, "2026", "异议", ""],
    ]))
    assert [o.error is None for o in opened.rows] == [True, True, True, False]
    assert "已列入拨付清单" in opened.rows[3].error
    decided = handle(settings, "_objections", write_csv(tmp_path / "o2.csv", header, [
        [code(1), P, "2026", "", "撤销"], [code(2), P, "2026", "", "维持"],
        [code(3), P, "2026", "", "撤销"],                     # already rejected: refused
    ]))
    assert [o.error is None for o in decided.rows] == [True, True, False]
    assert statuses(settings) == {code(1): "approved", code(2): "rejected", code(3): "rejected",
                                  code(4): "scheduled"}


def test_review_rejection_needs_an_opinion(settings, tmp_path):
    setup_notified(settings, 1)
    with warehouse.connect(settings.warehouse_url).begin() as conn:
        ledger.transition(conn, (P, "2026", code(1)), "confirmed", "t", None)
    path = write_csv(tmp_path / "r.csv", ["统一社会信用代码", "政策编号", "期次", "审核结果", "审核意见"],
                     [[code(1), P, "2026", "不通过", ""]])
    result = handle(settings, "_reviews", path)
    assert result.rows[0].error == "审核结果为“不通过”时须填写审核意见"
    assert statuses(settings) == {code(1): "confirmed"}


def test_one_full_lifecycle_from_match_to_paid(settings, tmp_path):
    write_policy(settings, P, 3)
    people = {code(1): ("13900000001", "李四"), code(2): ("13900000002", "赵六")}
    rows = [match(n=1), match(n=2, amount="2500.50")]

    # night 1: eligible -> SMS -> notified
    write_portrait(settings, D1, people)
    write_matches(settings, D1, rows)
    out = handoff.ledger_and_outputs(settings, D1, "r1")
    assert (out["ledger_new"], out["sms"]) == (2, 2)
    wb = load_workbook(settings.run_dir(D1) / "sms" / "短信待发清单.xlsx").active
    assert wb["B4"].value == "13900000001"

    # the platform returns the confirmations (an xlsx with a title row)
    wb = Workbook()
    ws = wb.active
    ws.append(["意愿确认结果（平台导出）"])
    ws.append(CONFIRM_HEADER)
    ws.append([code(1), P, "2026", "确认申领", "2026-11-27 10:00:00", *payee(1)])
    ws.append([code(2), P, "2026", "确认申领", "2026-11-27 11:00:00", *payee(2, "6228480012345678901")])
    conf = tmp_path / "inbox" / "_confirmations" / "c.xlsx"
    conf.parent.mkdir(parents=True)
    wb.save(conf)
    assert handle(settings, "_confirmations", conf).summary == "接收 2 行，错误 0 行，金额合计 7,500.50 元"

    # night 2: review workbook per policy; the department fills it in and returns it
    d2 = D1 + timedelta(days=1)
    write_matches(settings, d2, rows)
    out = handoff.ledger_and_outputs(settings, d2, "r2")
    assert out["review_rows"] == 2 and out["sms"] == 0
    sheet = settings.run_dir(d2) / "review" / "区人力资源和社会保障局" / f"{P}_部门审核表.xlsx"
    wb = load_workbook(sheet)
    ws = wb.active
    header = [c.value for c in ws[3]]
    col = {h: i + 1 for i, h in enumerate(header)}
    assert header[-3:] == ["policy_id", "period", "uscc"]
    assert all(ws.column_dimensions[get_column_letter(col[h])].hidden for h in header[-3:])
    assert ws.data_validations.dataValidation[0].formula1 == '"通过,不通过"'
    assert "【符合】近12个月平均参保人数 12.5人，需 ≥ 10人" in ws.cell(4, col["比对依据"]).value
    for r in (4, 5):
        ws.cell(r, col["审核结果"], "通过")
        ws.cell(r, col["审核意见"], "同意")
    returned = tmp_path / "inbox" / "_reviews" / "back.xlsx"
    returned.parent.mkdir(parents=True)
    wb.save(returned)
    result = handle(settings, "_reviews", returned)
    assert [o.error for o in result.rows] == [None, None]
    assert set(statuses(settings).values()) == {"approved"}

    # night 3: publicity window opens on Saturday 11-28 (3 working days: 11-30..12-02); nothing paid yet
    d3 = D1 + timedelta(days=2)
    write_matches(settings, d3, rows)
    out = handoff.ledger_and_outputs(settings, d3, "r3")
    assert out["publicity_rows"] == 2 and out["payout_items"] == 0

    # night 6 (12-03): the window has passed without objection -> payout list, scheduled
    d6 = date(2026, 12, 3)
    write_portrait(settings, d6, people)    # the re-check before payout reads the night's portrait
    write_matches(settings, d6, rows)
    out = handoff.ledger_and_outputs(settings, d6, "r6")
    assert out["payout_batches"] == ["PB-20261203-01"] and out["payout_total"] == "7500.50"
    assert set(statuses(settings).values()) == {"scheduled"}
    with open(settings.run_dir(d6) / "payout" / "payout.csv", encoding="utf-8-sig") as fh:
        listed = list(csv.DictReader(fh))

    # the finance bureau returns the payout CSV with what it paid
    pay = write_csv(tmp_path / "inbox" / "_payments" / "p.csv",
                    ["批次号", "统一社会信用代码", "政策编号", "期次", "实付金额", "支付日期"],
                    [[r["批次号"], r["统一社会信用代码"], r["政策编号"], r["期次"], r["金额（元）"],
                      "2026-12-03"] for r in listed])
    assert handle(settings, "_payments", pay).summary == "接收 2 行，错误 0 行，金额合计 7,500.50 元"
    assert set(statuses(settings).values()) == {"paid"}
    with warehouse.connect(settings.warehouse_url).connect() as conn:
        hist = ledger.history(conn, (P, "2026", code(2)))
    assert [h["to_status"] for h in hist] == [
        "eligible", "notified", "confirmed", "approved", "scheduled", "paid"]
    assert hist[-1]["amount"] == Decimal("2500.50") and hist[-1]["source_file"] == "p.csv"

    # a later night where both qualify again: nothing new is listed or paid
    d7 = date(2026, 12, 2)
    write_matches(settings, d7, rows)
    out = handoff.ledger_and_outputs(settings, d7, "r7")
    assert (out["ledger_new"], out["sms"], out["payout_items"]) == (0, 0, 0)


def test_recovery_and_its_receipt_move_a_paid_row_to_recovered_for_good(settings, tmp_path):
    setup_notified(settings, 3)
    batch = schedule(settings, [(P, "2026", code(n)) for n in (1, 2)])
    pay_header = ["批次号", "统一社会信用代码", "政策编号", "期次", "实付金额", "支付日期"]
    handle(settings, "_payments", write_csv(tmp_path / "pay.csv", pay_header, [
        [batch, code(n), P, "2026", "5000.00", "2026-11-30"] for n in (1, 2)]))
    header = ["统一社会信用代码", "政策编号", "期次", "追回金额", "追回原因"]
    asked = handle(settings, "_recoveries", write_csv(tmp_path / "r.csv", header, [
        [code(1), P, "2026", "5,000.00", "事后核查发现虚报参保人数"],
        [code(2), P, "2026", "6000", "虚报"],                  # more than was paid
        [code(2), P, "2026", "100", ""],                       # no reason
        [code(3), P, "2026", "100", "虚报"],                   # never paid
    ]))
    errors = [o.error for o in asked.rows]
    assert errors[0] is None and "不超过已拨付金额 5,000.00 元" in errors[1]
    assert errors[2] == "追回原因为空" and "当前状态为“已通知”，不能变更为“追回中”" in errors[3]
    assert statuses(settings) == {code(1): "recovering", code(2): "paid", code(3): "notified"}
    receipt = ["统一社会信用代码", "政策编号", "期次", "实收金额", "到账日期"]
    got = handle(settings, "_recovery_receipts", write_csv(tmp_path / "g.csv", receipt, [
        [code(1), P, "2026", "4000", "2026-12-10"], [code(2), P, "2026", "5000", "2026-12-10"]]))
    assert got.rows[0].error == "实收金额 4,000.00 元与追回金额 5,000.00 元不一致"
    assert "不能变更为“已追回”" in got.rows[1].error and got.department == "区财政局"
    got = handle(settings, "_recovery_receipts", write_csv(tmp_path / "g2.csv", receipt, [
        [code(1), P, "2026", "5000.00", "2026-12-10"]]))
    assert got.rows[0].error is None and statuses(settings)[code(1)] == "recovered"
    with warehouse.connect(settings.warehouse_url).connect() as conn:
        rec = conn.execute(sa.select(warehouse.recoveries)).one()
        hist = [h["to_status"] for h in ledger.history(conn, (P, "2026", code(1)))]
    assert (rec.amount, rec.reason, rec.received_amount, rec.received_on) == (
        Decimal("5000.00"), "事后核查发现虚报参保人数", Decimal("5000.00"), date(2026, 12, 10))
    assert hist[-3:] == ["paid", "recovering", "recovered"]
    # never paid again: the payment file once more, and a later night's payout
    again = handle(settings, "_payments", write_csv(tmp_path / "pay2.csv", pay_header, [
        [batch, code(1), P, "2026", "5000.00", "2026-12-11"]]))
    assert "不能变更为“已拨付”" in again.rows[0].error
    with warehouse.connect(settings.warehouse_url).begin() as conn:
        assert ledger.schedule_payout(conn, date(2026, 12, 20), "r9") is None


def test_supervision_lists_paid_results_whose_enterprise_is_now_listed_or_deregistered(settings, tmp_path):
    setup_notified(settings, 3)
    batch = schedule(settings, [(P, "2026", code(n)) for n in (1, 2, 3)])
    handle(settings, "_payments", write_csv(tmp_path / "pay.csv", ["批次号", "统一社会信用代码", "政策编号", "期次",
                                                                   "实付金额", "支付日期"],
                                            [[batch, code(n), P, "2026", "5000", "2026-11-30"] for n in (1, 2, 3)]))
    d2 = D1 + timedelta(days=10)
    write_portrait(settings, d2, {code(n): ("", "") for n in (1, 2, 3)}, status={code(2): "注销"},
                   dishonest={code(3)})
    write_matches(settings, d2, [])
    out = handoff.ledger_and_outputs(settings, d2, "r2")
    assert out["supervision_rows"] == 2
    ws = load_workbook(settings.run_dir(d2) / "supervision" / "区人力资源和社会保障局_事后监管清单.xlsx").active
    body = [r for r in ws.iter_rows(min_row=4, values_only=True) if r[0] not in ("合计", None)][:2]
    assert [(r[2], r[7], r[8]) for r in body] == [
        (code(2), "2026-11-30", "登记状态为注销"), (code(3), "2026-11-30", f"列入失信名单（{d2}）")]
