"""公示名单: approved results of policies with publicity_days, during their window.
Enterprise name, policy, amount and the window; never phones or personal names."""
from __future__ import annotations

from datetime import date
from pathlib import Path

from pipelines.outputs.review import safe_name
from pipelines.outputs.workbook import Col, cn_date, write_workbook

COLUMNS = (
    Col("序号", "seq", "int"),
    Col("企业名称", "name"),
    Col("统一社会信用代码", "uscc"),
    Col("政策名称", "policy_name"),
    Col("期次", "period"),
    Col("拟兑现金额（元）", "amount", "money"),
    Col("公示开始日期", "publicity_from", "date"),
    Col("公示截止日期", "publicity_to", "date"),
)
# Only these ledger fields reach a public list (no phone, no legal representative).
PUBLIC_FIELDS = ("name", "uscc", "policy_name", "period", "amount", "publicity_from", "publicity_to")


def write(run_dir: Path, as_of: date, in_window: list[dict], unit: str) -> list[Path]:
    by_policy: dict[str, list[dict]] = {}
    for r in in_window:
        by_policy.setdefault(r["policy_id"], []).append(r)
    paths = []
    for policy_id, rows in sorted(by_policy.items()):
        data = [{**{k: r[k] for k in PUBLIC_FIELDS}, "seq": i} for i, r in enumerate(rows, start=1)]
        first = rows[0]
        starts, ends = min(r["publicity_from"] for r in rows), max(r["publicity_to"] for r in rows)
        window = f"公示期：{cn_date(starts)}至{cn_date(ends)}"
        paths.append(write_workbook(
            run_dir / "publicity" / f"{safe_name(policy_id)}_公示名单.xlsx",
            f"{first['policy_name']}拟兑现企业名单公示", COLUMNS, data, unit=first["department"],
            made_on=as_of,
            subtitle=f"{window}。如有异议，请于公示期内向{first['department']}实名反映。",
            sheet="公示名单"))
    return paths
