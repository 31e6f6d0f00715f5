"""短信待发清单: one row per newly notified result and one per 催办 reminder (half of
`confirm_days` passed without an answer), for the SMS platform, with the confirmation
deadline (`confirm_days` working days after the first SMS, pipelines/deadlines.py) and
the department's contact from the policy's guide."""
from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Mapping

from pipelines.outputs.workbook import XLSX_MAX_ROWS, Col, write_csv, write_workbook
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


def write(run_dir: Path, as_of: date, ledger_rows: list[dict], phones: dict[str, str], unit: str,
          policies: Mapping[str, object], calendar: WorkCalendar, reminded: list[dict] = ()) -> list[Path]:
    data = rows(ledger_rows, phones, policies, calendar, reminded)
    folder = run_dir / "sms"
    paths = [write_csv(folder / "短信待发清单.csv", COLUMNS, data)]
    if len(data) <= XLSX_MAX_ROWS:  # the CSV is the handoff; the workbook is for a person to look over
        paths.append(write_workbook(folder / "短信待发清单.xlsx", "惠企政策免申即享短信待发清单", COLUMNS, data,
                                    unit=unit, made_on=as_of))
    return paths
