"""Ingest: file drop and exchange database -> raw archive, staged, quarantine (feeds.md)."""
from __future__ import annotations

import datetime as dt
import json
import sqlite3
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings as hsettings, strategies as st

from pipelines import ingest
from pipelines.config import load_settings
from pipelines.contracts import FEEDS
from pipelines.ingest import cell_text, ingest_feed, sha256_file
from tests.ingest_helpers import AS_OF, deliver, delivery_dir, row, rows, settings_for, uscc, write_csv
from tests.namelist_workbooks import xlsx

YESTERDAY = AS_OF - dt.timedelta(days=1)


@pytest.fixture
def settings(tmp_path):
    return settings_for(tmp_path)


def staged(summary) -> list[dict]:
    return pq.read_table(summary["staged_path"]).to_pylist()


def quarantined(summary) -> list[dict]:
    return pq.read_table(summary["quarantine_path"]).to_pylist()


# --- encodings and formats -------------------------------------------------


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gb18030", "gbk"])
def test_csv_encodings_are_read(settings, encoding):
    deliver(settings, "registry", YESTERDAY, rows("registry", 3), encoding=encoding)
    summary = ingest_feed(settings, "registry", AS_OF)
    assert summary["status"] == "ingested"
    assert [r["name"] for r in staged(summary)] == [f"南阳卧龙测试企业{n}有限公司" for n in (1, 2, 3)]
    assert summary["rows"] == 3 and summary["bad_rows"] == 0


def test_undecodable_bytes_reject_the_delivery_with_a_chinese_reason(settings):
    folder = deliver(settings, "registry", YESTERDAY, rows("registry", 2))
    path = folder / "registry.csv"
    path.write_bytes(path.read_bytes() + b"\x80\x80\xff\xfe,\x80\n")
    summary = ingest_feed(settings, "registry", AS_OF)
    assert summary["status"] == "rejected"
    assert "编码无法识别" in summary["reason"] and "registry.csv" in summary["reason"]
    # never lost: archived as received
    assert (ingest.Path(summary["raw_dir"]) / "registry.csv").read_bytes() == path.read_bytes()


def test_xlsx_numbers_dates_and_text_come_back_as_the_department_typed_them(settings):
    records = rows("tax", 2)
    records[0]["营业收入（万元）"] = 1234567.891        # a float in Excel: no binary noise may reach the decimal
    records[0]["纳税总额（元）"] = 35000.0             # integer-valued float -> "35000"
    records[1]["纳税年度"] = 2025                      # numeric year
    records[1]["研发费用（万元）"] = 0.1
    deliver(settings, "tax", AS_OF, records, fmt="xlsx")
    summary = ingest_feed(settings, "tax", AS_OF)
    assert summary["status"] == "ingested", summary["reason"]
    got = staged(summary)
    assert got[0]["revenue_10k"] == Decimal("1234567.891")
    assert got[0]["tax_paid"] == Decimal("35000")
    assert got[1]["tax_year"] == 2025 and got[1]["rd_expense_10k"] == Decimal("0.1")
    assert [g["_row"] for g in got] == [2, 3] and got[0]["_file"] == "tax.xlsx"


def test_xlsx_dates_read_as_dates(settings):
    records = rows("tech", 1)
    records[0]["发证日期"] = dt.datetime(2024, 12, 1)
    records[0]["有效期至"] = dt.date(2027, 11, 30)
    deliver(settings, "tech", AS_OF, records, fmt="xlsx")
    got = staged(ingest_feed(settings, "tech", AS_OF))
    assert got[0]["issued_on"] == dt.date(2024, 12, 1) and got[0]["expires_on"] == dt.date(2027, 11, 30)


def test_truncated_xlsx_is_rejected_and_kept(settings):
    folder = deliver(settings, "tax", AS_OF, rows("tax", 3), fmt="xlsx")
    path = folder / "tax.xlsx"
    path.write_bytes(path.read_bytes()[:400])
    summary = ingest_feed(settings, "tax", AS_OF)
    assert summary["status"] == "rejected"
    assert "已损坏或不完整" in summary["reason"] and "tax.xlsx" in summary["reason"]
    assert summary["files"][0]["sha256"] == sha256_file(path)


