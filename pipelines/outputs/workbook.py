"""Government-office workbooks and CSVs, written atomically.

A workbook looks like what a Chinese district office prints: a merged title
row, 制表日期, a bold frozen header row with thin borders, fitted column
widths, `#,##0.00` amounts, a 合计 row where there are amounts, and a
制表单位 line. Every text cell that a spreadsheet would read as a formula
(starting with = + - @ TAB CR) is neutralised with a leading apostrophe.
"""
from __future__ import annotations

import csv
import io
from copy import copy
import re
import zipfile
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from openpyxl import Workbook
from openpyxl.styles import Alignment, Border, Font, PatternFill, Side
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.datavalidation import DataValidation

from pipelines.files import atomic_write_bytes  # noqa: F401  (the one atomic writer; re-exported)

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# Column widths are fitted to the first rows only: enough for a list a person
# reads, and it keeps width fitting off the hot path of a long list.
WIDTH_SAMPLE_ROWS = 2_000
# A list longer than this is not read row by row by a person (an officer works
# through hundreds, at most a few thousand rows): it is handed on as CSV (UTF-8
# with BOM, opens in Excel) instead of a formatted workbook, which costs about
# 0.2 ms a row to write and bulk lists have hundreds of thousands of rows.
XLSX_MAX_ROWS = 10_000
MONEY_FORMAT = "#,##0.00"
THIN = Side(style="thin", color="000000")
BORDER = Border(left=THIN, right=THIN, top=THIN, bottom=THIN)
HEADER_FILL = PatternFill("solid", fgColor="D9E1F2")


@dataclass(frozen=True)
class Col:
    header: str               # what the reader sees (Chinese), or a machine key when hidden
    key: str                  # the row dict's key
    kind: str = "text"        # text | money | int | date
    hidden: bool = False
    choices: tuple[str, ...] = ()   # a dropdown (data validation) on this column
    wrap: bool = False
    max_width: int = 60


# Control characters an .xlsx cannot hold (openpyxl refuses the whole cell):
# a sender's stray ESC or NUL must not make an export, or the inbox's answer, fail.
ILLEGAL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def neutralise(value: Any) -> Any:
    """Text a spreadsheet would evaluate is prefixed with an apostrophe; control
    characters a workbook cannot hold are dropped. Non-text values (numbers,
    dates) are returned as they are: a negative NUMBER cell is not a formula."""
    if isinstance(value, str):
        if not value.isprintable():   # (C-fast) only then can it hold a control character
            value = ILLEGAL_CHARACTERS.sub("", value)
        if value.startswith(FORMULA_START):
            return "'" + value
    return value


def display_width(text: str) -> int:
    # CJK characters take two columns in Excel's default fonts.
    return sum(2 if ord(ch) > 0x2E7F else 1 for ch in text)


def cn_date(day: date) -> str:
    return f"{day.year}年{day.month:02d}月{day.day:02d}日"


def _cell_value(value: Any, kind: str) -> Any:
    if value is None:
        return None
    if kind == "money":
        return Decimal(value)
    if kind == "date" and isinstance(value, (date, datetime)):
        return value.strftime("%Y-%m-%d")
    if isinstance(value, (Decimal, int)) and kind == "int":
        return int(value)
    return neutralise(value if isinstance(value, (str, int, Decimal)) else str(value))


def _body_styles(ws, columns: Sequence[Col], row: int) -> list:
    """Each column's body style, set once through openpyxl's public API on the
    first body row; every body cell then copies that style array. Assigning
    style objects cell by cell hashes them every time, which made a list of a
    few hundred thousand rows take minutes."""
    styles = []
    for j, col in enumerate(columns, start=1):
        cell = ws.cell(row=row, column=j)
        cell.border = BORDER
        cell.alignment = Alignment(vertical="top", wrap_text=col.wrap)
        if col.kind == "money":
            cell.number_format = MONEY_FORMAT
        elif col.kind == "text":
            cell.number_format = "@"
        styles.append(copy(cell._style))
    return styles


