"""Deadlines in working days (催办, 逾期未确认, overdue work), the 督导统计 rebuilt from the
ledger's log, and online applications of manual policies: the ledger-and-lists stage
night by night over the 2026 Mid-Autumn and National Day holidays, on SQLite and
PostgreSQL."""
from __future__ import annotations

import csv
import json
from datetime import date, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from h5_support import code, db_url, engine, match, settings, table, write_matches, write_portrait  # noqa: F401
from pipelines import deadlines, handoff, ledger, oversight, returns, warehouse
from pipelines.ledger import Source
from pipelines.outputs.oversight import figures_path
from pipelines.workdays import WorkCalendar
from test_returns import handle, write_csv

P, M = "WL-RS-2026-01", "WL-SW-2026-09"
RS = "区人力资源和社会保障局"
POLICY = (f"id: {P}\nname: 小微企业稳岗奖励\ndepartment: {RS}\nkind: condition\n"
          "period: '2026'\nvalid_from: 2026-01-01\nvalid_to: 2026-12-31\nconfirm_days: 10\nreview_days: 3\n"
          "pay_days: 2\npublicity_days: 7\nconditions: [{field: arrears, op: is_false}]\n"
          "benefit: {type: fixed, amount: 5000}\nguide: {contact: 区人社局 0377-63211001}\n")
MANUAL = (f"id: {M}\nname: 外贸企业参展补贴\ndepartment: 区商务局\nkind: manual\nperiod: '2026'\n"
          "valid_from: 2026-01-01\nvalid_to: 2026-12-31\nmax_amount: 30000\n"
          "conditions: [{field: arrears, op: is_false}]\n")
# a night's matches: the manual policy's pre-screen (it never enters the ledger by itself)
PRESCREENED = [match(n=7, policy_id=M, kind="manual", amount=None, department="区商务局")]
APPLY_HEADER = ["统一社会信用代码", "政策编号", "期次", "申请金额", "申请时间", "信用承诺", "收款户名", "开户银行", "银行账号"]


def night(settings, as_of, rows, run_id=None):
    write_portrait(settings, as_of, {code(n): (f"1381234567{n}", "王建国") for n in range(1, 8)})
    write_matches(settings, as_of, rows)
    return handoff.ledger_and_outputs(settings, as_of, run_id or f"r-{as_of}")


def moved(settings, n, to, policy=P, **kw):
    with warehouse.connect(settings.warehouse_url).begin() as conn:
        return ledger.transition(conn, (policy, "2026", code(n)), to, Source(file="returned.xlsx"), RS, **kw)


def row(settings, n, policy=P) -> dict:
    with warehouse.connect(settings.warehouse_url).connect() as conn:
        return ledger.get(conn, (policy, "2026", code(n)))


def sms_rows(settings, as_of) -> list[dict]:
    path = settings.run_dir(as_of) / "sms" / "短信待发清单.csv"
    if not path.exists():
        return []
    with open(path, encoding="utf-8-sig") as fh:
        return list(csv.DictReader(fh))


def test_publicity_and_confirmation_deadlines_over_the_national_day_holidays():
    cal = WorkCalendar()
    # SMS on Thu 09-24, 10 working days: 09-28..30, (10-01..07 off), 10-08, 10-09, Sat 10-10 (调休), 10-12..15
    assert deadlines.confirm_by(cal, date(2026, 9, 24), deadlines.Days(confirm=10)) == date(2026, 10, 15)
    assert deadlines.remind_on(cal, date(2026, 9, 24), deadlines.Days(confirm=10)) == date(2026, 10, 9)
    # a window opened on Mid-Autumn Friday 09-25 starts on Monday 09-28
    assert deadlines.publicity_to(cal, date(2026, 9, 25), 5) == date(2026, 10, 9)
    assert deadlines.publicity_to(cal, date(2026, 9, 29), 7) == date(2026, 10, 13)   # 10-10 counts
    assert deadlines.publicity_to(cal, date(2026, 10, 8), 1) == date(2026, 10, 8)


