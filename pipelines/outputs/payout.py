"""拨付清单 for the finance bureau (lifecycle.md item 5): one workbook per
department with the payee, 政策依据, 资金来源, the amount in figures and in 大写,
a 合计 row in both, 制表日期 and signature lines; and the same rows as CSV and
Parquet for machine handoff, every row under its payout batch id."""
from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Mapping

import pyarrow as pa

from pipelines.files import atomic_write_parquet
from pipelines.outputs.review import safe_name
from pipelines.outputs.workbook import Col, write_csv, write_workbook
from pipelines.rmb import capital

COLUMNS = (
    Col("序号", "seq", "int"),
    Col("批次号", "batch_id"),
    Col("企业名称", "name"),
    Col("统一社会信用代码", "uscc"),
    Col("政策编号", "policy_id"),
    Col("政策名称", "policy_name"),
    Col("期次", "period"),
    Col("政策依据", "basis"),
    Col("资金来源", "fund_source"),
    Col("收款户名", "payee_name"),
    Col("开户银行", "bank_name"),
    Col("银行账号", "bank_account"),
    Col("金额（元）", "amount", "money"),
    Col("金额（大写）", "amount_capital", max_width=40),
)
MACHINE = (Col("执行部门", "department"),)     # the CSV/Parquet carry every department's rows
PARQUET_SCHEMA = pa.schema([
    ("batch_id", pa.string()), ("department", pa.string()), ("name", pa.string()), ("uscc", pa.string()),
    ("policy_id", pa.string()), ("policy_name", pa.string()), ("period", pa.string()), ("basis", pa.string()),
    ("fund_source", pa.string()), ("payee_name", pa.string()), ("bank_name", pa.string()),
    ("bank_account", pa.string()), ("amount", pa.decimal128(38, 2)), ("amount_capital", pa.string()),
])
SIGNATURES = "经办人：__________　　　　审核人：__________　　　　负责人：__________"


def rows(items: list[dict], policies: Mapping[str, object]) -> list[dict]:
    """Batch rows (ledger row + batch_id) with what the payout list adds to them."""
    out = []
    for i, r in enumerate(items, start=1):
        policy = policies.get(r["policy_id"])
        out.append({**r, "seq": i, "basis": getattr(policy, "basis", None) or "",
                    "fund_source": getattr(policy, "fund_source", None) or "",
                    "amount_capital": capital(r["amount"])})
    return out


def write(run_dir: Path, as_of: date, items: list[dict], unit: str,
          policies: Mapping[str, object] | None = None) -> list[Path]:
    """items: batch rows (ledger row + batch_id), already in a stable order;
    policies: policy id -> Policy (basis, fund_source)."""
    folder = run_dir / "payout"
    if not items:
        return []
    data = rows(items, policies or {})
    batches = "、".join(dict.fromkeys(r["batch_id"] for r in items))
    paths = [write_csv(folder / "payout.csv", COLUMNS + MACHINE, data)]
    table = pa.Table.from_pylist([{f: r[f] for f in PARQUET_SCHEMA.names} for r in data], schema=PARQUET_SCHEMA)
    atomic_write_parquet(folder / "payout.parquet", table)
    paths.append(folder / "payout.parquet")
    by_dept: dict[str, list[dict]] = {}
    for r in data:
        by_dept.setdefault(r["department"], []).append(r)
    for department, dept_rows in sorted(by_dept.items()):
        dept_rows = [{**r, "seq": i} for i, r in enumerate(dept_rows, start=1)]
        total = sum((r["amount"] for r in dept_rows), Decimal("0.00"))
        paths.append(write_workbook(
            folder / f"{safe_name(department)}_拨付清单.xlsx", "惠企政策免申即享资金拨付清单",
            COLUMNS, dept_rows, unit=unit, made_on=as_of,
            subtitle=f"执行部门：{department}　批次号：{batches}", sheet="拨付清单",
            total_cells={"amount_capital": capital(total)}, footer=(SIGNATURES,)))
    return paths