def workbook_bytes(title: str, columns: Sequence[Col], rows: Iterable[dict], *, unit: str,
                   made_on: date, sheet: str = "Sheet1", subtitle: str | None = None,
                   total: bool | None = None, total_cells: dict[str, str] | None = None,
                   footer: Sequence[str] = (), date_label: str = "制表日期") -> bytes:
    """The xlsx bytes of one list. `total`: add a 合计 row (default: when a money column exists);
    `total_cells`: more cells of that row by column key (the 大写 total); `footer`: lines
    under 制表单位 (signature lines); `date_label`: how the date under the title is named
    (a published list has a 发布日期)."""
    rows = list(rows)
    columns = list(columns)
    wb = Workbook()
    ws = wb.active
    ws.title = sheet
    ncol = len(columns)
    last = get_column_letter(ncol)

    ws.merge_cells(f"A1:{last}1")
    ws["A1"] = neutralise(title)
    ws["A1"].font = Font(name="宋体", size=16, bold=True)
    ws["A1"].alignment = Alignment(horizontal="center", vertical="center")
    ws.row_dimensions[1].height = 30
    ws.merge_cells(f"A2:{last}2")
    ws["A2"] = f"{date_label}：" + cn_date(made_on) + (f"　　{subtitle}" if subtitle else "")
    ws["A2"].alignment = Alignment(horizontal="left")

    header_row = 3
    widths = [display_width(c.header) + 2 for c in columns]
    for j, col in enumerate(columns, start=1):
        cell = ws.cell(row=header_row, column=j, value=neutralise(col.header))
        cell.font = Font(bold=True)
        cell.fill = HEADER_FILL
        cell.border = BORDER
        cell.alignment = Alignment(horizontal="center", vertical="center", wrap_text=True)
    ws.freeze_panes = ws.cell(row=header_row + 1, column=1)

    styles = _body_styles(ws, columns, header_row + 1) if rows else []
    r = header_row
    for r, row in enumerate(rows, start=header_row + 1):
        for j, col in enumerate(columns, start=1):
            value = _cell_value(row.get(col.key), col.kind)
            cell = ws.cell(row=r, column=j, value=value)
            cell._style = copy(styles[j - 1])
            if col.kind == "money":
                text = f"{value:,.2f}" if value is not None else ""
            else:
                text = "" if value is None else str(value)
            if r < header_row + WIDTH_SAMPLE_ROWS:
                longest = max((display_width(t) for t in text.splitlines()), default=0)
                widths[j - 1] = max(widths[j - 1], min(longest + 2, col.max_width))
    money_cols = [j for j, c in enumerate(columns, start=1) if c.kind == "money"]
    if total is None:
        total = bool(money_cols)
    if total:
        r += 1
        ws.cell(row=r, column=1, value="合计").font = Font(bold=True)
        for j in range(1, ncol + 1):
            ws.cell(row=r, column=j).border = BORDER
        for j in money_cols:
            key = columns[j - 1].key
            s = sum((Decimal(row[key]) for row in rows if row.get(key) is not None), Decimal("0.00"))
            cell = ws.cell(row=r, column=j, value=s)
            cell.number_format = MONEY_FORMAT
            cell.font = Font(bold=True)
            widths[j - 1] = max(widths[j - 1], display_width(f"{s:,.2f}") + 2)
        if ncol > 1 and 2 not in money_cols:
            ws.cell(row=r, column=2, value=f"共 {len(rows)} 条")
        keys = [c.key for c in columns]
        for key, value in (total_cells or {}).items():
            cell = ws.cell(row=r, column=keys.index(key) + 1, value=neutralise(value))
            cell.font = Font(bold=True)
    ws.cell(row=r + 2, column=1, value=f"制表单位：{unit}")
    for i, line in enumerate(footer, start=r + 4):
        ws.cell(row=i, column=1, value=neutralise(line))

    for j, col in enumerate(columns, start=1):
        letter = get_column_letter(j)
        ws.column_dimensions[letter].width = widths[j - 1]
        if col.hidden:
            ws.column_dimensions[letter].hidden = True
        if col.choices and rows:
            dv = DataValidation(type="list", formula1='"' + ",".join(col.choices) + '"',
                                allow_blank=True, showErrorMessage=True,
                                errorTitle="输入有误", error="请从下拉列表中选择：" + "/".join(col.choices))
            dv.add(f"{letter}{header_row + 1}:{letter}{header_row + len(rows)}")
            ws.add_data_validation(dv)
    ws.print_title_rows = f"{header_row}:{header_row}"
    ws.page_setup.orientation = "landscape"
    ws.page_setup.fitToWidth = 1
    ws.sheet_properties.pageSetUpPr.fitToPage = True
    ws.page_setup.fitToHeight = 0

    buf = io.BytesIO()
    wb.save(buf)
    return pinned(buf.getvalue(), datetime.combine(made_on, time()))


