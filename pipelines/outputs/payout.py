"""拨付清单 for the finance bureau: one workbook per department with a 合计 row,
and the same rows as CSV and Parquet for machine handoff, under the batch id."""
from __future__ import annotations

from datetime import date
from pathlib import Path

import pyarrow as pa

from pipelines.outputs.review import safe_name
from pipelines.files import atomic_write_parquet
from pipelines.outputs.workbook import Col, write_csv, write_workbook

COLUMNS = (
    Col("序号", "seq", "int"),
    Col("批次号", "batch_id"),
    Col("执行部门", "department"),
    Col("政策编号", "policy_id"),
    Col("政策名称", "policy_name"),
    Col("期次", "period"),
    Col("统一社会信用代码", "uscc"),
    Col("企业名称", "name"),
    Col("拨付金额（元）", "amount", "money"),
)
PARQUET_SCHEMA = pa.schema([
    ("batch_id", pa.string()), ("department", pa.string()), ("policy_id", pa.string()),
    ("policy_name", pa.string()), ("period", pa.string()), ("uscc", pa.string()),
    ("name", pa.string()), ("amount", pa.decimal128(38, 2)),
])


def write(run_dir: Path, as_of: date, items: list[dict], unit: str) -> list[Path]:
    """items: batch rows (ledger row + batch_id), already in a stable order."""
    folder = run_dir / "payout"
    if not items:
        return []
    data = [{**r, "seq": i} for i, r in enumerate(items, start=1)]
    batches = "、".join(dict.fromkeys(r["batch_id"] for r in items))
    paths = [write_csv(folder / "payout.csv", COLUMNS, data)]
    table = pa.Table.from_pylist([{f: r[f] for f in PARQUET_SCHEMA.names} for r in items],
                                 schema=PARQUET_SCHEMA)
    atomic_write_parquet(folder / "payout.parquet", table)
    paths.append(folder / "payout.parquet")
    by_dept: dict[str, list[dict]] = {}
    for r in items:
        by_dept.setdefault(r["department"], []).append(r)
    for department, rows in sorted(by_dept.items()):
        dept_rows = [{**r, "seq": i} for i, r in enumerate(rows, start=1)]
        paths.append(write_workbook(
            folder / f"{safe_name(department)}_拨付清单.xlsx", "惠企政策免申即享资金拨付清单",
            COLUMNS, dept_rows, unit=unit, made_on=as_of,
            subtitle=f"执行部门：{department}　批次号：{batches}", sheet="拨付清单"))
    return paths
