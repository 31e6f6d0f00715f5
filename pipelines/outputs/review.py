"""部门审核表: per policy, the confirmed results with their evidence, the
enterprise's 信用承诺 and payee account, to be returned with 审核结果
(通过/不通过) and 审核意见 filled in; and the 复核表 of results suspended by the
re-check before payout (再确认), with its finding. The hidden key columns let a
returned workbook be matched to the ledger; both come back through `_reviews/`."""
from __future__ import annotations

import re
from datetime import date
from pathlib import Path

from pipelines.evidence import readable
from pipelines.outputs.workbook import Col, write_list, write_workbook

RESULT, OPINION = "审核结果", "审核意见"
APPROVE, REJECT = "通过", "不通过"
KEY_HEADERS = ("policy_id", "period", "uscc")   # hidden machine keys

RESULT_FOR = (    # the result the department decides on, as both workbooks show it
    Col("序号", "seq", "int"),
    Col("统一社会信用代码", "uscc"),
    Col("企业名称", "name"),
    Col("政策编号", "policy_id"),
    Col("政策名称", "policy_name"),
    Col("期次", "period"),
    Col("兑现金额（元）", "amount", "money"),
)
DECISION = (Col(RESULT, "review_result", choices=(APPROVE, REJECT)), Col(OPINION, "review_opinion", max_width=40))
HIDDEN_KEYS = tuple(Col(k, k, hidden=True) for k in KEY_HEADERS)

COLUMNS = RESULT_FOR + (
    Col("比对依据", "evidence_text", wrap=True, max_width=70),
    Col("信用承诺", "commitment"),
    Col("收款户名", "payee_name"),
    Col("开户银行", "bank_name"),
    Col("银行账号", "bank_account"),
) + DECISION + HIDDEN_KEYS
RECHECK_COLUMNS = RESULT_FOR + (Col("暂缓拨付原因", "recheck_reason", wrap=True, max_width=60),) + DECISION + HIDDEN_KEYS


def safe_name(text: str) -> str:
    return re.sub(r'[\\/:*?"<>|\s]+', "_", str(text)).strip("._") or "_"


def path_for(run_dir: Path, department: str, policy_id: str) -> Path:
    return run_dir / "review" / safe_name(department) / f"{safe_name(policy_id)}_部门审核表.xlsx"


def by_department_policy(rows: list[dict]) -> list[tuple[tuple[str, str], list[dict]]]:
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["department"], r["policy_id"]), []).append(r)
    return sorted(groups.items())


def write(run_dir: Path, as_of: date, confirmed: list[dict], unit: str) -> list[Path]:
    paths = []
    for (department, policy_id), rows in by_department_policy(confirmed):
        data = [{**r, "seq": i, "evidence_text": readable(r["evidence"]),
                 "review_result": None, "review_opinion": None}
                for i, r in enumerate(rows, start=1)]
        title = f"{rows[0]['policy_name']}兑现部门审核表"
        # Like every list: beyond XLSX_MAX_ROWS a CSV (the same columns; it comes back through
        # `_reviews/` like the workbook), which nobody would read row by row anyway.
        paths.append(write_list(
            path_for(run_dir, department, policy_id), title, COLUMNS, data, unit=unit,
            made_on=as_of, subtitle=f"审核部门：{department}　政策编号：{policy_id}",
            sheet="审核表"))
    return paths


def recheck_path_for(run_dir: Path, department: str, policy_id: str) -> Path:
    return run_dir / "review" / safe_name(department) / f"{safe_name(policy_id)}_复核表.xlsx"


def write_recheck(run_dir: Path, as_of: date, suspended: list[dict], unit: str) -> list[Path]:
    """复核表: the suspended results of each policy with the re-check's finding. 通过 (with
    a 审核意见, required for an override) pays them after all; 不通过 rejects them."""
    paths = []
    for (department, policy_id), rows in by_department_policy(suspended):
        data = [{**r, "seq": i, "review_result": None, "review_opinion": None}
                for i, r in enumerate(rows, start=1)]
        paths.append(write_workbook(
            recheck_path_for(run_dir, department, policy_id), f"{rows[0]['policy_name']}暂缓拨付复核表",
            RECHECK_COLUMNS, data, unit=unit, made_on=as_of,
            subtitle=(f"复核部门：{department}　政策编号：{policy_id}　拨付前再确认未通过，"
                      "请核实后填写审核结果；“通过”须填写审核意见"), sheet="复核表"))
    return paths