_CORE_STAMP = re.compile(r"(<dcterms:(?:created|modified)[^>]*>)[^<]*")


def pinned(xlsx: bytes, when: datetime) -> bytes:
    """The same workbook with every timestamp set to `when` (zip entries, and the
    created/modified properties openpyxl stamps with the clock on save), so a
    rerun of the same date writes byte-identical files."""
    stamp = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(xlsx)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename == "docProps/core.xml":
                data = _CORE_STAMP.sub(lambda m: m.group(1) + stamp, data.decode("utf-8")).encode("utf-8")
            entry = zipfile.ZipInfo(info.filename, date_time=when.timetuple()[:6])
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.external_attr = info.external_attr
            dst.writestr(entry, data)
    return out.getvalue()


def write_workbook(path: Path, title: str, columns: Sequence[Col], rows: Iterable[dict], **kw) -> Path:
    atomic_write_bytes(Path(path), workbook_bytes(title, columns, rows, **kw))
    return Path(path)


def write_list(path: Path, title: str, columns: Sequence[Col], rows: Sequence[dict] | pa.Table, **kw) -> Path:
    """A workbook for a list a person reads; CSV beside it (same stem) when the
    list is longer than XLSX_MAX_ROWS. `rows` may be an Arrow table (a bulk
    list), whose CSV is then written column-wise."""
    if len(rows) <= XLSX_MAX_ROWS:
        return write_workbook(path, title, columns, rows.to_pylist() if isinstance(rows, pa.Table) else rows, **kw)
    if isinstance(rows, pa.Table):
        return write_csv_tables(Path(path).with_suffix(".csv"), columns, [rows])
    return write_csv(Path(path).with_suffix(".csv"), columns, rows)


def csv_bytes(columns: Sequence[Col], rows: Iterable[dict]) -> bytes:
    """UTF-8 with BOM (so Excel opens it as Chinese), amounts as plain 0.00 text."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow([neutralise(c.header) for c in columns])
    for row in rows:
        out = []
        for c in columns:
            v = row.get(c.key)
            if v is None:
                out.append("")
            elif c.kind == "money":
                out.append(f"{Decimal(v):.2f}")
            elif isinstance(v, (date, datetime)):
                out.append(v.strftime("%Y-%m-%d"))
            else:   # a number is written as it is: -3 is not a formula
                out.append(neutralise(v) if isinstance(v, str) else str(v))
        w.writerow(out)
    return ("\ufeff" + buf.getvalue()).encode("utf-8")


def _where(text: pa.Array, mask: pa.Array, make) -> pa.Array:
    """`text` with make(the masked values) in place of them; made only for those rows (a
    column of millions where a few need it), and nothing at all when none does."""
    if not pc.any(mask).as_py():
        return text
    return pc.replace_with_mask(text, mask, make(text.filter(mask)))


def _byte_table(chars: str) -> np.ndarray:
    table = np.zeros(256, dtype=bool)
    table[[ord(c) for c in chars]] = True
    return table


# Each a set of ASCII characters: in UTF-8 an ASCII byte is never part of another character,
# so a scan of a column's bytes finds exactly the rows holding one (a regex per row is the
# slow way to learn that almost none does).
_ILLEGAL_BYTES = _byte_table("".join(map(chr, [*range(0x09), 0x0b, 0x0c, *range(0x0e, 0x20)])))
_FORMULA_BYTES = _byte_table("".join(FORMULA_START))
_QUOTED_BYTES = _byte_table(',"\r\n')


def _text_bytes(text: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(each row's start in `data`, one past its end as the next row's start; data): a string
    column's offsets and bytes, without copying them."""
    _, offsets, data = text.buffers()
    if offsets is None:   # an empty column
        return np.zeros(len(text) + 1, np.int64), np.zeros(0, np.uint8)
    width = np.int64 if pa.types.is_large_string(text.type) else np.int32
    return (np.frombuffer(offsets, dtype=width)[text.offset:text.offset + len(text) + 1],
            np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8))