def test_empty_file_is_rejected(settings):
    folder = delivery_dir(settings, "credit", AS_OF)
    folder.mkdir(parents=True)
    (folder / "credit.csv").write_bytes(b"")
    (folder / "_SUCCESS").touch()
    summary = ingest_feed(settings, "credit", AS_OF)
    assert summary["status"] == "rejected" and "为空" in summary["reason"]


def test_header_only_file_is_rejected_as_without_rows(settings):
    folder = delivery_dir(settings, "credit", AS_OF)
    write_csv(folder / "credit.csv", [], headers=list(row("credit")))
    (folder / "_SUCCESS").touch()
    summary = ingest_feed(settings, "credit", AS_OF)
    assert summary["status"] == "rejected" and "没有数据行" in summary["reason"]


def test_several_files_in_one_delivery_are_combined(settings):
    folder = deliver(settings, "credit", AS_OF, rows("credit", 2), name="a.csv")
    deliver(settings, "credit", AS_OF, rows("credit", 1, start=5), fmt="xlsx", name="b.xlsx")
    (folder / "readme.txt").write_text("说明")
    summary = ingest_feed(settings, "credit", AS_OF)
    assert summary["rows"] == 3
    assert {r["_file"] for r in staged(summary)} == {"a.csv", "b.xlsx"}
    assert summary["ignored_files"] == ["readme.txt"]


@pytest.mark.parametrize("state", ["hidden", "veryHidden"])
def test_a_hidden_first_sheet_is_not_read_and_is_named(settings, state):
    """A department's old version kept out of sight in front of the real sheet."""
    def sheet(records):
        return [list(records[0])] + [list(r.values()) for r in records]

    folder = delivery_dir(settings, "registry", AS_OF)
    folder.mkdir(parents=True)
    xlsx(folder / "registry.xlsx", {"2025年旧版": sheet(rows("registry", 2, start=7)), "2026": sheet(rows("registry", 3))},
         hidden={"2025年旧版": state})
    (folder / "_SUCCESS").touch()
    summary = ingest_feed(settings, "registry", AS_OF)
    assert summary["status"] == "ingested"
    assert [r["uscc"] for r in staged(summary)] == [uscc(n) for n in (1, 2, 3)]
    assert summary["hidden_sheets"] == {"registry.xlsx": ["2025年旧版"]}


# --- finding the delivery ----------------------------------------------------


def test_missing_feed_folder_is_missing_with_chinese_reason(settings):
    summary = ingest_feed(settings, "tech", AS_OF)
    assert summary["status"] == "missing"
    assert summary["reason"].startswith("区科学技术局「资质认定」") and "交付目录不存在" in summary["reason"]
    saved = json.loads((settings.quality_dir(AS_OF) / "tech.ingest.json").read_text(encoding="utf-8"))
    assert saved["status"] == "missing"


def test_delivery_without_success_marker_is_left_alone(settings):
    deliver(settings, "registry", YESTERDAY, rows("registry", 2), success=False)
    summary = ingest_feed(settings, "registry", AS_OF)
    assert summary["status"] == "missing"
    assert "_SUCCESS" in summary["reason"] and YESTERDAY.isoformat() in summary["reason"]


def test_newest_complete_delivery_on_or_before_as_of_is_used(settings):
    deliver(settings, "registry", AS_OF - dt.timedelta(days=3), rows("registry", 1))
    deliver(settings, "registry", YESTERDAY, rows("registry", 2))
    deliver(settings, "registry", AS_OF, rows("registry", 3), success=False)          # not complete yet
    deliver(settings, "registry", AS_OF + dt.timedelta(days=1), rows("registry", 4))  # after the run date
    (settings.landing / "registry" / "latest").mkdir()
    summary = ingest_feed(settings, "registry", AS_OF)
    assert summary["delivery_date"] == YESTERDAY.isoformat() and summary["rows"] == 2
    assert summary["incomplete_deliveries"] == [AS_OF.isoformat()]
    assert summary["undated_folders"] == ["latest"]


