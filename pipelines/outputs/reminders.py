"""应享未享提醒: near-miss and missing-data results, and the pre-screened
(eligible or near-miss) enterprises of manual policies, per department."""
from __future__ import annotations

from datetime import date
from pathlib import Path

from pipelines.outputs.evidence import failing
from pipelines.outputs.review import safe_name
from pipelines.outputs.workbook import Col, write_list

COLUMNS = (
    Col("序号", "seq", "int"),
    Col("统一社会信用代码", "uscc"),
    Col("企业名称", "name"),
    Col("联系电话", "phone"),
    Col("政策编号", "policy_id"),
    Col("政策名称", "policy_name"),
    Col("期次", "period"),
    Col("提醒类型", "reminder"),
    Col("未满足条件或缺失数据", "reason", wrap=True, max_width=70),
)


def reminder_kind(row: dict) -> str | None:
    outcome, manual = row["outcome"], row["kind"] == "manual"
    if manual and outcome == "eligible":
        return "人工核定类政策：预筛符合，请通知企业申报"
    if manual and outcome == "near_miss":
        return "人工核定类政策：预筛差一项，请核实"
    if outcome == "near_miss":
        return "应享未享：差一项条件"
    if outcome == "missing_data":
        return "数据不全：请补充数据"
    return None


def rows(match_rows: list[dict], phones: dict[str, str]) -> list[dict]:
    out = []
    for r in match_rows:
        kind = reminder_kind(r)
        if kind is None:
            continue
        reason = failing(r["outcome"], r["evidence"], r.get("failed_item"), r.get("failed_guard"))
        out.append({**r, "reminder": kind, "reason": reason or "预筛条件均符合",
                    "phone": phones.get(r["uscc"], "")})
    out.sort(key=lambda r: (r["department"], r["policy_id"], r["period"], r["uscc"]))
    return out


def write(run_dir: Path, as_of: date, match_rows: list[dict], phones: dict[str, str],
          unit: str) -> tuple[list[Path], int]:
    data = rows(match_rows, phones)
    by_dept: dict[str, list[dict]] = {}
    for r in data:
        by_dept.setdefault(r["department"], []).append(r)
    paths = []
    for department, rs in sorted(by_dept.items()):
        numbered = [{**r, "seq": i} for i, r in enumerate(rs, start=1)]
        paths.append(write_list(
            run_dir / "reminders" / f"{safe_name(department)}_应享未享提醒.xlsx",
            "惠企政策应享未享提醒清单", COLUMNS, numbered, unit=unit, made_on=as_of,
            subtitle=f"执行部门：{department}", sheet="提醒清单", total=False))
    return paths, len(data)
