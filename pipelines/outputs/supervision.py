"""事后监管清单 (lifecycle.md item 8): results paid within the last 12 months whose
enterprise is now on a credit list, 注销 or 吊销, per department, for follow-up
and possible recovery (追回 through `_recoveries/`)."""
from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

from pipelines.outputs.review import safe_name
from pipelines.outputs.workbook import Col, write_workbook
from pipelines.recheck import Enterprise

COLUMNS = (
    Col("序号", "seq", "int"),
    Col("企业名称", "name"),
    Col("统一社会信用代码", "uscc"),
    Col("政策编号", "policy_id"),
    Col("政策名称", "policy_name"),
    Col("期次", "period"),
    Col("拨付金额（元）", "amount", "money"),
    Col("拨付日期", "paid_on", "date"),
    Col("发现问题", "finding", wrap=True, max_width=60),
)
WATCHED_STATUSES = ("注销", "吊销")


def since(as_of: date) -> date:
    """The first day of the 12 months up to as_of."""
    try:
        return as_of.replace(year=as_of.year - 1) + timedelta(days=1)
    except ValueError:          # 29 February
        return as_of.replace(year=as_of.year - 1, day=28) + timedelta(days=1)


def finding(enterprise: Enterprise | None) -> str | None:
    """What makes a paid result worth a second look, in Chinese; None when nothing does."""
    if enterprise is None:
        return None
    reasons = [f"列入{kind}名单（{on.isoformat()}）" for kind, on in enterprise.listings]
    if enterprise.status in WATCHED_STATUSES:
        reasons.append(f"登记状态为{enterprise.status}")
    return "；".join(reasons) or None


def rows(paid: list[dict], enterprises: dict[str, Enterprise]) -> list[dict]:
    out = []
    for r in paid:
        found = finding(enterprises.get(r["uscc"]))
        if found:
            out.append({**r, "finding": found})
    return out


def write(run_dir: Path, as_of: date, watched: list[dict], unit: str) -> list[Path]:
    by_dept: dict[str, list[dict]] = {}
    for r in watched:
        by_dept.setdefault(r["department"], []).append(r)
    paths = []
    for department, dept_rows in sorted(by_dept.items()):
        data = [{**r, "seq": i} for i, r in enumerate(dept_rows, start=1)]
        paths.append(write_workbook(
            run_dir / "supervision" / f"{safe_name(department)}_事后监管清单.xlsx", "惠企政策兑现事后监管清单",
            COLUMNS, data, unit=unit, made_on=as_of,
            subtitle=(f"执行部门：{department}　近12个月（{since(as_of)}起）已拨付、现列入失信名单或注销、吊销的企业，"
                      "请核实，需追回的请报送追回表"), sheet="事后监管清单"))
    return paths