# --- headers ------------------------------------------------------------------


def test_headers_tolerate_spaces_and_bracket_width(settings):
    records = [{(" 注册资本(万元) " if k == "注册资本（万元）" else k): v for k, v in r.items()} for r in rows("registry", 1)]
    deliver(settings, "registry", YESTERDAY, records)
    summary = ingest_feed(settings, "registry", AS_OF)
    assert staged(summary)[0]["registered_capital_10k"] == Decimal("500.5")
    assert summary["extra_columns"] == []


def test_extra_column_is_ignored_and_reported(settings):
    records = [{**r, "备注": "x"} for r in rows("tax", 2)]
    deliver(settings, "tax", AS_OF, records)
    summary = ingest_feed(settings, "tax", AS_OF)
    assert summary["status"] == "ingested" and summary["extra_columns"] == ["备注"]
    assert "备注" not in staged(summary)[0]


def test_missing_required_column_rejects_naming_it(settings):
    records = [{k: v for k, v in r.items() if k != "统一社会信用代码"} for r in rows("tax", 2)]
    deliver(settings, "tax", AS_OF, records)
    summary = ingest_feed(settings, "tax", AS_OF)
    assert summary["status"] == "rejected" and "缺少必需列「统一社会信用代码」" in summary["reason"]


def test_missing_optional_column_is_reported_and_null(settings):
    records = [{k: v for k, v in r.items() if k != "法定代表人"} for r in rows("registry", 1)]
    deliver(settings, "registry", YESTERDAY, records)
    summary = ingest_feed(settings, "registry", AS_OF)
    assert summary["missing_optional_columns"] == ["法定代表人"] and staged(summary)[0]["legal_rep"] is None


# --- normalisation and typing ---------------------------------------------------


def test_full_width_lower_case_and_spaces_are_normalised_and_counted(settings):
    records = rows("registry", 3)
    records[0]["统一社会信用代码"] = " " + uscc(1).lower() + " "          # spaces + lower case (ends in W)
    records[1]["注册资本（万元）"] = "１２３．５"                               # full-width digits
    records[2]["行业代码"] = "ｃ３３１１"                                       # full-width and lower case
    records[2]["企业名称"] = "  南阳卧龙测试企业3有限公司"
    deliver(settings, "registry", YESTERDAY, records)
    summary = ingest_feed(settings, "registry", AS_OF)
    got = staged(summary)
    assert got[0]["uscc"] == uscc(1) and got[1]["registered_capital_10k"] == Decimal("123.5")
    assert got[2]["industry_code"] == "C3311" and got[2]["name"] == "南阳卧龙测试企业3有限公司"
    norm = summary["normalised"]
    assert norm["uscc"] == {"spaces": 1, "lower_case": 1}
    assert norm["registered_capital_10k"] == {"full_width": 1}
    assert norm["industry_code"] == {"full_width": 1, "lower_case": 1}
    assert norm["name"] == {"spaces": 1}


def test_code_list_spelling_variants_are_mapped_and_counted(settings):
    records = rows("tech", 3)
    records[0]["资质类型"] = '专精特新"小巨人"企业'
    records[1]["资质类型"] = "高新技术 企业"
    records[2]["资质类型"] = "其他资质"            # not a variant: left for validation to reject
    deliver(settings, "tech", AS_OF, records)
    summary = ingest_feed(settings, "tech", AS_OF)
    assert [r["certification"] for r in staged(summary)] == ["专精特新“小巨人”企业", "高新技术企业", "其他资质"]
    assert summary["normalised"]["certification"]["code_variant"] == 2


