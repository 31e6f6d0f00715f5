"""The name-list reader and checks: every workbook quirk, built by the test."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import openpyxl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import namelist as nl
from tests.conftest import make_settings
from tests.namelist_workbooks import (
    HEADER, code, department_list, encrypted_xlsx_bytes, name_list_policy, registry_rows, xls_bytes, xlsx,
)

REG = registry_rows(60)
NAMES = dict(REG)


@dataclass
class Benefit:
    type: str
    amount: Decimal | None = None


@dataclass
class Policy:
    id: str = "WL-RS-2026-09"
    kind: str = "name_list"
    department: str = "区人力资源和社会保障局"
    benefit: Benefit = None


FROM_LIST = Policy(benefit=Benefit("from_list"))
FIXED = Policy(id="WL-KJ-2026-02", benefit=Benefit("fixed", Decimal("5000")))
PER_HEAD = Policy(id="WL-X", benefit=Benefit("per_head"))


def registry() -> pa.Table:
    return pa.table({"uscc": [c for c, _ in REG], "name": [n for _, n in REG]})


def good(i: int, amount: object = 10000) -> list[object]:
    return [i, code(i), NAMES[code(i)], amount, None]


# ---- amounts ----------------------------------------------------------------

@pytest.mark.parametrize("raw, unit, expected", [
    (12000, 1, "12000.00"),
    (12000.5, 1, "12000.50"),
    ("12,000.00", 1, "12000.00"),
    ("¥3,000", 1, "3000.00"),
    ("￥3,000元", 1, "3000.00"),
    ("￥３，０００元", 1, "3000.00"),
    ("１２０００．５", 1, "12000.50"),
    ("1.2万", 1, "12000.00"),
    ("1.2 万元", 1, "12000.00"),
    (" 800 ", 1, "800.00"),
    (0.1 + 0.2, 1, "0.30"),           # float noise from an Excel formula
    (1.2, 10000, "12000.00"),         # header says 万元
    ("3000元", 10000, "3000.00"),      # the cell names its own unit
    ("-5", 1, "-5.00"),               # parsed; the check says it must be > 0
])
def test_parse_amount_is_exact(raw, unit, expected):
    value = nl.parse_amount(raw, Decimal(unit))
    assert isinstance(value, Decimal) and value == Decimal(expected) and str(value) == expected


@pytest.mark.parametrize("raw", ["12.345", "壹万元", "1,20", "12..0", "abc", True, datetime(2026, 1, 1), float("nan")])
def test_parse_amount_refuses_what_is_not_an_amount(raw):
    with pytest.raises(nl.AmountError) as e:
        nl.parse_amount(raw)
    assert any("\u4e00" <= ch <= "\u9fff" for ch in str(e.value))


def test_empty_amount_is_none():
    assert nl.parse_amount(None) is None and nl.parse_amount("  ") is None


# ---- workbook quirks ------------------------------------------------------

def test_title_rows_merged_title_instructions_sheet_totals_and_footer(tmp_path):
    rows = [good(1), good(2, "12,000.00"), [None] * 5, good(3, "1.2万")]
    path = xlsx(tmp_path / "名单.xlsx",
                {"填表说明": [["填表说明"], ["1. 金额单位为元"], ["2. 代码填18位"]],
                 "Sheet2": department_list(rows)},
                merge={"Sheet2": ["A1:E1"]})
    parsed = nl.read_name_list(path)
    assert parsed.error is None
    assert parsed.sheet == "Sheet2" and parsed.header_row == 3
    assert [r.row for r in parsed.rows] == [4, 5, 7]        # Excel row numbers, blank row 6 skipped
    assert dict(parsed.skipped)[8] == "合计行" and dict(parsed.skipped)[10] == "表尾"
    result = nl.check_name_list(parsed, registry(), FROM_LIST)
    assert result.accepted and not result.errors
    assert [r.amount for r in result.rows] == [Decimal("10000.00"), Decimal("12000.00"), Decimal("12000.00")]


def test_header_cells_with_line_breaks_spaces_brackets_any_order(tmp_path):
    header = ["奖补金额\n(元)", " 企 业 名 称 ", "备注", "统一社会\n信用代码", "序号"]
    rows = [[Decimal(100), NAMES[code(1)], "首批", f" {code(1).lower()} ", 1],
            ["1.5万", NAMES[code(2)], None, code(2), 2]]
    path = xlsx(tmp_path / "a.xlsx", {"名单": [["某某名单"], header] + rows})
    parsed = nl.read_name_list(path)
    assert parsed.header_row == 2
    result = nl.check_name_list(parsed, registry(), FROM_LIST)
    assert result.accepted, result.errors
    assert [(r.uscc, r.amount, r.note) for r in result.rows] == [
        (code(1), Decimal("100.00"), "首批"), (code(2), Decimal("15000.00"), "")]
    assert parsed.rows[0].values["统一社会\n信用代码"] == f" {code(1).lower()} "  # original cell kept for the answer


def test_amount_header_in_ten_thousands(tmp_path):
    path = xlsx(tmp_path / "a.xlsx", {"S": [["统一社会信用代码", "企业名称", "奖补金额（万元）"],
                                            [code(1), NAMES[code(1)], 1.2], [code(2), NAMES[code(2)], "0.35"]]})
    result = nl.check_name_list(nl.read_name_list(path), registry(), FROM_LIST)
    assert [r.amount for r in result.rows] == [Decimal("12000.00"), Decimal("3500.00")]


def test_csv_renamed_xlsx_utf8_and_gbk(tmp_path):
    text = "统一社会信用代码,企业名称,奖补金额（元）\n" + "".join(
        f"{code(i)},{NAMES[code(i)]},\"1,000.00\"\n" for i in (1, 2))
    for encoding in ("utf-8-sig", "gbk"):
        path = tmp_path / f"list_{encoding}.xlsx"
        path.write_bytes(text.encode(encoding))
        parsed = nl.read_name_list(path)
        assert parsed.format == "csv" and parsed.error is None
        result = nl.check_name_list(parsed, registry(), FROM_LIST)
        assert result.accepted and [r.row for r in result.rows] == [2, 3]
        assert result.rows[0].amount == Decimal("1000.00")


def test_legacy_xls_is_read(tmp_path):
    path = tmp_path / "名单.xls"
    path.write_bytes(xls_bytes(department_list([good(1, 12000.5), good(2, "1.2万")])))
    parsed = nl.read_name_list(path)
    assert parsed.format == "xls" and parsed.error is None
    result = nl.check_name_list(parsed, registry(), FROM_LIST)
    assert result.accepted
    assert [(r.row, r.amount) for r in result.rows] == [(4, Decimal("12000.50")), (5, Decimal("12000.00"))]


def test_xls_content_with_xlsx_name_is_read_by_content(tmp_path):
    path = tmp_path / "名单.xlsx"
    path.write_bytes(xls_bytes([HEADER, good(1)]))
    assert nl.read_name_list(path).format == "xls"


@pytest.mark.parametrize("content, words", [
    (b"", "为空"),
    (b"PK\x03\x04this is not a zip", "损坏"),
    (None, "密码"),
    (b"<html><body><table><tr><td>x</td></tr></table></body></html>", "网页"),
    (b"%PDF-1.7 binary", "不是Excel"),
    (bytes(range(256)) * 4, "无法识别"),
])
def test_unreadable_files_are_refused_with_a_chinese_reason(tmp_path, content, words):
    path = tmp_path / "bad.xlsx"
    path.write_bytes(encrypted_xlsx_bytes() if content is None else content)
    parsed = nl.read_name_list(path)
    assert parsed.error and words in parsed.error
    result = nl.check_name_list(parsed, registry(), FROM_LIST)
    assert not result.accepted and result.reason == parsed.error and result.rows == []


def test_a_hidden_first_sheet_is_not_read_and_the_answer_says_so(tmp_path):
    """Last year's list kept out of sight in front of this year's: never what the department sends."""
    path = xlsx(tmp_path / "名单.xlsx", {"2025年（旧）": department_list([good(7), good(8)]),
                                         "2026年": department_list([good(1), good(2)])},
                hidden={"2025年（旧）": "veryHidden"})
    parsed = nl.read_name_list(path)
    assert parsed.sheet == "2026年" and parsed.hidden_sheets == ["2025年（旧）"]
    result = nl.check_name_list(parsed, registry(), FROM_LIST)
    assert [r.uscc for r in result.rows] == [code(1), code(2)]
    assert nl.summary_line(result) == ("已接收 2 行，错误 0 行，金额合计 20,000.00 元；"
                                       "隐藏的工作表「2025年（旧）」未读取（只读取可见的工作表）")
    assert result.to_json()["notice"] == "隐藏的工作表「2025年（旧）」未读取（只读取可见的工作表）"


def test_wrong_workbook_has_no_header(tmp_path):
    path = xlsx(tmp_path / "工资表.xlsx", {"工资": [["姓名", "岗位", "工资"], ["张三", "会计", 5000]]})
    parsed = nl.read_name_list(path)
    assert "未找到名单表头" in parsed.error


# ---- row checks ---------------------------------------------------------------

def test_every_error_category(tmp_path):
    unknown = code(999)
    rows = [
        good(1),
        [2, "91411300000000001X", "某公司", 100, None],          # invalid check character
        [3, unknown, "不存在公司", 100, None],                   # not in registry
        [4, code(4), "别的名字有限公司", 100, None],               # name mismatch
        [5, code(1), NAMES[code(1)], 100, None],                # duplicate of row 4
        [6, code(6), NAMES[code(6)], "一万", None],              # bad amount
        [7, code(7), NAMES[code(7)], 0, None],                  # not > 0
        [8, None, NAMES[code(8)], 100, None],                   # missing code
        [9, code(9), None, None, None],                         # missing name and amount
        [10, 914113000000000000, "数字代码公司", 100, None],       # code stored as a number
    ] + [good(i) for i in range(11, 51)]
    path = xlsx(tmp_path / "a.xlsx", {"S": [HEADER] + rows})
    result = nl.check_name_list(nl.read_name_list(path), registry(), FROM_LIST)
    got = {(e.row, e.category) for e in result.errors}
    assert got == {
        (3, "invalid_uscc"), (4, "not_in_registry"), (5, "name_mismatch"), (6, "duplicate"),
        (7, "bad_amount"), (8, "bad_amount"), (9, "missing_field"), (10, "missing_field"),
        (11, "invalid_uscc"),
    }
    assert [e.message for e in result.errors if e.row == 10] == ["缺少企业名称", "缺少奖补金额"]
    assert "第2行" in next(e.message for e in result.errors if e.category == "duplicate")
    assert "数字" in next(e.message for e in result.errors if e.row == 11)
    assert result.bad_rows == 9 and result.data_rows == 50 and result.accepted   # 18 % bad
    assert code(1) in {r.uscc for r in result.rows}                                # first occurrence kept


def test_bad_row_share_above_20_percent_rejects_whole_file(tmp_path):
    base = [good(i) for i in range(1, 9)]
    two_bad = base + [[9, code(9), "错名", 1, None], [10, code(10), "错名", 1, None]]       # 2/10 = 20 %
    three_bad = two_bad + [[11, code(11), "错名", 1, None]]                               # 3/11 > 20 %
    ok = nl.check_name_list(nl.read_name_list(xlsx(tmp_path / "a.xlsx", {"S": [HEADER] + two_bad})), registry(), FROM_LIST)
    assert ok.accepted and len(ok.rows) == 8 and ok.bad_rows == 2
    bad = nl.check_name_list(nl.read_name_list(xlsx(tmp_path / "b.xlsx", {"S": [HEADER] + three_bad})), registry(), FROM_LIST)
    assert not bad.accepted and bad.rows == [] and "27.3%" in bad.reason and "整份名单未接收" in bad.reason


def test_name_agrees_after_spaces_and_full_width_brackets():
    reg = pa.table({"uscc": [code(1), code(2)], "name": ["南阳市卧龙区（宛城）科技有限公司", "ABC 商贸有限公司"]})
    parsed = nl.ParsedList(file="x", rows=[
        nl.ListRow(2, {}, code(1), "南阳市卧龙区 (宛城) 科技有限公司", "100"),
        nl.ListRow(3, {}, code(2), "ａｂｃ商贸有限公司", "100"),
    ], has_amount=True)
    result = nl.check_name_list(parsed, reg, FROM_LIST)
    assert result.accepted and not result.errors


def test_fixed_benefit_amount_optional_but_must_agree(tmp_path):
    rows = [[1, code(1), NAMES[code(1)], None, None], [2, code(2), NAMES[code(2)], 5000, None],
            [3, code(3), NAMES[code(3)], "3000", None]] + [good(i, None) for i in range(4, 20)]
    parsed = nl.read_name_list(xlsx(tmp_path / "a.xlsx", {"S": [HEADER] + rows}))
    result = nl.check_name_list(parsed, registry(), FIXED)
    assert [(e.row, e.category) for e in result.errors] == [(4, "bad_amount")]
    assert "5,000.00" in result.errors[0].message
    assert nl.summary_line(result, "fixed", Decimal(5000)) == "已接收 18 行，错误 1 行，金额合计 90,000.00 元"
    # computed benefits ignore the list's amount column entirely
    assert nl.check_name_list(parsed, registry(), PER_HEAD).errors == []


def test_from_list_without_amount_column_is_refused(tmp_path):
    parsed = nl.read_name_list(xlsx(tmp_path / "a.xlsx", {"S": [["统一社会信用代码", "企业名称"], [code(1), NAMES[code(1)]]]}))
    result = nl.check_name_list(parsed, registry(), FROM_LIST)
    assert not result.accepted and "奖补金额" in result.reason
    assert nl.check_name_list(parsed, registry(), FIXED).accepted


def test_header_only_is_refused(tmp_path):
    result = nl.check_name_list(nl.read_name_list(xlsx(tmp_path / "a.xlsx", {"S": [HEADER, ["合计", None, None, 0]]})),
                                registry(), FROM_LIST)
    assert not result.accepted and result.reason == "名单中没有企业数据行"


def test_five_thousand_rows_read_quickly(tmp_path):
    reg_rows = [(code(i), f"企业{i}") for i in range(1, 5001)]
    reg = pa.table({"uscc": [c for c, _ in reg_rows], "name": [n for _, n in reg_rows]})
    rows = [[i, c, n, f"{i * 1000:,}.00", None] for i, (c, n) in enumerate(reg_rows, start=1)]
    path = xlsx(tmp_path / "big.xlsx", {"S": department_list(rows)})
    start = time.perf_counter()
    result = nl.check_name_list(nl.read_name_list(path), reg, FROM_LIST)
    elapsed = time.perf_counter() - start
    print(f"\n5,000-row name list read and checked in {elapsed:.2f} s")
    assert result.accepted and len(result.rows) == 5000
    assert elapsed < 30  # generous: the contract is < 5 s on a normal machine


# ---- the CLI function and the stored rows -------------------------------------



def write_registry(settings) -> Path:
    folder = settings.work / "validated" / "registry"
    folder.mkdir(parents=True)
    pq.write_table(registry(), folder / "2026-11-24.parquet")
    pq.write_table(pa.table({"uscc": [code(1)], "name": ["旧名称"]}), folder / "2026-11-01.parquet")
    return folder


@pytest.fixture
def cli_settings(tmp_path):
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "rs.yaml").write_text(name_list_policy("WL-RS-2026-09"), encoding="utf-8")
    settings = make_settings(tmp_path, policies=policies)
    write_registry(settings)
    return settings


def test_check_command_json(cli_settings, tmp_path, capsys):
    path = xlsx(tmp_path / "名单.xlsx", {"S": department_list([good(1, "1.2万"), good(2), [3, code(3), "错名", 5, None],
                                                              good(4), good(5), good(6)])})
    assert nl.namelist_check_command(path, "WL-RS-2026-09", as_json=True, settings=cli_settings) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"file", "accepted", "reason", "rows", "errors"}
    assert out["file"] == "名单.xlsx" and out["accepted"] is True and out["reason"] is None
    assert out["rows"][0] == {"row": 4, "uscc": code(1), "name": NAMES[code(1)], "amount": "12000.00"}
    assert [r["row"] for r in out["rows"]] == [4, 5, 7, 8, 9]
    assert out["errors"] == [{"row": 6, "category": "name_mismatch",
                              "message": f"企业名称“错名”与登记名称“{NAMES[code(3)]}”不一致"}]


def test_check_command_with_registry_file_and_exit_codes(cli_settings, tmp_path, capsys):
    reg = tmp_path / "registry.csv"
    reg.write_text("统一社会信用代码,企业名称,成立日期\n" + f"{code(1).lower()},{NAMES[code(1)]},2020-01-01\n", encoding="gbk")
    path = xlsx(tmp_path / "名单.xlsx", {"S": [HEADER, good(1), good(2)]})
    assert nl.namelist_check_command(path, "WL-RS-2026-09", registry_path=reg, as_json=True, settings=cli_settings) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["accepted"] is False and out["rows"] == [] and out["errors"][0]["category"] == "not_in_registry"
    assert nl.namelist_check_command(path, "NO-SUCH", as_json=True, settings=cli_settings) == 2
    assert "不存在" in json.loads(capsys.readouterr().out)["reason"]
    assert nl.namelist_check_command(path, "WL-RS-2026-09", settings=cli_settings) == 0
    assert "已接收 2 行，错误 0 行，金额合计 20,000.00 元" in capsys.readouterr().out


def test_handler_stores_accepted_rows_for_the_engine(cli_settings, tmp_path):
    path = xlsx(tmp_path / "名单.xlsx", {"S": [HEADER, good(1, "1.2万"), [2, code(2), NAMES[code(2)], 300, "补报"]]})
    result = nl.handle_name_list(cli_settings, path, "ab" * 32, "WL-RS-2026-09")
    assert result.accepted and result.department == "区人力资源和社会保障局"
    assert result.summary == "已接收 2 行，错误 0 行，金额合计 12,300.00 元"
    table = pq.read_table(cli_settings.work / "namelists" / "WL-RS-2026-09" / f"{'ab' * 8}.parquet")
    assert table.schema.equals(nl.NAMELIST_SCHEMA)
    assert table.column("amount").to_pylist() == [Decimal("12000.00"), Decimal("300.00")]
    assert table.column("note").to_pylist() == [None, "补报"]
    assert table.column("source").to_pylist() == ["名单.xlsx"] * 2


def test_handler_refuses_unknown_policy(cli_settings, tmp_path):
    path = xlsx(tmp_path / "名单.xlsx", {"S": [HEADER, good(1)]})
    result = nl.handle_name_list(cli_settings, path, "cd" * 32, "WL-NOPE")
    assert not result.accepted and "WL-NOPE" in result.reason
    assert not (cli_settings.work / "namelists" / "WL-NOPE").exists()


def test_written_workbook_amount_column_is_not_float_in_storage(tmp_path):
    # openpyxl round trip of an amount typed as a number: still exact Decimal
    wb = openpyxl.Workbook()
    wb.active.append(HEADER)
    wb.active.append([1, code(1), NAMES[code(1)], 1234.56, None])
    wb.save(tmp_path / "x.xlsx")
    result = nl.check_name_list(nl.read_name_list(tmp_path / "x.xlsx"), registry(), FROM_LIST)
    assert result.rows[0].amount == Decimal("1234.56") and isinstance(result.rows[0].amount, Decimal)
