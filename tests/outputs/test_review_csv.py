"""A 部门审核表 beyond XLSX_MAX_ROWS is a CSV with the same columns, which the `_reviews/`
reader takes back once filled in."""
from __future__ import annotations

import csv
import io
from datetime import date
from decimal import Decimal

from pipelines import returns
from pipelines.outputs import review, workbook


def test_a_long_review_list_is_a_csv_the_inbox_reads_back(tmp_path, monkeypatch):
    monkeypatch.setattr(workbook, "XLSX_MAX_ROWS", 2)
    rows = [{"department": "区人社局", "policy_id": "P", "policy_name": "政策", "period": "2026",
             "uscc": f"91411303MA{n:08d}", "name": f"企业{n}", "amount": Decimal("100.00"), "evidence": "[]"}
            for n in range(3)]
    paths = review.write(tmp_path, date(2026, 11, 26), rows, "平台")
    assert [p.name for p in paths] == ["P_部门审核表.csv"]
    lines = list(csv.reader(io.StringIO(paths[0].read_text(encoding="utf-8-sig"))))
    assert lines[0] == [c.header for c in review.COLUMNS] and len(lines) == 4
    head = lines[0]
    for line in lines[1:]:
        line[head.index(review.RESULT)] = review.APPROVE
    filled = tmp_path / "back.csv"
    with open(filled, "w", encoding="utf-8-sig", newline="") as fh:
        csv.writer(fh).writerows(lines)
    table = returns.read_table(filled, (review.RESULT,), alternatives=(returns.HIDDEN,))
    assert [v["uscc"] for _, v in table.rows] == [r["uscc"] for r in rows]
    assert {v[review.RESULT] for _, v in table.rows} == {review.APPROVE}
    assert len(review.write(tmp_path, date(2026, 11, 26), rows[:2], "平台")) == 1   # short: the workbook
    assert (tmp_path / "review" / "区人社局" / "P_部门审核表.xlsx").exists()