@pytest.mark.parametrize(
    "text, expected",
    [("2026-01-05", dt.date(2026, 1, 5)), ("2026/1/5", dt.date(2026, 1, 5)), ("20260105", dt.date(2026, 1, 5)),
     ("46027", dt.date(2026, 1, 5)), ("2026年1月5日", dt.date(2026, 1, 5)), ("2026-01-05 00:00:00", dt.date(2026, 1, 5))],
)
def test_date_formats(text, expected):
    assert ingest.parse_date(text) == (expected, None)


@pytest.mark.parametrize("text", ["2026-13-01", "2026-02-30", "5/1/2026", "abc", "123"])
def test_invalid_dates(text):
    assert ingest.parse_date(text) == (None, "不是有效日期")


@pytest.mark.parametrize("text", ["2026-01", "202601", "2026/01", "2026-1", "2026年1月"])
def test_period_formats(text):
    assert ingest.parse_period(text) == ("2026-01", None)


@pytest.mark.parametrize("text", ["2026-13", "2026", "26-01", "2026-00"])
def test_invalid_periods(text):
    assert ingest.parse_period(text)[0] is None


def test_decimals_are_exact_and_bounded():
    assert ingest.parse_decimal("0.1") == (Decimal("0.1"), None)
    assert ingest.parse_decimal("12,000.50") == (Decimal("12000.5"), None)
    assert ingest.parse_decimal("1.1234567")[1] == "小数位超过 6 位"
    assert ingest.parse_decimal("1.1200000") == (Decimal("1.12"), None)
    assert ingest.parse_decimal("1e3")[1] == "不是有效数值"
    # beyond the 28 digits the context holds, with or without a seventh fraction digit (was an uncaught error)
    assert ingest.parse_decimal("10000000000000000000000.0000000")[1] == "数值超出范围"
    assert ingest.parse_decimal("10000000000000000000000.5")[1] == "数值超出范围"
    assert ingest.parse_int("12.0") == (12, None) and ingest.parse_int("12.5")[1] == "不是整数"


def test_cell_text_has_no_float_noise():
    assert cell_text(0.1) == "0.1" and cell_text(12.0) == "12" and cell_text(1234567.891) == "1234567.891"
    assert cell_text(1e-05) == "0.00001" and cell_text(True) == "是"
    assert cell_text(dt.datetime(2026, 1, 5)) == "2026-01-05"
    assert cell_text(dt.datetime(2026, 1, 5, 8, 30)) == "2026-01-05 08:30:00"


def test_an_untypeable_required_cell_quarantines_the_row_another_is_nulled_as_a_field_defect(settings):
    records = rows("registry", 3)
    records[1]["成立日期"] = "2026-13-01"
    records[1]["注册资本（万元）"] = "五百"
    records[2]["经营异常"] = "Y"
    deliver(settings, "registry", YESTERDAY, records)
    summary = ingest_feed(settings, "registry", AS_OF)
    assert summary["rows"] == 3 and summary["bad_rows"] == 1 and summary["good_rows"] == 2
    (bad,) = quarantined(summary)
    assert bad["reason"] == '第3行 成立日期 "2026-13-01" 不是有效日期；第3行 注册资本（万元） "五百" 不是有效数值'
    assert bad["established_on"] == "2026-13-01"   # original text kept
    kept = {r["_row"]: r for r in staged(summary)}
    assert kept[2]["_defects"] is None
    assert kept[4]["abnormal"] is None
    assert kept[4]["_defects"] == [{"column": "abnormal", "value": "Y", "reason": '经营异常 "Y" 应为“是”或“否”'}]


def test_malformed_csv_line_is_quarantined_with_exact_row_numbers(settings):
    folder = deliver(settings, "credit", AS_OF, rows("credit", 3))
    path = folder / "credit.csv"
    lines = path.read_text(encoding="utf-8").splitlines()
    lines.insert(2, "")                                    # a blank line (row 3) ...
    lines.insert(3, "only,two")                            # ... and a short one (row 4)
    path.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")
    summary = ingest_feed(settings, "credit", AS_OF)
    assert [r["_row"] for r in staged(summary)] == [2, 5, 6]
    (bad,) = quarantined(summary)
    assert bad["_row"] == 4 and "第4行 有 2 列" in bad["reason"]


