"""部门审核表: per policy, the confirmed results with their evidence, to be
returned with 审核结果 (通过/不通过) and 审核意见 filled in. The hidden key
columns let the returned workbook be matched to the ledger."""
from __future__ import annotations

import re
from datetime import date
from pathlib import Path

from pipelines.evidence import readable
from pipelines.outputs.workbook import Col, write_workbook

RESULT, OPINION = "审核结果", "审核意见"
APPROVE, REJECT = "通过", "不通过"
KEY_HEADERS = ("policy_id", "period", "uscc")   # hidden machine keys

COLUMNS = (
    Col("序号", "seq", "int"),
    Col("统一社会信用代码", "uscc"),
    Col("企业名称", "name"),
    Col("政策编号", "policy_id"),
    Col("政策名称", "policy_name"),
    Col("期次", "period"),
    Col("兑现金额（元）", "amount", "money"),
    Col("比对依据", "evidence_text", wrap=True, max_width=70),
    Col(RESULT, "review_result", choices=(APPROVE, REJECT)),
    Col(OPINION, "review_opinion", max_width=40),
    Col("policy_id", "policy_id", hidden=True),
    Col("period", "period", hidden=True),
    Col("uscc", "uscc", hidden=True),
)


def safe_name(text: str) -> str:
    return re.sub(r'[\\/:*?"<>|\s]+', "_", str(text)).strip("._") or "_"


def path_for(run_dir: Path, department: str, policy_id: str) -> Path:
    return run_dir / "review" / safe_name(department) / f"{safe_name(policy_id)}_部门审核表.xlsx"


def write(run_dir: Path, as_of: date, confirmed: list[dict], unit: str) -> list[Path]:
    by_policy: dict[tuple[str, str], list[dict]] = {}
    for r in confirmed:
        by_policy.setdefault((r["department"], r["policy_id"]), []).append(r)
    paths = []
    for (department, policy_id), rows in sorted(by_policy.items()):
        data = [{**r, "seq": i, "evidence_text": readable(r["evidence"]),
                 "review_result": None, "review_opinion": None}
                for i, r in enumerate(rows, start=1)]
        title = f"{rows[0]['policy_name']}兑现部门审核表"
        paths.append(write_workbook(
            path_for(run_dir, department, policy_id), title, COLUMNS, data, unit=unit,
            made_on=as_of, subtitle=f"审核部门：{department}　政策编号：{policy_id}",
            sheet="审核表"))
    return paths
