"""Builders for the name-list workbooks the tests drop into an inbox.

Every quirk the reader must survive is produced here from code, so a test
says in one place what the department's file looks like. `.xlsx` files come
from openpyxl. No library here writes legacy `.xls` (xlwt is not installed),
so `xls_bytes` writes a minimal BIFF8 workbook inside a minimal OLE2
compound file by hand: the records Excel itself writes for a single sheet of
numbers and shared strings (BOF, CODEPAGE, XF, BOUNDSHEET, SST, DIMENSIONS,
NUMBER, LABELSST, EOF). calamine reads it.
"""
from __future__ import annotations

import struct
from decimal import Decimal
from pathlib import Path

import openpyxl

from pipelines import uscc

HEADER = ["序号", "统一社会信用代码", "企业名称", "奖补金额（元）", "备注"]


def code(n: int) -> str:
    """A valid USCC, distinct for each n (9141130 + 10 digits + check char)."""
    return uscc.complete(f"9141130{n:010d}")


def registry_rows(n: int) -> list[tuple[str, str]]:
    return [(code(i), f"南阳市卧龙区测试企业{i}有限公司") for i in range(1, n + 1)]


def xlsx(path: Path, sheets: dict[str, list[list[object]]], merge: dict[str, list[str]] | None = None,
         hidden: dict[str, str] | None = None) -> Path:
    """Write one workbook: sheet name -> rows (None leaves a cell empty);
    `hidden`: sheet name -> "hidden" | "veryHidden"."""
    wb = openpyxl.Workbook()
    wb.remove(wb.active)
    for name, rows in sheets.items():
        ws = wb.create_sheet(name)
        ws.sheet_state = (hidden or {}).get(name, "visible")
        for r, row in enumerate(rows, start=1):
            for c, value in enumerate(row, start=1):
                if value is not None:
                    ws.cell(row=r, column=c, value=value)
        for rng in (merge or {}).get(name, []):
            ws.merge_cells(rng)
    wb.save(path)
    return path


def department_list(rows: list[list[object]], title: str = "2026年度稳岗返还企业名单") -> list[list[object]]:
    """A typical department sheet: title, blank, header, rows, 合计, footer."""
    total = sum((Decimal(str(r[3])) for r in rows if isinstance(r[3], (int, float))), Decimal(0))
    return (
        [[title], [None, None, None, None, "填报单位：区人社局"], HEADER]
        + rows
        + [[None, "合计", None, float(total), None], [], ["制表人：张三", None, "审核人：李四", None, "填报日期：2026-03-01"]]
    )


# ---- legacy .xls (BIFF8 in an OLE2 compound file) ---------------------------

def _record(rtype: int, data: bytes) -> bytes:
    return struct.pack("<HH", rtype, len(data)) + data


def _unicode(text: str, length_bytes: int = 2) -> bytes:
    body = text.encode("utf-16-le")
    head = struct.pack("<H" if length_bytes == 2 else "<B", len(text))
    return head + b"\x01" + body


def _biff8(sheet_name: str, rows: list[list[object]]) -> bytes:
    strings: list[str] = []
    index: dict[str, int] = {}
    cells = []
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            if value is None:
                continue
            if isinstance(value, (int, float)):
                cells.append(_record(0x0203, struct.pack("<HHHd", r, c, 15, float(value))))
            else:
                text = str(value)
                if text not in index:
                    index[text] = len(strings)
                    strings.append(text)
                cells.append(_record(0x00FD, struct.pack("<HHHI", r, c, 15, index[text])))
    width = max((len(r) for r in rows), default=0)
    sheet = (
        _record(0x0809, struct.pack("<HHHHII", 0x0600, 0x0010, 0x0DBB, 0x07CC, 0, 6))
        + _record(0x0200, struct.pack("<IIHHH", 0, len(rows), 0, width, 0))
        + b"".join(cells)
        + _record(0x000A, b"")
    )
    sst = _record(0x00FC, struct.pack("<II", len(strings), len(strings)) + b"".join(_unicode(s) for s in strings))
    xf = struct.pack("<HHHBBBBIiH", 0, 0, 0xFFF5, 0x20, 0, 0, 0, 0, 0, 0x20C0)  # a style XF, General
    cell_xf = struct.pack("<HHHBBBBIiH", 0, 0, 0x0001, 0x20, 0, 0, 0, 0, 0, 0x20C0)
    font = struct.pack("<HHHHHBBBB", 200, 0, 0x7FFF, 400, 0, 0, 0, 0, 0) + _unicode("Arial", 1)

    def globals_(sheet_offset: int) -> bytes:
        return (
            _record(0x0809, struct.pack("<HHHHII", 0x0600, 0x0005, 0x0DBB, 0x07CC, 0, 6))
            + _record(0x0042, struct.pack("<H", 1200))
            + b"".join(_record(0x0031, font) for _ in range(5))
            + b"".join(_record(0x00E0, xf) for _ in range(15))
            + _record(0x00E0, cell_xf)
            + _record(0x0085, struct.pack("<IBB", sheet_offset, 0, 0) + _unicode(sheet_name, 1))
            + sst
            + _record(0x000A, b"")
        )

    head = globals_(0)
    return globals_(len(head)) + sheet


