"""短信待发清单: one row per newly notified result and one per 催办 reminder (half of
`confirm_days` passed without an answer), for the SMS platform, with the confirmation
deadline (`confirm_days` working days after the first SMS, pipelines/deadlines.py) and
the department's contact from the policy's guide."""
from __future__ import annotations

import itertools
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.outputs.workbook import (LOOKUP_ROWS, XLSX_MAX_ROWS, Col, per_value, regrouped, write_csv_tables,
                                        write_workbook)
from pipelines import deadlines
from pipelines.workdays import WorkCalendar

FIRST, REMINDER = "首次通知", "催办"

COLUMNS = (
    Col("序号", "seq", "int"),
    Col("手机号码", "phone"),
    Col("企业名称", "name"),
    Col("统一社会信用代码", "uscc"),
    Col("政策编号", "policy_id"),
    Col("政策名称", "policy_name"),
    Col("期次", "period"),
    Col("预计金额（元）", "amount", "money"),
    Col("确认截止日期", "deadline", "date"),
    Col("短信内容", "message", max_width=90),
    Col("备注", "remark"),
    Col("短信类型", "kind"),      # 首次通知 | 催办
)


def message(name: str | None, policy_name: str, amount: Decimal | None, deadline: date,
            contact: str | None, kind: str = FIRST) -> str:
    benefit = f"预计可享受 {amount:,.2f} 元。" if amount is not None else "可享受相关政策支持。"
    opening = ("经数据比对，贵单位符合" if kind == FIRST else "【催办】贵单位尚未确认是否申领") + f"“{policy_name}”，"
    return (f"【卧龙区惠企政策】{name or '贵单位'}：{opening}{benefit}"
            f"请于{deadline.year}年{deadline.month}月{deadline.day}日前登录平台确认申领意愿并签署信用承诺"
            + ("，逾期视为未确认。" if kind == REMINDER else "。") + (f"咨询：{contact}" if contact else ""))


def rows(ledger_rows: list[dict], phones: dict[str, str], policies: Mapping[str, object],
         calendar: WorkCalendar, reminded: list[dict] = ()) -> list[dict]:
    days = deadlines.days_of(policies)
    out = []
    for i, (kind, r) in enumerate([(FIRST, r) for r in ledger_rows] + [(REMINDER, r) for r in reminded], start=1):
        phone = phones.get(r["uscc"]) or ""
        policy = policies.get(r["policy_id"])
        deadline = deadlines.confirm_by(calendar, r["notified_as_of"], days.get(r["policy_id"], deadlines.Days()))
        contact = policy.guide_dict.get("contact") if policy is not None else None
        out.append({**r, "seq": i, "kind": kind, "phone": phone, "deadline": deadline,
                    "message": message(r["name"], r["policy_name"], r["amount"], deadline, contact, kind),
                    "remark": "" if phone else "无有效手机号码，请线下通知"})
    return out


# ---------------------------------------------------------------- column-wise, for a province's night

OFFLINE = "无有效手机号码，请线下通知"


def confirm_dates(policy_ids: pa.Array, told: pa.Array, calendar: WorkCalendar, days: Mapping[str, deadlines.Days],
                  told_default: date | None = None) -> pa.Array:
    """deadlines.confirm_by of each row, worked out once per distinct (policy, notification date);
    a row without a notification date counts from told_default."""
    keys = pc.binary_join_element_wise(policy_ids, pc.fill_null(told.cast(pa.string()), ""), "\x1f")

    def deadline(key: str) -> date:
        policy_id, sent = key.split("\x1f", 1)
        start = date.fromisoformat(sent) if sent else told_default
        return deadlines.confirm_by(calendar, start, days.get(policy_id, deadlines.Days()))

    return per_value(keys, deadline, pa.date32())


