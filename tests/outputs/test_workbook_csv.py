"""The column-wise CSV writer makes the very bytes the csv module writes (`csv_bytes`),
whatever the text: quotes, commas, line breaks, Chinese, formula starts, control characters."""
from __future__ import annotations

from datetime import date
from decimal import Decimal

import pyarrow as pa
from hypothesis import given, settings, strategies as st

from pipelines.outputs.workbook import Col, csv_body, csv_bytes, csv_header, regrouped, write_csv_tables

COLUMNS = (Col("序号", "seq", "int"), Col("=名称", "name"), Col("金额", "amount", "money"),
           Col("日期", "day", "date"), Col("备注", "note"), Col("不在表中", "absent"))
TYPES = pa.schema([("seq", pa.int64()), ("name", pa.string()), ("amount", pa.decimal128(20, 2)),
                   ("day", pa.date32()), ("note", pa.string())])

AWKWARD = st.text(alphabet=st.sampled_from(
    list('ab ,"\'\r\n\t=+-@中文企业，。“”') + ["\x00", "\x07", "\x1b", "\x7f", "\u2028", "\xa0", "😀"]), max_size=12)
ROWS = st.lists(st.fixed_dictionaries({
    "seq": st.integers(-10**12, 10**12),
    "name": st.none() | AWKWARD,
    "amount": st.none() | st.decimals(min_value=Decimal("-1e12"), max_value=Decimal("1e12"), places=2),
    "day": st.none() | st.dates(min_value=date(1900, 1, 1), max_value=date(2200, 12, 31)),
    "note": st.none() | AWKWARD | st.sampled_from(["=1+1", "-3", "+86 138", "@SUM(A1)", "", "\t=x", "\r"]),
}), max_size=40)


def columnwise(columns, rows, cut: int = 7) -> bytes:
    table = pa.Table.from_pylist(rows, schema=TYPES)
    out = bytearray(csv_header(columns))
    for start in range(0, len(rows), cut):   # batch by batch, as the stream writes it
        out += csv_body(columns, table.slice(start, cut))
    return bytes(out)


@settings(max_examples=300, deadline=None)
@given(ROWS)
def test_columnwise_csv_is_byte_for_byte_the_csv_modules(rows):
    assert columnwise(COLUMNS, rows) == csv_bytes(COLUMNS, rows)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.fixed_dictionaries({"note": st.none() | AWKWARD}), max_size=10))
def test_a_single_column_list_too(rows):   # the csv module quotes a lone empty field
    cols = (Col("备注", "note"),)
    assert columnwise(cols, rows) == csv_bytes(cols, rows)


def test_the_streamed_file_is_what_write_csv_writes(tmp_path):
    rows = [{"seq": i, "name": f'企业"{i}",\n', "amount": Decimal("1234.50"), "day": date(2026, 11, 26),
             "note": "=危险" if i % 2 else None} for i in range(25)]
    table = pa.Table.from_pylist(rows, schema=TYPES)
    path = write_csv_tables(tmp_path / "x.csv", COLUMNS, [table.slice(0, 10), table.slice(10)])
    assert path.read_bytes() == csv_bytes(COLUMNS, rows)


def test_large_string_columns_are_written_alike():
    rows = [{"seq": 1, "name": '=企业,"甲"', "amount": None, "day": None, "note": "a\x07\r\nb"},
            {"seq": 2, "name": None, "amount": Decimal("-0.50"), "day": date(2026, 1, 2), "note": ""}]
    table = pa.Table.from_pylist(rows, schema=TYPES)
    wide = table.cast(pa.schema([f.with_type(pa.large_string()) if f.type == pa.string() else f for f in TYPES]))
    assert csv_header(COLUMNS) + csv_body(COLUMNS, wide) == csv_bytes(COLUMNS, rows)


@given(sizes=st.lists(st.integers(0, 9), max_size=12), at_least=st.integers(1, 12))
def test_regrouped_keeps_every_row_in_order_in_tables_of_at_least_the_size_asked(sizes, at_least):
    """A stream put together for one portrait lookup per table: nothing lost, nothing reordered,
    and no table but the last smaller than asked."""
    start, tables = 0, []
    for n in sizes:
        tables.append(pa.table({"seq": pa.array(range(start, start + n), pa.int64())}))
        start += n
    out = list(regrouped(iter(tables), at_least))
    assert [v for t in out for v in t.column("seq").to_pylist()] == list(range(start))
    assert all(t.num_rows >= at_least for t in out[:-1])
    assert (not tables) == (not out)
