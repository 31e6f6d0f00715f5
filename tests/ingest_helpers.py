"""Tiny deliveries for the ingest/validate tests, built from dicts keyed by Chinese headers."""
from __future__ import annotations

import csv
import datetime as dt
import io
from pathlib import Path

from pipelines.config import Settings
from pipelines.contracts import FEEDS
from pipelines.uscc import complete

AS_OF = dt.date(2026, 11, 26)


def settings_for(root: Path) -> Settings:
    return Settings(
        landing=root / "landing",
        inbox=root / "inbox",
        policies=root / "policies",
        output=root / "output",
        work=root / "work",
        warehouse_url=f"sqlite:///{root / 'warehouse.db'}",
        expectations=Path(__file__).resolve().parent.parent / "expectations",
    )


def uscc(n: int) -> str:
    """A valid USCC for enterprise number n (body: 91 + 411303 + 9 digits)."""
    return complete(f"91411303{n:09d}")


def row(feed: str, n: int = 1, **overrides: object) -> dict[str, object]:
    """A valid row of `feed` for enterprise n; overrides by canonical name."""
    base: dict[str, dict[str, object]] = {
        "registry": {
            "uscc": uscc(n), "name": f"南阳卧龙测试企业{n}有限公司", "legal_rep": "张三",
            "established_on": "2015-03-01", "registered_capital_10k": "500.5", "industry_code": "C3311",
            "enterprise_type": "有限责任公司", "status": "存续", "division_code": "411303",
            "address": "卧龙区工业路1号", "phone": "13800000000", "abnormal": "否",
            "updated_at": "2026-11-25 08:00:00",
        },
        "tax": {
            "uscc": uscc(n), "tax_year": "2025", "revenue_10k": "1200.50", "tax_paid": "35000.00",
            "rd_expense_10k": "60.25", "credit_rating": "A", "general_taxpayer": "是",
        },
        "social_insurance": {
            "uscc": uscc(n), "period": "2026-10", "insured_count": "25", "new_hires": "3",
            "graduates_hired": "1", "arrears": "否",
        },
        "tech": {
            "uscc": uscc(n), "certification": "高新技术企业", "cert_no": f"GR2024410{n:05d}",
            "issued_on": "2024-12-01", "expires_on": "2027-11-30",
        },
        "credit": {
            "uscc": uscc(n), "list_type": "失信被执行人", "listed_on": "2026-01-10", "removed_on": "",
        },
    }[feed]
    base.update(overrides)
    spec = FEEDS[feed]
    return {spec.column(k).header: v for k, v in base.items()}


def rows(feed: str, count: int, start: int = 1) -> list[dict[str, object]]:
    return [row(feed, n) for n in range(start, start + count)]


def delivery_dir(settings: Settings, feed: str, day: dt.date | str) -> Path:
    return settings.landing / feed / (day if isinstance(day, str) else day.isoformat())


def write_csv(path: Path, records: list[dict], encoding: str = "utf-8", headers: list[str] | None = None) -> Path:
    headers = headers or list(records[0]) if records else headers or []
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(headers)
    for rec in records:
        writer.writerow(["" if rec.get(h) is None else rec.get(h) for h in headers])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue().encode(encoding))
    return path


def write_xlsx(path: Path, records: list[dict], headers: list[str] | None = None) -> Path:
    import openpyxl

    headers = headers or list(records[0])
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(headers)
    for rec in records:
        sheet.append([rec.get(h) for h in headers])
    path.parent.mkdir(parents=True, exist_ok=True)
    book.save(path)
    return path


def deliver(
    settings: Settings,
    feed: str,
    day: dt.date | str,
    records: list[dict],
    *,
    fmt: str = "csv",
    encoding: str = "utf-8",
    name: str | None = None,
    success: bool = True,
    headers: list[str] | None = None,
) -> Path:
    """Write one delivery folder (one file + _SUCCESS); returns the folder."""
    folder = delivery_dir(settings, feed, day)
    target = folder / (name or f"{feed}.{fmt}")
    if fmt == "xlsx":
        write_xlsx(target, records, headers)
    else:
        write_csv(target, records, encoding, headers)
    if success:
        (folder / "_SUCCESS").touch()
    return folder
