"""The one reader of received files (pipelines/received.py); each caller's own
behaviour is tested with it (test_ingest, test_namelist, test_returns)."""
from __future__ import annotations

import datetime as dt
import zipfile
from decimal import Decimal

import pytest

from pipelines import received
from tests.conftest import make_settings
from tests.namelist_workbooks import xls_bytes, xlsx


def test_only_visible_sheets_are_read_in_workbook_order(tmp_path):
    path = xlsx(tmp_path / "b.xlsx", {"旧": [["old"]], "说明": [["note"]], "深藏": [["secret"]], "数据": [["data"]]},
                hidden={"旧": "hidden", "深藏": "veryHidden"})
    book = received.read_workbook(path, make_settings(tmp_path))
    assert [name for name, _ in book.sheets] == ["说明", "数据"] and book.hidden == ["旧", "深藏"]
    first = received.read_workbook(path, make_settings(tmp_path), first_only=True)
    assert first.sheets == [("说明", [["note"]])]
    assert first.notice == "隐藏的工作表「旧」、「深藏」未读取（只读取可见的工作表）"


def test_a_workbook_with_every_sheet_hidden_has_nothing_to_read(tmp_path):
    """Excel and openpyxl refuse to write one; a program can."""
    made = xlsx(tmp_path / "made.xlsx", {"旧": [["old"]], "更旧": [["older"]]}, hidden={"旧": "hidden"})
    path = tmp_path / "b.xlsx"
    with zipfile.ZipFile(made) as src, zipfile.ZipFile(path, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "xl/workbook.xml":
                data = data.replace(b'state="visible"', b'state="hidden"')
            dst.writestr(item, data)
    book = received.read_received(path, make_settings(tmp_path), first_only=True)
    assert book.sheets == [] and book.hidden == ["旧", "更旧"]


def test_a_legacy_xls_is_read_in_the_guarded_child(tmp_path):
    path = tmp_path / "l.xls"
    path.write_bytes(xls_bytes([["代码", "金额"], ["A1", 12.5]]))
    book = received.read_received(path, make_settings(tmp_path))
    assert book.format == "xls" and book.sheets[0][1] == [["代码", "金额"], ["A1", 12.5]]


@pytest.mark.parametrize("data", [b"", b"   \r\n"])
def test_an_empty_file_is_refused(tmp_path, data):
    path = tmp_path / "e.csv"
    path.write_bytes(data)
    with pytest.raises(received.Unreadable, match="为空"):
        received.read_received(path, make_settings(tmp_path))


def test_csv_in_utf8_or_gb18030_and_the_one_reason_for_neither(tmp_path):
    for encoding in ("utf-8", "utf-8-sig", "gb18030"):
        path = tmp_path / f"{encoding}.csv"
        path.write_bytes("代码\t名称\n1\t 卧龙 \n".encode(encoding))
        assert received.read_received(path, make_settings(tmp_path)).sheets == [("", [["代码", "名称"], ["1", " 卧龙 "]])]
    path = tmp_path / "bom_gbk.csv"
    path.write_bytes(received.UTF8_BOM + "代码".encode("gbk"))  # a BOM promises UTF-8: never guessed past it
    with pytest.raises(received.Unreadable, match="「bom_gbk.csv」的编码无法识别"):
        received.read_received(path, make_settings(tmp_path))


def test_cell_text_is_what_the_department_typed():
    assert received.cell_text(None) == "" and received.cell_text(0.1) == "0.1" and received.cell_text(12.0) == "12"
    assert received.cell_text(1e-05) == "0.00001" and received.cell_text(False) == "否"
    assert received.cell_text(Decimal("5.500")) == "5.5"
    assert received.cell_text(dt.datetime(2026, 1, 5, 8, 30)) == "2026-01-05 08:30:00"
