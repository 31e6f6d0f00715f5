"""督导统计 workbook (lifecycle.md item 9), output/<as_of>/oversight/: the figures per
department, policy and period (departments with overdue items first), a chart of the
median working days from eligible to paid, and the overdue items listed per
department; the same figures as 督导统计.json for the run report and for
`mianshen supervision --as-of` to be compared with."""
from __future__ import annotations

import io
import json
from datetime import date, datetime, time
from pathlib import Path

from openpyxl import load_workbook
from openpyxl.chart import BarChart, Reference

from pipelines.files import atomic_write_bytes
from pipelines.oversight import COUNTED, LABELS, OVERDUE_KEYS
from pipelines.outputs.workbook import Col, pinned, workbook_bytes

FOLDER = "oversight"
WORKBOOK, FIGURES_JSON = "督导统计.xlsx", "督导统计.json"
FIGURE_COLUMNS = (
    Col("部门", "department"), Col("政策编号", "policy_id"), Col("政策名称", "policy_name"), Col("期次", "period"),
    *(Col(LABELS[k], k, "int") for k in COUNTED[:9]), Col(LABELS["paid_amount"], "paid_amount", "money"),
    Col(LABELS["recovered"], "recovered", "int"), Col(LABELS["median_days_to_paid"], "median_days_to_paid"),
    *(Col(LABELS[k], k, "int") for k in OVERDUE_KEYS),
)
OVERDUE_HEADERS = ("部门", "逾期事项", "政策编号", "政策名称", "期次", "统一社会信用代码", "企业名称", "截止日期", "已逾期工作日")
OVERDUE_KEYS_ROW = ("department", "kind", "policy_id", "policy_name", "period", "uscc", "name", "deadline", "days_over")


def figures_path(run_dir: Path) -> Path:
    return run_dir / FOLDER / FIGURES_JSON


def workbook(result: dict, unit: str, made_on: date) -> bytes:
    from decimal import Decimal

    rows = [{**f, "paid_amount": Decimal(f["paid_amount"]),
             "median_days_to_paid": "—" if f["median_days_to_paid"] is None else f"{f['median_days_to_paid']:g}"}
            for f in result["figures"]]
    data = workbook_bytes(f"惠企政策兑现督导统计（截至{made_on.year}年{made_on.month}月{made_on.day}日）",
                          FIGURE_COLUMNS, rows, unit=unit, made_on=made_on, sheet="督导统计", total=False)
    wb = load_workbook(io.BytesIO(data))
    ws = wb.create_sheet("逾期事项")
    ws.append(OVERDUE_HEADERS)
    for r in result["overdue"]:
        ws.append([r[k] for k in OVERDUE_KEYS_ROW])
    paid = [f for f in result["figures"] if f["median_days_to_paid"] is not None]
    if paid:
        cs = wb.create_sheet("拨付时长")
        cs.append(("政策", LABELS["median_days_to_paid"]))
        for f in paid:
            cs.append((f"{f['policy_id']} {f['policy_name']}（{f['department']}）", f["median_days_to_paid"]))
        chart = BarChart()
        chart.type = "bar"
        chart.title = "各政策从符合条件到拨付的中位工作日"
        chart.add_data(Reference(cs, min_col=2, min_row=1, max_row=len(paid) + 1), titles_from_data=True)
        chart.set_categories(Reference(cs, min_col=1, min_row=2, max_row=len(paid) + 1))
        chart.height, chart.width = max(6, len(paid) * 0.8), 22
        cs.add_chart(chart, "D2")
    buf = io.BytesIO()
    wb.save(buf)
    return pinned(buf.getvalue(), datetime.combine(made_on, time()))


def write(run_dir: Path, as_of: date, result: dict, unit: str) -> list[Path]:
    folder = run_dir / FOLDER
    book, figures = folder / WORKBOOK, figures_path(run_dir)
    atomic_write_bytes(book, workbook(result, unit, as_of))
    atomic_write_bytes(figures, json.dumps(result, ensure_ascii=False, indent=2).encode("utf-8"))
    return [book, figures]