def test_staged_types_follow_the_contract(settings):
    for feed in FEEDS:
        deliver(settings, feed, AS_OF, rows(feed, 2))
        summary = ingest_feed(settings, feed, AS_OF)
        table = pq.read_table(summary["staged_path"])
        # Parquet has no second-resolution timestamps: updated_at comes back as ms and casts losslessly.
        assert table.cast(ingest.staged_schema(FEEDS[feed])).schema == ingest.staged_schema(FEEDS[feed])
        for field in table.schema:
            assert not pa.types.is_floating(field.type)


# --- raw archive --------------------------------------------------------------


def test_raw_copy_is_byte_identical_with_recorded_sha256_and_landing_untouched(settings):
    folder = deliver(settings, "tax", AS_OF, rows("tax", 2), encoding="gb18030")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    summary = ingest_feed(settings, "tax", AS_OF)
    raw = ingest.Path(summary["raw_dir"])
    manifest = json.loads((raw / "manifest.json").read_text(encoding="utf-8"))
    (info,) = manifest["files"]
    assert (raw / "tax.csv").read_bytes() == before["tax.csv"]
    assert info["sha256"] == sha256_file(raw / "tax.csv") == summary["files"][0]["sha256"]
    assert info["size"] == len(before["tax.csv"])
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_redelivery_with_other_content_keeps_both(settings):
    deliver(settings, "tax", AS_OF, rows("tax", 2))
    first = ingest_feed(settings, "tax", AS_OF)["raw_dir"]
    deliver(settings, "tax", AS_OF, rows("tax", 3))
    second = ingest_feed(settings, "tax", AS_OF)["raw_dir"]
    again = ingest_feed(settings, "tax", AS_OF)["raw_dir"]
    assert first != second and second == again
    assert sorted(p.name for p in (settings.work / "raw" / "tax" / AS_OF.isoformat()).iterdir()) == sorted(
        [ingest.Path(first).name, ingest.Path(second).name]
    )
    assert len(pq.read_table(settings.staged / "tax" / f"{AS_OF}.parquet")) == 3


# --- exchange database ------------------------------------------------------------


def test_exchange_database_source_via_sqlite(tmp_path):
    db = tmp_path / "exchange.db"
    with sqlite3.connect(db) as conn:
        conn.execute('create table sb_cbxx ("统一社会信用代码" text, "参保年月" text, "参保人数" integer, '
                     '"新增就业人数" integer, "高校毕业生人数" integer, "欠缴标志" text)')
        conn.executemany("insert into sb_cbxx values (?,?,?,?,?,?)",
                         [(uscc(1), "202610", 25, 3, 1, "否"), (uscc(2), "2026-10", 7, 0, 0, "是")])
    settings = load_settings({
        "MIANSHEN_DATA": str(tmp_path),
        "MIANSHEN_SOURCE_SOCIAL_INSURANCE": f"sqlite:///{db}",
        "MIANSHEN_SOURCE_SOCIAL_INSURANCE_QUERY": "sb_cbxx",
    })
    summary = ingest_feed(settings, "social_insurance", AS_OF)
    assert summary["source"] == "database" and summary["status"] == "ingested"
    assert summary["delivery_date"] == AS_OF.isoformat()
    got = staged(summary)
    assert [(g["period"], g["insured_count"], g["arrears"]) for g in got] == [("2026-10", 25, False), ("2026-10", 7, True)]
    snapshot = ingest.Path(summary["raw_dir"]) / "social_insurance.csv"
    assert snapshot.read_text(encoding="utf-8").splitlines()[0].startswith("统一社会信用代码,参保年月")

    select = dict(settings.sources)
    select["social_insurance"] = (f"sqlite:///{db}", "select * from sb_cbxx where 参保人数 > 10")
    summary = ingest_feed(ingest.Settings(**{**settings.__dict__, "sources": select}), "social_insurance", AS_OF)
    assert summary["rows"] == 1


