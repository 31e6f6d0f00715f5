"""What enterprises and departments send back after a demo night: the answers
to its lists (`mianshen demo-data --answers`), so `make run` shows refusals
and a payout list."""
from __future__ import annotations

import csv
import random
from datetime import date
from pathlib import Path

from openpyxl import load_workbook

from pipelines.outputs.workbook import Col, write_workbook


def write_answers(inbox: Path, run_dir: Path, seed: int) -> dict:
    """What enterprises and departments send back after a demo night (`run_dir` =
    output/<as_of>): confirmations of the night's SMS outbox, with 信用承诺 and a
    payee account, a few of them wrong (no commitment, a 收款户名 that is not the
    registered name, a malformed account) so the answers show refusals, about one
    in twelve 放弃; and every 部门审核表 of the night returned with 通过. The
    confirmation workbook is byte-identical for the same night, so dropping it
    again is taken as a duplicate."""
    rng = random.Random(seed)
    banks = ("中国工商银行南阳卧龙支行", "中国农业银行南阳分行营业部", "中国建设银行南阳卧龙支行", "河南南阳农村商业银行卧龙支行")
    written: dict[str, list[str]] = {"confirmations": [], "reviews": []}
    outbox = run_dir / "sms" / "短信待发清单.csv"
    if outbox.is_file():
        with open(outbox, encoding="utf-8-sig", newline="") as fh:
            notified = list(csv.DictReader(fh))
        rows = []
        for i, r in enumerate(notified):
            account = "6222 " + " ".join(f"{rng.randrange(10_000):04d}" for _ in range(3)) + f" {rng.randrange(1000):03d}"
            row = {"uscc": r["统一社会信用代码"], "policy_id": r["政策编号"], "period": r["期次"], "answer": "确认申领",
                   "at": f"{run_dir.name} 10:{i % 60:02d}:00", "commitment": "已承诺", "payee": r["企业名称"],
                   "bank": banks[rng.randrange(len(banks))], "account": account}
            wrong = i % 40
            if i % 12 == 11:
                row.update(answer="放弃", commitment="", payee="", bank="", account="")
            elif wrong == 1:
                row["commitment"] = ""                               # 信用承诺 missing
            elif wrong == 2:
                row["payee"] = "南阳市卧龙区代收服务有限公司"            # someone else's account
            elif wrong == 3:
                row["account"] = account[:8]                         # 7 digits: too short
            rows.append(row)
        columns = [Col(h, k) for h, k in (("统一社会信用代码", "uscc"), ("政策编号", "policy_id"), ("期次", "period"),
                                          ("确认结果", "answer"), ("确认时间", "at"), ("信用承诺", "commitment"),
                                          ("收款户名", "payee"), ("开户银行", "bank"), ("银行账号", "account"))]
        path = write_workbook(inbox / "_confirmations" / f"意愿确认结果_{run_dir.name}.xlsx", "企业申领意愿确认结果",
                              columns, rows, unit="惠企政策服务平台", made_on=date.fromisoformat(run_dir.name),
                              total=False)
        written["confirmations"].append(str(path))
    for book in sorted((run_dir / "review").rglob("*_部门审核表.xlsx")):
        wb = load_workbook(book)
        ws = wb.worksheets[0]
        header = [c.value for c in ws[3]]
        result, opinion = header.index("审核结果") + 1, header.index("审核意见") + 1
        for r in range(4, ws.max_row + 1):
            if ws.cell(r, header.index("uscc") + 1).value:
                ws.cell(r, result, "通过")
                ws.cell(r, opinion, "经核实符合条件")
        target = inbox / "_reviews" / f"{book.parent.name}_{book.stem}_已审核.xlsx"
        target.parent.mkdir(parents=True, exist_ok=True)
        wb.save(target)
        written["reviews"].append(str(target))
    return written