def _special_rows(text: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(the rows holding a character a workbook cannot hold, the rows holding one for which the
    csv module quotes a field) of a string column, found in one scan of its bytes."""
    offsets, data = _text_bytes(text)
    body = data[offsets[0]:offsets[-1]]
    at = np.flatnonzero((body < 0x20) | (body == ord('"')) | (body == ord(',')))   # a superset of both
    rows, found = np.searchsorted(offsets, at + offsets[0], side="right") - 1, body[at]
    illegal, quoted = np.zeros(len(text), dtype=bool), np.zeros(len(text), dtype=bool)
    illegal[rows[_ILLEGAL_BYTES[found]]] = True
    quoted[rows[_QUOTED_BYTES[found]]] = True
    if text.null_count:   # (a null slot's bytes, if any, are not its text)
        valid = np.asarray(pc.is_valid(text))
        illegal, quoted = illegal & valid, quoted & valid
    return illegal, quoted


def _neutralised(text: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """(`neutralise` of each row, the rows the csv module quotes): neither removing control
    characters nor the apostrophe changes whether a field is quoted."""
    illegal, quoted = _special_rows(text)
    text = _where(text, pa.array(illegal), lambda few: pc.replace_substring_regex(few, ILLEGAL_CHARACTERS.pattern, ""))
    offsets, data = _text_bytes(text)
    formula = np.zeros(len(text), dtype=bool)
    filled = offsets[1:] > offsets[:-1]
    formula[filled] = _FORMULA_BYTES[data[offsets[:-1][filled]]]
    return _where(text, pa.array(formula), lambda few: pc.binary_join_element_wise(
        pa.scalar("'", few.type), few, pa.scalar("", few.type))), quoted


def neutralise_array(text: pa.Array) -> pa.Array:
    """`neutralise` for a whole column of text."""
    return _neutralised(text.combine_chunks() if isinstance(text, pa.ChunkedArray) else text)[0]


# ---------------------------------------------------------------- CSV, column-wise

CSV_BATCH_ROWS = 100_000


def csv_header(columns: Sequence[Col]) -> bytes:
    """The BOM and the header line, exactly as `csv_bytes` starts."""
    head = io.StringIO()
    csv.writer(head, lineterminator="\r\n").writerow([neutralise(c.header) for c in columns])
    return ("\ufeff" + head.getvalue()).encode("utf-8")


def per_value(values: pa.Array | pa.ChunkedArray, make, type_: pa.DataType = pa.string()) -> pa.Array:
    """make(value) for each row, called once per distinct value (nulls: make(None) once).
    What a column of dates, amounts or policy ids needs, at the cost of its distinct values."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    encoded = pc.dictionary_encode(values)
    out = pa.array([make(v) for v in encoded.dictionary.to_pylist()], type_).take(encoded.indices)
    return pc.fill_null(out, pa.scalar(make(None), type_)) if encoded.null_count else out


def _cell_text(kind: str):
    """csv_bytes' text of one value of a column of this kind."""
    def text(v) -> str:
        if v is None:
            return ""
        if kind == "money":
            return f"{Decimal(v):.2f}"
        if isinstance(v, (date, datetime)):
            return v.strftime("%Y-%m-%d")
        return neutralise(v) if isinstance(v, str) else str(v)
    return text


def csv_cells(col: Col, values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """The CSV text of one column, cell for cell what `csv_bytes` writes (quoted where the
    csv module quotes): text neutralised column-wise, integers cast, every other kind
    (amounts, dates) formatted by Python once per distinct value."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if pa.types.is_large_string(values.type):   # a batch's cells, joined with plain strings
        values = values.cast(pa.string())
    kind = values.type
    quoted = None
    if col.kind != "money" and pa.types.is_string(kind):
        text, quoted = _neutralised(values)
        text = pc.fill_null(text, "")
    elif col.kind != "money" and pa.types.is_integer(kind) or pa.types.is_null(kind):
        text = pc.fill_null(values.cast(pa.string()), "")
    elif col.kind == "money" and (pa.types.is_integer(kind) or pa.types.is_decimal(kind) and kind.scale <= 2):
        # Exact at two places, so Arrow's text is the "%.2f" of the value.
        text = pc.fill_null(values.cast(pa.decimal128(38, 2)).cast(pa.string()), "")
    else:
        text = per_value(values, _cell_text(col.kind))
    # the csv module (QUOTE_MINIMAL, ",", '"', "\r\n") encloses a field holding , " CR or LF
    quoted = _special_rows(text)[1] if quoted is None else quoted
    return _where(text, pa.array(quoted),
                  lambda few: pc.binary_join_element_wise('"', pc.replace_substring(few, '"', '""'), '"', ""))


def _concatenated(lines: pa.Array) -> bytes:
    """The values of a string array without nulls, one after the other (its data buffer)."""
    if not len(lines):
        return b""
    lines = lines.cast(pa.large_string())
    offsets, data = lines.buffers()[1], lines.buffers()[2]
    at = np.frombuffer(offsets, dtype=np.int64)[lines.offset:lines.offset + len(lines) + 1]
    return data.slice(int(at[0]), int(at[-1] - at[0])).to_pybytes()


def csv_body(columns: Sequence[Col], table: pa.Table) -> bytes:
    """The rows of `table` (column names = the columns' keys; absent ones empty) as `csv_bytes`
    writes them after its header, made column by column."""
    n = table.num_rows
    if not n:
        return b""
    cells = [csv_cells(c, table.column(c.key) if c.key in table.column_names else pa.nulls(n, pa.string()))
             for c in columns]
    if len(cells) == 1:   # the csv module quotes a row's only field when it is empty
        cells = [pc.if_else(pc.equal(cells[0], ""), '""', cells[0])]
    lines = pc.binary_join_element_wise(*cells, ",") if len(cells) > 1 else cells[0]
    return _concatenated(pc.binary_join_element_wise(lines, "\r\n", ""))


# A list's rows are looked up in the portrait this many at a time (a lookup hashes the whole
# table it looks in: the portrait, or its phones).
LOOKUP_ROWS = 2_000_000


def regrouped(tables: Iterable[pa.Table], rows: int) -> Iterator[pa.Table]:
    """The stream's tables put together into tables of at least `rows` rows (the last may be
    fewer): a list read in small batches then looks each table made from them up at once."""
    held: list[pa.Table] = []
    count = 0
    for table in tables:
        held.append(table)
        count += table.num_rows
        if count >= rows:
            yield pa.concat_tables(held)
            held, count = [], 0
    if held:
        yield pa.concat_tables(held)


def csv_stream_writer(columns: Sequence[Col], tables: Iterable[pa.Table]):
    """A write(fh) for `files.atomic_write`: the header, then each table's rows as they come
    (in slices of CSV_BATCH_ROWS), so a list of millions of rows is never held whole."""
    def write(fh) -> None:
        fh.write(csv_header(columns))
        for table in tables:
            for start in range(0, table.num_rows, CSV_BATCH_ROWS):
                fh.write(csv_body(columns, table.slice(start, CSV_BATCH_ROWS)))
    return write


def write_csv_tables(path: Path, columns: Sequence[Col], tables: Iterable[pa.Table]) -> Path:
    """The bytes `write_csv` would write for these rows, written table by table."""
    from pipelines import files

    files.atomic_write(Path(path), csv_stream_writer(columns, tables))
    return Path(path)


def write_csv(path: Path, columns: Sequence[Col], rows: Iterable[dict]) -> Path:
    atomic_write_bytes(Path(path), csv_bytes(columns, rows))
    return Path(path)


def clear_stale(folder: Path, keep: Iterable[Path]) -> None:
    """Remove files of an earlier attempt of the same run that this attempt did not write."""
    keep = {Path(p).resolve() for p in keep}
    if folder.is_dir():
        for p in folder.rglob("*"):
            if p.is_file() and p.resolve() not in keep:
                p.unlink()