def messages(rows: pa.Table, kind: str, contacts: Mapping[str, str | None]) -> pa.Array:
    """`message` of every row (name, policy_name, amount, deadline, policy_id), the same text
    put together column-wise: each distinct amount, deadline and policy formatted once."""
    def opening(policy_name):
        return ("经数据比对，贵单位符合" if kind == FIRST else "【催办】贵单位尚未确认是否申领") + f"“{policy_name}”，"

    def benefit(amount):
        return f"预计可享受 {amount:,.2f} 元。" if amount is not None else "可享受相关政策支持。"

    def until(d):
        return (f"请于{d.year}年{d.month}月{d.day}日前登录平台确认申领意愿并签署信用承诺"
                + ("，逾期视为未确认。" if kind == REMINDER else "。"))

    def ask(policy_id):
        contact = contacts.get(policy_id)
        return f"咨询：{contact}" if contact else ""

    name = pc.fill_null(rows.column("name"), "")
    name = pc.if_else(pc.equal(name, ""), "贵单位", name)    # `name or '贵单位'`
    return pc.binary_join_element_wise(
        "【卧龙区惠企政策】", name, "：", per_value(rows.column("policy_name"), opening),
        per_value(rows.column("amount"), benefit), per_value(rows.column("deadline"), until),
        per_value(rows.column("policy_id"), ask), "")


def phone_lookup(codes: pa.Array | pa.ChunkedArray, phones: pa.Table) -> pa.Array:
    """Each code's phone from a (uscc, phone) table ("" when it has none)."""
    found = phones.column("phone").take(pc.index_in(codes, value_set=phones.column("uscc")))
    return pc.fill_null(found, "")


def outbox(batches: Iterable[tuple[str, pa.Table]], phones: pa.Table, policies: Mapping[str, object],
           calendar: WorkCalendar) -> Iterator[pa.Table]:
    """The outbox's rows (COLUMNS' keys) of the (kind, ledger rows) batches, numbered on; the
    batches of a kind put together LOOKUP_ROWS rows at a time, each looking its phones up once."""
    days = deadlines.days_of(policies)
    contacts = {pid: p.guide_dict.get("contact") for pid, p in policies.items()}
    seq = 1
    for kind, t in ((kind, t) for kind, same in itertools.groupby(batches, key=lambda b: b[0])
                    for t in regrouped((t for _, t in same), LOOKUP_ROWS)):
        if not t.num_rows:
            continue
        t = t.append_column("deadline", confirm_dates(t.column("policy_id"), t.column("notified_as_of"),
                                                      calendar, days))
        phone = phone_lookup(t.column("uscc"), phones)
        yield pa.table({
            "seq": pa.array(range(seq, seq + t.num_rows), pa.int64()), "phone": phone,
            **{k: t.column(k) for k in ("name", "uscc", "policy_id", "policy_name", "period", "amount",
                                        "deadline")},
            "message": messages(t, kind, contacts),
            "remark": pc.if_else(pc.equal(phone, ""), OFFLINE, ""),
            "kind": pa.array([kind] * t.num_rows, pa.string()),
        })
        seq += t.num_rows


def write(run_dir: Path, as_of: date, batches: Iterable[tuple[str, pa.Table]], rows: int, phones: pa.Table,
          unit: str, policies: Mapping[str, object], calendar: WorkCalendar) -> list[Path]:
    """The outbox from (FIRST | REMINDER, ledger rows) batches (SMS_COLUMNS of ledger.sms_query,
    first notices then 催办), `rows` in all: the CSV written batch by batch; the workbook
    beside it when the list is short enough for a person to look over."""
    folder = run_dir / "sms"
    small = rows <= XLSX_MAX_ROWS
    kept: list[pa.Table] = []

    def tables():
        for table in outbox(batches, phones, policies, calendar):
            if small:
                kept.append(table)
            yield table

    paths = [write_csv_tables(folder / "短信待发清单.csv", COLUMNS, tables())]
    if small:   # the CSV is the handoff; the workbook is for a person to look over
        data = [r for t in kept for r in t.to_pylist()]
        paths.append(write_workbook(folder / "短信待发清单.xlsx", "惠企政策免申即享短信待发清单", COLUMNS, data,
                                    unit=unit, made_on=as_of))
    return paths