def test_the_lifecycle_from_mid_autumn_to_october_20(settings, monkeypatch, capsys):
    (settings.policies / f"{P}.yaml").write_text(POLICY, encoding="utf-8")
    rows = [match(n=n) for n in range(1, 5)]
    s = night(settings, date(2026, 9, 24), rows)
    assert s["sms"] == 4 and {r["确认截止日期"] for r in sms_rows(settings, date(2026, 9, 24))} == {"2026-10-15"}
    for n in (1, 4):      # answered the next day (the business date of a returned file: 09-25)
        assert moved(settings, n, "confirmed") is None
    night(settings, date(2026, 9, 28), rows)
    assert moved(settings, 1, "approved") is None           # 09-29; 4 is never reviewed
    night(settings, date(2026, 9, 29), rows)
    assert (row(settings, 1)["publicity_from"], row(settings, 1)["publicity_to"]) == (date(2026, 9, 29),
                                                                                     date(2026, 10, 13))
    night(settings, date(2026, 10, 8), rows)
    assert sms_rows(settings, date(2026, 10, 8)) == []      # not yet half of confirm_days

    # 10-09: half of the ten working days: one 催办 for each unanswered result, never two
    s = night(settings, date(2026, 10, 9), rows)
    chased = sms_rows(settings, date(2026, 10, 9))
    assert sorted((r["统一社会信用代码"], r["短信类型"]) for r in chased) == [(code(2), "催办"), (code(3), "催办")]
    assert all("【催办】" in r["短信内容"] and "2026年10月15日前" in r["短信内容"] for r in chased)
    assert s["sms_reminders"] == 2
    again = night(settings, date(2026, 10, 9), rows, "r-rerun")   # a rerun of the same night
    assert again["sms_reminders"] == 2 and sms_rows(settings, date(2026, 10, 9)) == chased
    assert night(settings, date(2026, 10, 12), rows)["sms_reminders"] == 0
    figures = json.loads(figures_path(settings.run_dir(date(2026, 10, 12))).read_text(encoding="utf-8"))
    [f] = figures["figures"]
    assert (f["overdue_review"], f["overdue_confirm"]) == (1, 2)   # 4: due 09-30

    # 10-14: the window (09-29..10-13) is over: paid from tonight's list
    assert night(settings, date(2026, 10, 14), rows)["payout_items"] == 1
    # 10-16: past 10-15, the unanswered are expired; a confirmation now is refused
    s = night(settings, date(2026, 10, 16), rows)
    assert s["expired"] == 2 and row(settings, 2)["status"] == row(settings, 3)["status"] == "expired"
    late = write_csv(settings.inbox / "_confirmations" / "late.csv",
                     ["统一社会信用代码", "政策编号", "期次", "确认结果", "确认时间", "信用承诺", "收款户名", "开户银行", "银行账号"],
                     [[code(3), P, "2026", "确认申领", "2026-10-16 09:00", "已承诺", "南阳市卧龙区示范3有限公司",
                       "中国银行卧龙支行", "6217000012340003"]])
    [answer] = handle(settings, "_confirmations", late).rows
    assert answer.error.startswith("逾期未确认：该结果已超过确认期限（2026-09-24 短信通知）")
    assert row(settings, 3)["status"] == "expired"
    # 10-20: the payment (due 2 working days after the window: 10-15) is overdue, listed for the department
    night(settings, date(2026, 10, 20), rows)
    figures = json.loads(figures_path(settings.run_dir(date(2026, 10, 20))).read_text(encoding="utf-8"))
    [f] = figures["figures"]
    assert {k: f[k] for k in ("eligible", "notified", "confirmed", "approved", "expired", "paid",
                              "overdue_payment", "overdue_review")} == {
        "eligible": 4, "notified": 4, "confirmed": 2, "approved": 1, "expired": 2, "paid": 0,
        "overdue_payment": 1, "overdue_review": 1}
    assert sorted((o["kind"], o["uscc"], o["deadline"]) for o in figures["overdue"]) == [
        ("审核", code(4), "2026-09-30"), ("拨付", code(1), "2026-10-15")]
    assert (settings.run_dir(date(2026, 10, 20)) / "oversight" / "督导统计.xlsx").exists()

    # rebuilt for past dates, the figures are those the nights wrote
    for day in (date(2026, 9, 24), date(2026, 10, 9), date(2026, 10, 12), date(2026, 10, 16)):
        written = json.loads(figures_path(settings.run_dir(day)).read_text(encoding="utf-8"))
        rebuilt = json.loads(json.dumps(oversight.command(settings, day), ensure_ascii=False))
        assert rebuilt == written, day
        with warehouse.connect(settings.warehouse_url).connect() as conn:   # the set-based figures = replay's
            assert oversight.compute_replayed(conn, day, WorkCalendar(), deadlines.days_of(
                {P: handoff.load_dir(settings.policies)[0][0]})) == rebuilt, day
    # the same through the command line
    from pipelines import cli

    for name, value in (("MIANSHEN_WAREHOUSE_URL", settings.warehouse_url), ("MIANSHEN_POLICIES", settings.policies),
                        ("MIANSHEN_CALENDAR", settings.calendar)):
        monkeypatch.setenv(name, str(value))
    capsys.readouterr()
    assert cli.main(["supervision", "--as-of", "2026-10-16", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(
        figures_path(settings.run_dir(date(2026, 10, 16))).read_text(encoding="utf-8"))
    assert cli.main(["supervision", "--as-of", "2026-10-16"]) == 0
    assert "督导统计（截至 2026-10-16）" in capsys.readouterr().out


def test_a_deadline_into_an_unknown_year_uses_the_operators_file_or_warns(settings, tmp_path):
    import dataclasses

    import chinese_calendar

    settings = dataclasses.replace(settings, calendar=tmp_path / "calendar")

    (settings.policies / f"{P}.yaml").write_text(POLICY.replace("confirm_days: 10", "confirm_days: 15"),
                                                 encoding="utf-8")
    try:
        chinese_calendar.is_workday(date(2027, 1, 4))
        pytest.skip("the pinned chinese-calendar already knows 2027")
    except NotImplementedError:
        pass
    s = night(settings, date(2026, 12, 21), [match(n=1)])
    # fallback: Mon-Fri without 元旦: 12-22..31 (8), 01-04..08 (13), 01-11, 01-12
    assert sms_rows(settings, date(2026, 12, 21))[0]["确认截止日期"] == "2027-01-12"
    assert s["calendar_warnings"][0].startswith("2027年的节假日安排未知")
    settings.calendar.mkdir(parents=True, exist_ok=True)
    (settings.calendar / "2027.yaml").write_text("holidays: [2027-01-01, 2027-01-04]\nworkdays: []\n",
                                                 encoding="utf-8")
    s = night(settings, date(2026, 12, 22), [match(n=1), match(n=2)])
    # the file's extra holiday 01-04 moves the deadline a day later than the fallback would
    assert [r["确认截止日期"] for r in sms_rows(settings, date(2026, 12, 22))] == ["2027-01-14"]
    assert "calendar_warnings" not in s


def _apply(settings, tmp_path, rows, name="在线申请.csv"):
    return handle(settings, "_applications", write_csv(tmp_path / "inbox" / "_applications" / name,
                                                        APPLY_HEADER, rows))


def _application(n, amount="20000", policy=M, commitment="已承诺", period="2026"):
    return [code(n), policy, period, amount, "2026-10-09 10:00", commitment, f"企业{code(n)[-4:]}",
            "中国银行卧龙支行", f"6217 0000 1234 {n:04d}"]


def test_online_applications_are_refused_with_their_reasons(settings, tmp_path):
    (settings.policies / f"{P}.yaml").write_text(POLICY, encoding="utf-8")
    (settings.policies / f"{M}.yaml").write_text(MANUAL, encoding="utf-8")
    night(settings, date(2026, 10, 8), PRESCREENED)
    result = _apply(settings, tmp_path, [
        _application(1),                                      # accepted
        _application(2, commitment=""),                       # no commitment
        _application(3, policy="WL-XX-2026-99"),              # unknown policy
        _application(4, policy=P),                            # not a manual policy
        _application(5, amount="30000.01"),                   # above max_amount
        [returns.normalise_code("91411303MA0009999X")] + _application(6)[1:],   # not in the registry
        _application(1, amount="1000"),                       # a second application, same period
    ])
    later = _apply(settings, tmp_path, [_application(1, amount="1000")], "在线申请_2.csv")
    errors = [o.error for o in result.rows]
    assert errors[0] is None
    assert "未签署信用承诺" in errors[1]
    assert errors[2].startswith("未知政策编号“WL-XX-2026-99”")
    assert "不是暂时难以数据化（人工核定）类政策" in errors[3]
    assert "超过该政策单户申请上限 30,000.00 元" in errors[4]
    assert "不在市场主体登记库中" in errors[5]
    assert errors[6].startswith("重复申请") and later.rows[0].error.startswith("重复申请：该企业已于 2026-10-09 申请")
    got = row(settings, 1, M)
    assert (got["status"], got["amount"], got["applied_on"], got["bank_account"]) == (
        "confirmed", Decimal("20000.00"), date(2026, 10, 9), "621700001234" + "0001")


def test_an_online_application_goes_through_review_publicity_and_payout(settings, tmp_path):
    (settings.policies / f"{M}.yaml").write_text(MANUAL.replace("max_amount", "publicity_days: 3\nmax_amount"),
                                                 encoding="utf-8")
    night(settings, date(2026, 10, 8), PRESCREENED)
    assert [o.error for o in _apply(settings, tmp_path, [_application(1)]).rows] == [None]
    s = night(settings, date(2026, 10, 9), [*PRESCREENED, PRESCREENED[0] | {"uscc": code(1)}])
    assert s["review_rows"] == 1 and s["sms"] == 0
    assert s["reminders"] == 1      # the pre-screened applicant is no longer told to apply; the other is
    assert moved(settings, 1, "approved", policy=M) is None
    night(settings, date(2026, 10, 12), PRESCREENED)         # publicity 10-12..10-14
    assert row(settings, 1, M)["publicity_to"] == date(2026, 10, 14)
    s = night(settings, date(2026, 10, 15), PRESCREENED)
    assert s["payout_items"] == 1 and s["payout_total"] == "20000.00"
    [batch] = s["payout_batches"]
    with warehouse.connect(settings.warehouse_url).begin() as conn:
        assert ledger.record_payment(conn, (M, "2026", code(1)), batch, Decimal("20000"), date(2026, 10, 16),
                                     Source(file="pay.csv")) is None
    s = night(settings, date(2026, 10, 16), PRESCREENED)
    figures = json.loads(figures_path(settings.run_dir(date(2026, 10, 16))).read_text(encoding="utf-8"))
    [f] = figures["figures"]
    assert (f["eligible"], f["confirmed"], f["paid"], f["paid_amount"]) == (0, 1, 1, "20000.00")
    # from the application (10-09) to paid (dated 10-16, the night after the receipt): 10-10 (调休), 10-12..16
    assert f["median_days_to_paid"] == 6
    from openpyxl import load_workbook

    book = load_workbook(settings.run_dir(date(2026, 10, 16)) / "oversight" / "督导统计.xlsx")
    assert book.sheetnames == ["督导统计", "逾期事项", "拨付时长"] and len(book["拨付时长"]._charts) == 1
    header = [c.value for c in book["督导统计"][3]]
    line = dict(zip(header, [c.value for c in book["督导统计"][4]]))
    assert (line["政策编号"], line["已拨付"], line["已拨付金额（元）"], line["符合条件至拨付中位工作日"]) == (M, 1, 20000, "6")


# ---------------------------------------------------------------- the figures against the ledger itself

WALKS = {   # the moves a generated history may make from each status (lifecycle.md)
    "eligible": ["notified"], "notified": ["confirmed", "declined", "expired"],
    "confirmed": ["approved", "rejected"], "approved": ["scheduled", "suspended"],
    "suspended": ["approved", "rejected"], "scheduled": ["paid"], "paid": ["recovering"],
    "recovering": ["recovered"],
}
START = date(2026, 10, 8)


@hsettings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(st.sampled_from([P, "WL-KJ-2026-01"]),
                          st.lists(st.tuples(st.integers(0, 5), st.integers(0, 4)), max_size=8)),
                min_size=1, max_size=6),
       st.integers(0, 30))