def ole_bytes(streams: dict[str, bytes]) -> bytes:
    """A version-3 compound file holding the given streams (each padded to 4096
    bytes so that none lives in the mini stream)."""
    sector = 512
    end, free, fatsect = 0xFFFFFFFE, 0xFFFFFFFF, 0xFFFFFFFD
    fat = [fatsect, end]
    data = b""
    entries = []
    next_sector = 2
    for name, payload in streams.items():
        payload = payload + b"\x00" * (max(4096, len(payload)) - len(payload))
        payload += b"\x00" * (-len(payload) % sector)
        count = len(payload) // sector
        entries.append((name, next_sector, len(payload)))
        fat += [next_sector + i + 1 for i in range(count - 1)] + [end]
        next_sector += count
        data += payload
    fat += [free] * (sector // 4 - len(fat))
    if len(fat) > sector // 4:
        raise ValueError("test workbook too large for a one-sector FAT")

    def entry(name: str, kind: int, left: int, right: int, child: int, start: int, size: int) -> bytes:
        raw = (name + "\x00").encode("utf-16-le")
        return (
            raw.ljust(64, b"\x00")
            + struct.pack("<HBBIII", len(raw), kind, 1, left, right, child)
            + b"\x00" * 16 + struct.pack("<I", 0) + b"\x00" * 16
            + struct.pack("<IQ", start, size)
        )

    nostream = 0xFFFFFFFF
    directory = entry("Root Entry", 5, nostream, nostream, 1, end, 0)
    for i, (name, start, size) in enumerate(entries, start=1):
        right = i + 1 if i < len(entries) else nostream
        directory += entry(name, 2, nostream, right, nostream, start, size)
    if len(directory) > sector:
        raise ValueError("too many streams for one directory sector")
    directory += b"".join(entry("", 0, nostream, nostream, nostream, 0, 0) for _ in range((sector - len(directory)) // 128))
    header = (
        bytes.fromhex("D0CF11E0A1B11AE1") + b"\x00" * 16
        + struct.pack("<HHHHH", 0x3E, 3, 0xFFFE, 9, 6) + b"\x00" * 6
        + struct.pack("<IIIIIIIII", 0, 1, 1, 0, 4096, end, 0, end, 0)
        + struct.pack("<I", 0) + struct.pack("<I", free) * 108
    )
    return header + struct.pack(f"<{sector // 4}I", *fat) + directory + data


def xls_bytes(rows: list[list[object]], sheet_name: str = "名单") -> bytes:
    return ole_bytes({"Workbook": _biff8(sheet_name, rows)})


def encrypted_xlsx_bytes() -> bytes:
    """What Excel writes for a password-protected .xlsx: an OLE2 file with
    EncryptionInfo and EncryptedPackage streams (contents irrelevant here)."""
    return ole_bytes({"EncryptionInfo": b"\x04\x00\x04\x00" + b"\x00" * 60, "EncryptedPackage": b"\x00" * 64})


def name_list_policy(policy_id: str, department: str = "区人力资源和社会保障局") -> str:
    """The YAML of a from_list name-list policy (稳岗返还) in force through 2026."""
    return f"""id: {policy_id}
name: 稳岗返还
department: {department}
basis: 卧政〔2026〕9号
kind: name_list
period: "2026"
valid_from: 2026-01-01
valid_to: 2026-12-31
benefit:
  type: from_list
"""
