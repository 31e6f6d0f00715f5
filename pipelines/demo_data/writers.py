"""Writing a planned delivery: CSV parts or an xlsx with pinned timestamps, then `_SUCCESS`."""
from __future__ import annotations

import io
import re
import zipfile
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from pipelines.demo_data.defects import Plan
from pipelines.demo_data.feeds import Frame

SUCCESS = "_SUCCESS"
XLSX_MAX_ROWS = 50_000          # above this the registry comes as CSV (auto format)
CSV_MAX_ROWS = 1_000_000        # departments split big exports into parts (planted duplicates ride along)
CHUNK_ROWS = 250_000


def _chunk(frame: Frame, plan: Plan, lo: int, hi: int) -> pa.Table:
    """Rows lo..hi of the delivery as a text table with canonical column names, changes applied."""
    cols = frame.render(np.arange(lo, hi, dtype=np.int64))
    a, b = np.searchsorted(plan.rows, [lo, hi])
    if b > a:
        mask = np.zeros(hi - lo, dtype=bool)
        mask[plan.rows[a:b] - lo] = True
        mask_arr = pa.array(mask)
        for c in cols:
            cols[c] = pc.replace_with_mask(cols[c], mask_arr, pa.array(plan.values[c][a:b], pa.string()))
    table = pa.table(cols)
    a, b = np.searchsorted(plan.duplicates, [lo, hi])
    if b > a:
        order = np.sort(np.concatenate([np.arange(hi - lo), plan.duplicates[a:b] - lo]), kind="stable")
        table = table.take(pa.array(order))
    return table


def _write_csv(frame: Frame, plan: Plan, folder: Path, stem: str, encoding: str) -> list[Path]:
    """UTF-8 with BOM ('utf-8-sig') or GB18030, split into parts of CSV_MAX_ROWS rows."""
    header = ",".join(c.header for c in frame.feed.columns) + "\r\n"
    parts = max(1, -(-frame.n // CSV_MAX_ROWS))
    options = pacsv.WriteOptions(include_header=False, quoting_style="none", eol="\r\n")
    written = []
    for part in range(parts):
        name = f"{stem}.csv" if parts == 1 else f"{stem}_{part + 1:02d}.csv"
        path = folder / name
        lo_part, hi_part = part * CSV_MAX_ROWS, min(frame.n, (part + 1) * CSV_MAX_ROWS)
        with path.open("wb") as fh:
            fh.write(header.encode(encoding))
            for lo in range(lo_part, hi_part, CHUNK_ROWS):
                table = _chunk(frame, plan, lo, min(hi_part, lo + CHUNK_ROWS))
                buf = io.BytesIO()
                pacsv.write_csv(table, buf, options)
                data = buf.getvalue()
                if encoding != "utf-8-sig":
                    data = data.decode("utf-8").encode(encoding)
                fh.write(data)
        written.append(path)
    return written


def _cell(value: str | None, kind: str):
    """Typed cells, as a department's Excel export has them; what does not parse stays text."""
    if value is None:
        return None
    try:
        if kind == "date":
            return date.fromisoformat(value)
        if kind == "datetime":
            return datetime.fromisoformat(value)
        if kind == "decimal":
            return Decimal(value)
    except (ValueError, InvalidOperation):
        return value
    return value


def _freeze_zip(path: Path, when: datetime) -> None:
    """Pin zip timestamps and the workbook's created/modified properties: same input, same bytes."""
    stamp = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    with zipfile.ZipFile(path) as zf:
        entries = [(info.filename, zf.read(info.filename)) for info in zf.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries:
            if name == "docProps/core.xml":
                text = data.decode("utf-8")
                text = re.sub(r"(<dcterms:(created|modified)[^>]*>)[^<]*", lambda m: m.group(1) + stamp, text)
                data = text.encode("utf-8")
            info = zipfile.ZipInfo(name, date_time=when.timetuple()[:6])
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)


def _new_workbook(author: str, when: datetime, write_only: bool):
    from openpyxl import Workbook

    wb = Workbook(write_only=write_only)
    wb.properties.creator = author
    wb.properties.lastModifiedBy = author
    wb.properties.created = when
    wb.properties.modified = when
    return wb


def _write_xlsx(frame: Frame, plan: Plan, folder: Path, stem: str) -> list[Path]:
    when = datetime.combine(frame.delivery, datetime.min.time())
    wb = _new_workbook(frame.feed.department, when, write_only=True)
    ws = wb.create_sheet(frame.feed.title)
    ws.append([c.header for c in frame.feed.columns])
    kinds = [c.type for c in frame.feed.columns]
    for lo in range(0, frame.n, CHUNK_ROWS):
        table = _chunk(frame, plan, lo, min(frame.n, lo + CHUNK_ROWS))
        columns = [table.column(c.name).to_pylist() for c in frame.feed.columns]
        for values in zip(*columns):
            ws.append([_cell(v, k) for v, k in zip(values, kinds)])
    path = folder / f"{stem}.xlsx"
    wb.save(path)
    _freeze_zip(path, when)
    return [path]


FILE_FORMATS = {
    # feed -> (format, CSV encoding)
    "registry": ("auto", "utf-8-sig"),
    "tax": ("csv", "gb18030"),
    "social_insurance": ("csv", "utf-8-sig"),
    "tech": ("xlsx", "utf-8-sig"),
    "credit": ("csv", "gb18030"),
}


def _format_for(feed: str, rows: int, fmt: str) -> tuple[str, str]:
    kind, encoding = FILE_FORMATS[feed]
    if kind == "csv" or fmt == "csv":
        return "csv", encoding
    if fmt == "xlsx" or kind == "xlsx":
        return "xlsx", encoding
    return ("xlsx" if rows <= XLSX_MAX_ROWS else "csv"), encoding


def write_delivery(frame: Frame, plan: Plan, out: Path, fmt: str = "auto", complete: bool = True) -> list[Path]:
    folder = out / frame.feed.name / frame.delivery.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():                 # rerunning the generator replaces its own folder
        if old.is_file():
            old.unlink()
    stem = f"{frame.feed.title}_{frame.delivery:%Y%m%d}"
    kind, encoding = _format_for(frame.feed.name, frame.n, fmt)
    files = _write_xlsx(frame, plan, folder, stem) if kind == "xlsx" else _write_csv(frame, plan, folder, stem,
                                                                                     encoding)
    if complete:
        (folder / SUCCESS).write_bytes(b"")
    return files