def test_figures_equal_counts_taken_from_the_ledger(tmp_path_factory, histories, cut):
    """Generated histories written through the ledger: the figures of a date equal the counts
    the ledger's own tables give for it (rows that reached each status by then, the amount
    paid), per policy."""
    url = f"sqlite:///{tmp_path_factory.mktemp('h') / 'warehouse.db'}"
    eng = warehouse.connect(url)
    rows = [match(n=i + 1, policy_id=pid, department=RS if pid == P else "区科学技术局", amount=f"{1000 * (i + 1)}.00")
            for i, (pid, _) in enumerate(histories)]
    with eng.begin() as conn:
        ledger.sync_from_matches(conn, START, table(rows), "r0")
        for i, (pid, walk) in enumerate(histories):
            key, status, day = (pid, "2026", code(i + 1)), "eligible", START
            for choice, gap in walk:
                if status not in WALKS:
                    break
                day += timedelta(days=gap)
                status = WALKS[status][choice % len(WALKS[status])]
                assert ledger.transition(conn, key, status, "gen", None, as_of=day) is None
        # some windows opened (a window past `when` does not count yet)
        conn.execute(warehouse.ledger.update().where(warehouse.ledger.c.id % 2 == 0).values(
            publicity_from=START + timedelta(days=3), publicity_to=START + timedelta(days=12)))
    when = START + timedelta(days=cut)
    with eng.connect() as conn:
        figures = oversight.compute(conn, when, WorkCalendar(), {})["figures"]
        # the set-based figures and overdue items are those of replaying each row in Python
        tight = {P: deadlines.Days(confirm=4, review=2, pay=1)}
        assert oversight.compute(conn, when, WorkCalendar(), tight) == \
            oversight.compute_replayed(conn, when, WorkCalendar(), tight)
        t, l = warehouse.ledger_transitions, warehouse.ledger
        reached = conn.execute(
            sa.select(l.c.policy_id, t.c.to_status, sa.func.count(sa.distinct(t.c.ledger_id)))
            .join(l, l.c.id == t.c.ledger_id).where(t.c.as_of <= when)
            .group_by(l.c.policy_id, t.c.to_status)).all()
        paid_amounts: dict[str, Decimal] = {}
        for pid, amount in conn.execute(sa.select(l.c.policy_id, l.c.amount).where(l.c.id.in_(
                sa.select(t.c.ledger_id).where(t.c.to_status == "paid", t.c.as_of <= when)))):
            paid_amounts[pid] = paid_amounts.get(pid, Decimal("0.00")) + amount
    warehouse.dispose_all()
    expected = {(pid, status): n for pid, status, n in reached if status in oversight.COUNTED}
    got = {(f["policy_id"], k): f[k] for f in figures for k in oversight.COUNTED if f[k]}
    assert got == expected
    assert {f["policy_id"]: Decimal(f["paid_amount"]) for f in figures if f["paid"]} == paid_amounts
    assert all(f["department"] == (RS if f["policy_id"] == P else "区科学技术局") for f in figures)


