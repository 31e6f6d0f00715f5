"""Minimal .xlsx files written straight as zip + XML (no openpyxl): fast enough
for a 1,048,576-row sheet, and able to say things openpyxl never would (a
dimension that lies, millions of empty styled rows, a zip bomb)."""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Iterable, Iterator
from xml.sax.saxutils import escape

CONTENT_TYPES = b"""<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">
<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>
<Default Extension="xml" ContentType="application/xml"/>
<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>
<Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>
<Override PartName="/xl/styles.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"/>
</Types>"""
ROOT_RELS = b"""<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">
<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/>
</Relationships>"""
WORKBOOK = b"""<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">
<sheets><sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>"""
WORKBOOK_RELS = b"""<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">
<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/>
<Relationship Id="rId2" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/styles" Target="styles.xml"/>
</Relationships>"""
# style 1: a yellow fill, style 2: the date format 14 (m/d/yyyy)
STYLES = b"""<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<styleSheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">
<fonts count="1"><font><sz val="11"/><name val="Calibri"/></font></fonts>
<fills count="3"><fill><patternFill patternType="none"/></fill><fill><patternFill patternType="gray125"/></fill>
<fill><patternFill patternType="solid"><fgColor rgb="FFFFFF00"/></patternFill></fill></fills>
<borders count="1"><border/></borders>
<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>
<cellXfs count="3"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/>
<xf numFmtId="0" fontId="0" fillId="2" borderId="0" xfId="0" applyFill="1"/>
<xf numFmtId="14" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/></cellXfs>
</styleSheet>"""
HEAD = b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'

DATE = object()  # marker: Cell(DATE, serial) is a number cell with the date style


def col_letter(i: int) -> str:
    out = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        out = chr(65 + r) + out
    return out


def cell_xml(ref: str, value) -> str:
    if value is None:
        return ""
    if isinstance(value, tuple) and value and value[0] is DATE:
        return f'<c r="{ref}" s="2"><v>{value[1]}</v></c>'
    if isinstance(value, bool):
        return f'<c r="{ref}" t="b"><v>{int(value)}</v></c>'
    if isinstance(value, (int, float)):
        return f'<c r="{ref}"><v>{value!r}</v></c>'
    text = str(value)
    if text.startswith("=") and len(text) > 1:  # a live formula with a cached value
        return f'<c r="{ref}"><f>{escape(text[1:])}</f><v>2</v></c>'
    return f'<c r="{ref}" t="inlineStr"><is><t xml:space="preserve">{escape(text)}</t></is></c>'


def row_xml(n: int, values: Iterable) -> str:
    cells = "".join(cell_xml(f"{col_letter(j)}{n}", v) for j, v in enumerate(values))
    return f'<row r="{n}">{cells}</row>'


def write_xlsx(path: Path, sheet_chunks: Iterable[bytes], *, compression=zipfile.ZIP_DEFLATED, level: int = 1) -> Path:
    """Write a one-sheet workbook whose sheet XML is the concatenation of `sheet_chunks`
    (streamed into the zip: memory stays flat however big the sheet)."""
    with zipfile.ZipFile(path, "w", compression, compresslevel=level) as z:
        z.writestr("[Content_Types].xml", CONTENT_TYPES)
        z.writestr("_rels/.rels", ROOT_RELS)
        z.writestr("xl/workbook.xml", WORKBOOK)
        z.writestr("xl/_rels/workbook.xml.rels", WORKBOOK_RELS)
        z.writestr("xl/styles.xml", STYLES)
        with z.open("xl/worksheets/sheet1.xml", "w", force_zip64=True) as f:
            for chunk in sheet_chunks:
                f.write(chunk)
    return path


def sheet(rows: Iterable[Iterable], dimension: str | None = None, batch: int = 20_000) -> Iterator[bytes]:
    """Sheet XML for `rows` (row 1 first), in chunks of `batch` rows."""
    yield HEAD + (f'<dimension ref="{dimension}"/>'.encode() if dimension else b"") + b"<sheetData>"
    buf: list[str] = []
    for n, values in enumerate(rows, start=1):
        buf.append(row_xml(n, values))
        if len(buf) >= batch:
            yield "".join(buf).encode("utf-8")
            buf = []
    if buf:
        yield "".join(buf).encode("utf-8")
    yield b"</sheetData></worksheet>"


def styled_empty_rows(first: int, count: int, batch: int = 50_000) -> Iterator[bytes]:
    """`count` rows with a fill and no value, numbered from `first` (what Excel
    writes after someone formats whole columns down to the bottom)."""
    for start in range(first, first + count, batch):
        stop = min(start + batch, first + count)
        yield "".join(f'<row r="{n}" s="1" customFormat="1"><c r="A{n}" s="1"/><c r="B{n}" s="1"/></row>'
                      for n in range(start, stop)).encode()


def workbook(path: Path, rows: list[list], dimension: str | None = None) -> Path:
    return write_xlsx(path, sheet(rows, dimension))


def styled_workbook(path: Path, header: list, data: list[list], empty_rows: int) -> Path:
    """A small list followed by `empty_rows` styled empty rows."""
    def chunks():
        head = list(sheet([header] + data))
        yield head[0]
        yield from head[1:-1]
        yield from styled_empty_rows(len(data) + 2, empty_rows)
        yield head[-1]
    last = len(data) + 1 + empty_rows
    return write_xlsx(path, chunks())