def test_unreachable_exchange_database_is_missing(tmp_path):
    settings = load_settings({
        "MIANSHEN_DATA": str(tmp_path),
        "MIANSHEN_SOURCE_TAX": f"sqlite:///{tmp_path}/none.db",
        "MIANSHEN_SOURCE_TAX_QUERY": "no_such_table",
    })
    summary = ingest_feed(settings, "tax", AS_OF)
    assert summary["status"] == "missing" and "无法从前置库读取数据" in summary["reason"]


def test_airflow_connection_id_is_resolved_lazily(monkeypatch, tmp_path):
    import sys
    import types

    class FakeHook:
        @staticmethod
        def get_connection(conn_id):
            assert conn_id == "exchange_tax"
            return types.SimpleNamespace(get_uri=lambda: f"sqlite:///{tmp_path}/x.db")

    monkeypatch.setitem(sys.modules, "airflow.sdk", types.SimpleNamespace(BaseHook=FakeHook))
    assert ingest.resolve_url("airflow://exchange_tax") == f"sqlite:///{tmp_path}/x.db"
    assert ingest.resolve_url("postgresql://u@h/db") == "postgresql://u@h/db"


# --- the column-wise fast path types exactly as the parsers do ---------------------------------

_EDGE_TEXTS = {
    "decimal": ["1.5", "-0", "0.000001", "1234567890123456789012.123456", "12345678901234567890123.1",
                "007", "1.1234567", "abc", "1.", ".5", "+1", "", "1,234.5", "-0.0000001", "1e5", "１２"],
    "date": ["2026-02-30", "2026-11-25", "0000-01-01", "0001-01-01", "2000-02-29", "1900-02-29", "", "x",
             "2026-1-5", "9999-12-31", "2026-13-01", "2026-11-25 08:00:00", "20261125", "45000"],
    "datetime": ["2026-11-25 08:00:00", "2026-11-25 24:00:00", "2026-11-25 23:59:60", "2026-02-29 10:00:00",
                 "2024-02-29 10:00:00", "2026-11-25T08:00:00", "2026-11-25 08:00", "", "0000-01-01 00:00:00",
                 "2026-11-25", "2026-11-25 08:00:00.5", "2026-11-25 8:00:00", "2026-11-25 08:61:00"],
}


def _both_ways(kind, texts, monkeypatch):
    from pipelines.contracts import Column

    column, arr = Column(name="x", header="x", type=kind), pa.array(texts, pa.string())
    fast = ingest.type_column(column, arr)
    with monkeypatch.context() as m:
        m.setattr(ingest, "_fast_typed", lambda *a: None)
        slow = ingest.type_column(column, arr)
    return fast, slow


def _same(fast, slow) -> bool:
    indices_same = (fast[1] is None and slow[1] is None) or (fast[1] is not None and slow[1] is not None
                                                             and fast[1].equals(slow[1]))
    return fast[0].equals(slow[0]) and fast[2] == slow[2] and indices_same


@pytest.mark.parametrize("kind", sorted(_EDGE_TEXTS))
def test_fast_typing_agrees_with_the_parsers_on_edge_cases(kind, monkeypatch):
    fast, slow = _both_ways(kind, _EDGE_TEXTS[kind], monkeypatch)
    assert _same(fast, slow)


@given(st.lists(st.from_regex(r"-?[0-9]{1,24}(\.[0-9]{0,8})?", fullmatch=True)
                | st.from_regex(r"[0-9]{4}-[0-9]{2}-[0-9]{2}( [0-9]{2}:[0-9]{2}:[0-9]{2})?", fullmatch=True),
                min_size=1, max_size=30))
@hsettings(max_examples=150, deadline=None)
def test_fast_typing_agrees_with_the_parsers(texts):
    patch = pytest.MonkeyPatch()   # (a fixture would be shared across hypothesis examples)
    try:
        for kind in ("decimal", "date", "datetime"):
            fast, slow = _both_ways(kind, texts, patch)
            assert _same(fast, slow), (kind, texts)
    finally:
        patch.undo()