def test_the_database_lets_only_an_application_start_past_eligible(engine):
    row = dict(policy_id=M, period="2026", uscc=code(1), status="confirmed", amount="100.00",
               policy_name="x", department="区商务局", first_run="r", last_run="r", first_as_of=START,
               last_as_of=START, updated_at=warehouse.utcnow())
    with pytest.raises(sa.exc.DBAPIError):
        with engine.begin() as conn:
            conn.execute(warehouse.ledger.insert().values(**row))
    with engine.begin() as conn:
        conn.execute(warehouse.ledger.insert().values(**row, applied_on=START))
    with pytest.raises(sa.exc.DBAPIError):
        with engine.begin() as conn:
            conn.execute(warehouse.ledger.insert().values(**{**row, "uscc": code(2), "status": "approved"},
                                                          applied_on=START))


def test_the_run_report_shows_the_figures_with_overdue_departments_first():
    from pipelines import report

    base = {k: 0 for k in oversight.COUNTED + oversight.OVERDUE_KEYS}
    result = {"as_of": "2026-10-20", "overdue": [{}], "figures": [
        {**base, "department": "区商务局", "policy_id": "B", "policy_name": "乙", "period": "2026",
         "overdue_payment": 1, "paid_amount": "0.00", "median_days_to_paid": None},
        {**base, "department": "区人社局", "policy_id": "A", "policy_name": "甲", "period": "2026", "paid": 2,
         "paid_amount": "10000.00", "median_days_to_paid": 6.5}]}
    html = report.oversight_section(result)
    assert html.index("区商务局") < html.index("区人社局") and 'id="overdue-items">1<' in html
    assert "各政策从符合条件到拨付的中位工作日" in html and "10,000.00" in html
