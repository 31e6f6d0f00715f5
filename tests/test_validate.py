"""Validation with the GX suites, delivery verdicts and the gate (feeds.md quality rules)."""
from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path

from decimal import Decimal

import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings as hsettings, strategies as st

from pipelines.contracts import FEEDS
from pipelines.ingest import ingest_feed
from pipelines.uscc import CHARSET
from pipelines.gx_suites import load_suite, rule_columns
from pipelines.validate import GateClosed, gate, validate_feed
from tests.ingest_helpers import AS_OF, deliver, delivery_dir, row, rows, settings_for, uscc
from tests.namelist_workbooks import xlsx

DELIVERED = AS_OF - dt.timedelta(days=1)  # 2026-11-25


def wrong_check(n: int) -> str:
    good = uscc(n)
    return good[:17] + next(c for c in CHARSET if c != good[17])


def run(settings, feed, records, day=DELIVERED, as_of=AS_OF, accept_drift=False):
    deliver(settings, feed, day, records)
    ingest_feed(settings, feed, as_of)
    return validate_feed(settings, feed, as_of, accept_drift=accept_drift)


def quarantine_rows(verdict) -> dict[int, str]:
    with open(verdict["quarantine_csv"], encoding="utf-8-sig", newline="") as fh:
        return {int(r["行号"]): r["原因"] for r in csv.DictReader(fh)}


# --- every row rule of feeds.md: one tiny delivery per feed, one broken row per rule ----------

DUP = "duplicate"
CASES: dict[str, list[tuple[str, dict | str, str]]] = {
    "registry": [
        ("uscc_empty", {"uscc": ""}, "统一社会信用代码为空"),
        ("uscc_check", {"uscc": wrong_check(901)}, "不是有效的统一社会信用代码"),
        ("uscc_short", {"uscc": "91411303MA12345"}, "不是有效的统一社会信用代码"),
        ("name_empty", {"name": ""}, "企业名称为空"),
        ("established_empty", {"established_on": ""}, "成立日期为空"),
        ("established_future", {"established_on": "2026-11-27"}, '成立日期 "2026-11-27" 晚于运行日期 2026-11-26'),
        ("established_invalid", {"established_on": "2026-13-01"}, '成立日期 "2026-13-01" 不是有效日期'),
        ("capital_negative", {"registered_capital_10k": "-1"}, '注册资本（万元） "-1" 不能小于 0'),
        ("capital_text", {"registered_capital_10k": "五百"}, '注册资本（万元） "五百" 不是有效数值'),
        ("industry_section", {"industry_code": "Z1234"}, '行业代码 "Z1234" 格式不正确'),
        ("industry_long", {"industry_code": "C33111"}, '行业代码 "C33111" 格式不正确'),
        ("status", {"status": "正常"}, '登记状态 "正常" 不在代码表'),
        ("division", {"division_code": "41130"}, '所属区划 "41130" 格式不正确'),
        ("phone_short", {"phone": "1380000000"}, '联系电话 "1380000000" 格式不正确'),
        ("phone_landline", {"phone": "0377-63100000"}, "联系电话"),
        ("abnormal", {"abnormal": "Y"}, '经营异常 "Y" 应为“是”或“否”'),
        ("updated_future", {"updated_at": "2026-11-26 00:00:01"}, "晚于交付日期 2026-11-25"),
        ("updated_invalid", {"updated_at": "昨天"}, '更新时间 "昨天" 不是有效的日期时间'),
        ("duplicate", DUP, "统一社会信用代码"),
    ],
    "tax": [
        ("uscc_check", {"uscc": wrong_check(902)}, "不是有效的统一社会信用代码"),
        ("uscc_empty", {"uscc": ""}, "统一社会信用代码为空"),
        ("year_empty", {"tax_year": ""}, "纳税年度为空"),
        ("year_low", {"tax_year": "1999"}, '纳税年度 "1999" 不在 2000 年至交付年度 2026 年之间'),
        ("year_future", {"tax_year": "2027"}, '纳税年度 "2027" 不在 2000 年至交付年度 2026 年之间'),
        ("year_text", {"tax_year": "二〇二五"}, "不是整数"),
        ("revenue_negative", {"revenue_10k": "-0.01"}, '营业收入（万元） "-0.01" 不能小于 0'),
        ("tax_negative", {"tax_paid": "-5"}, '纳税总额（元） "-5" 不能小于 0'),
        ("rd_negative", {"rd_expense_10k": "-1"}, '研发费用（万元） "-1" 不能小于 0'),
        ("rd_over_revenue", {"rd_expense_10k": "1300", "revenue_10k": "1200"}, "研发费用（万元）1300 大于营业收入（万元）1200"),
        ("rating", {"credit_rating": "E"}, '纳税信用等级 "E" 不在代码表'),
        ("taxpayer", {"general_taxpayer": "1"}, '一般纳税人 "1" 应为“是”或“否”'),
        ("duplicate", DUP, "统一社会信用代码、纳税年度"),
    ],
    "social_insurance": [
        ("uscc_check", {"uscc": wrong_check(903)}, "不是有效的统一社会信用代码"),
        ("period_empty", {"period": ""}, "参保年月为空"),
        ("period_future", {"period": "2026-12"}, '参保年月 "2026-12" 晚于交付月份 2026-11'),
        ("period_invalid", {"period": "2026-13"}, "不是有效年月"),
        ("insured_negative", {"insured_count": "-1"}, '参保人数 "-1" 不能小于 0'),
        ("new_hires_negative", {"new_hires": "-2", "graduates_hired": "0"}, '新增就业人数 "-2" 不能小于 0'),
        ("graduates_negative", {"graduates_hired": "-1"}, '高校毕业生人数 "-1" 不能小于 0'),
        ("graduates_over_new_hires", {"graduates_hired": "4", "new_hires": "3"}, "高校毕业生人数 4 大于新增就业人数 3"),
        ("insured_text", {"insured_count": "二十"}, '参保人数 "二十" 不是整数'),
        ("arrears", {"arrears": "N"}, '欠缴标志 "N" 应为“是”或“否”'),
        ("duplicate", DUP, "统一社会信用代码、参保年月"),
    ],
    "tech": [
        ("uscc_check", {"uscc": wrong_check(904)}, "不是有效的统一社会信用代码"),
        ("certification", {"certification": "其他资质"}, '资质类型 "其他资质" 不在代码表'),
        ("cert_no_empty", {"cert_no": ""}, "证书编号为空"),
        ("expires_before_issued", {"issued_on": "2025-01-01", "expires_on": "2024-12-31"}, "有效期至 2024-12-31 早于发证日期 2025-01-01"),
        ("issued_invalid", {"issued_on": "2025-02-30"}, '发证日期 "2025-02-30" 不是有效日期'),
        ("duplicate", DUP, "统一社会信用代码、资质类型、证书编号"),
    ],
    "credit": [
        ("uscc_check", {"uscc": wrong_check(905)}, "不是有效的统一社会信用代码"),
        ("list_type", {"list_type": "黑名单"}, '名单类型 "黑名单" 不在代码表'),
        ("listed_empty", {"listed_on": ""}, "列入日期为空"),
        ("removed_before_listed", {"listed_on": "2026-03-01", "removed_on": "2026-02-28"}, "移出日期 2026-02-28 早于列入日期 2026-03-01"),
        ("duplicate", DUP, "统一社会信用代码、名单类型、列入日期"),
    ],
}
# Cases whose bad value is outside the key and required columns (feeds.md, Row-level
# outcome): the row is kept, that one value becomes null and counts as a field defect.
FIELD_CASES: dict[str, dict[str, str]] = {
    "registry": {
        "capital_negative": "registered_capital_10k", "capital_text": "registered_capital_10k",
        "industry_section": "industry_code", "industry_long": "industry_code", "status": "status",
        "division": "division_code", "phone_short": "phone", "phone_landline": "phone",
        "abnormal": "abnormal", "updated_future": "updated_at", "updated_invalid": "updated_at",
    },
    "tax": {
        "revenue_negative": "revenue_10k", "tax_negative": "tax_paid", "rd_negative": "rd_expense_10k",
        "rd_over_revenue": "rd_expense_10k", "rating": "credit_rating", "taxpayer": "general_taxpayer",
    },
    "social_insurance": {
        "insured_negative": "insured_count", "new_hires_negative": "new_hires",
        "graduates_negative": "graduates_hired", "graduates_over_new_hires": "graduates_hired",
        "insured_text": "insured_count", "arrears": "arrears",
    },
    "tech": {"expires_before_issued": "expires_on", "issued_invalid": "issued_on"},
    "credit": {"removed_before_listed": "removed_on"},
}
ROW_CASES = [(f, c[0]) for f, cases in CASES.items() for c in cases if c[0] not in FIELD_CASES[f]]
# Rows that sit exactly on a boundary and must pass.
GOOD: dict[str, list[dict]] = {
    "registry": [{"phone": "", "established_on": "2026-11-26", "updated_at": "2026-11-25 23:59:59",
                  "registered_capital_10k": "0"}, {"industry_code": "A"}],
    "tax": [{"rd_expense_10k": "1200", "revenue_10k": "1200", "tax_year": "2026", "credit_rating": "b"},
            {"tax_year": "2000", "revenue_10k": "", "rd_expense_10k": "5"}],
    "social_insurance": [{"period": "2026-11", "graduates_hired": "3", "new_hires": "3"}, {"period": "202611"}],
    "tech": [{"certification": "专精特新“小巨人”企业", "issued_on": "2025-01-01", "expires_on": "2025-01-01"}, {}],
    "credit": [{"listed_on": "2026-03-01", "removed_on": "2026-03-01"}, {"removed_on": ""}],
}


@pytest.fixture(scope="module")
def rule_runs(tmp_path_factory):
    out = {}
    for feed, cases in CASES.items():
        settings = settings_for(tmp_path_factory.mktemp(feed))
        records, expected = [], {}
        for i, (case, overrides, words) in enumerate(cases):
            if overrides == DUP:
                expected[len(records) + 2] = expected[len(records) + 3] = (case, words)
                records += [row(feed, 500 + i), row(feed, 500 + i)]
            else:
                expected[len(records) + 2] = (case, words)
                records.append(row(feed, 500 + i, **overrides))
        records += [row(feed, 800 + j, **o) for j, o in enumerate(GOOD[feed])]
        out[feed] = (run(settings, feed, records), expected, len(records))
    return out


@pytest.mark.parametrize("feed, case", ROW_CASES)
def test_each_key_or_required_rule_quarantines_the_breaking_row_with_its_reason(rule_runs, feed, case):
    verdict, expected, _ = rule_runs[feed]
    reasons = quarantine_rows(verdict)
    lines = [n for n, (c, _) in expected.items() if c == case]
    for line in lines:
        assert line in reasons, f"row {line} ({case}) not quarantined"
        words = expected[line][1]
        assert reasons[line].startswith(f"第{line}行 ") and words in reasons[line], reasons[line]
        if case == "duplicate":
            assert "重复" in reasons[line]


@pytest.mark.parametrize("feed, case", [(f, c) for f in FIELD_CASES for c in FIELD_CASES[f]])
def test_each_other_rule_nulls_the_value_and_counts_a_field_defect(rule_runs, feed, case):
    verdict, expected, _ = rule_runs[feed]
    (line,) = [n for n, (c, _) in expected.items() if c == case]
    assert line not in quarantine_rows(verdict), f"row {line} ({case}) quarantined for a field defect"
    column = FIELD_CASES[feed][case]
    defects = verdict["field_defects"][column]
    assert defects["header"] == FEEDS[feed].column(column).header
    (example,) = [e for e in defects["examples"] if e["row"] == line]
    assert expected[line][1] in example["reason"] and example["file"] == f"{feed}.csv"
    assert not example["reason"].startswith("第")


@pytest.mark.parametrize("feed", list(CASES))
def test_only_breaking_rows_are_quarantined_and_the_batch_is_rejected(rule_runs, feed):
    verdict, expected, total = rule_runs[feed]
    bad = {n for n, (case, _) in expected.items() if case not in FIELD_CASES[feed]}
    assert set(quarantine_rows(verdict)) == bad
    assert verdict["rows"] == total and verdict["bad_rows"] == len(bad)
    assert verdict["good_rows"] == total - len(bad)
    # one nulled value per field case: a rule over two columns is not held against a value already nulled
    assert verdict["field_defect_values"] == len(FIELD_CASES[feed])
    assert verdict["status"] == "rejected" and "整批拒收" in verdict["reason"]
    assert verdict["validated_path"] is None


def test_quarantine_csv_is_excel_friendly_with_chinese_headers(rule_runs):
    verdict = rule_runs["registry"][0]
    raw = Path(verdict["quarantine_csv"]).read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    header = raw.decode("utf-8-sig").splitlines()[0].split(",")
    assert header[:4] == ["行号", "文件", "原因", "统一社会信用代码"]


def test_data_docs_are_built_into_the_quality_folder(rule_runs):
    verdict = rule_runs["tax"][0]
    index = Path(verdict["data_docs"])
    assert index.name == "index.html" and index.exists()
    assert list((index.parent / "validations" / "tax").rglob("*.html"))


# --- suites are the source of truth and cover the contract ---------------------------


@pytest.mark.parametrize("feed", list(FEEDS))
def test_suite_covers_every_contract_rule(feed):
    settings = settings_for(Path("/nonexistent"))
    suite = load_suite(settings, feed)
    spec = FEEDS[feed]
    seen = {(e["type"], e["kwargs"].get("column")) for e in suite["expectations"]}
    assert all(e["meta"]["reason_zh"] for e in suite["expectations"])
    for c in spec.columns:
        if c.required:
            assert ("expect_column_values_to_not_be_null", c.name) in seen
        if c.type == "uscc":
            assert ("expect_column_values_to_be_valid_uscc", c.name) in seen
        if c.allowed:
            assert ("expect_column_values_to_be_in_set", c.name) in seen
        if c.pattern:
            assert ("expect_column_values_to_match_regex", c.name) in seen
        if c.min_value is not None:
            assert ("expect_column_values_to_be_between", c.name) in seen


# --- delivery-level outcomes ---------------------------------------------------------


def test_bad_share_at_threshold_is_accepted_above_is_rejected(tmp_path):
    settings = settings_for(tmp_path / "a")
    records = rows("tax", 10)
    records[3]["纳税年度"] = "1999"  # 1 of 10 = 10 %, the threshold itself
    records[6]["纳税信用等级"] = "Z"  # a field defect: the row is kept, the share counts bad rows only
    verdict = run(settings, "tax", records)
    assert verdict["status"] == "accepted" and verdict["bad_share"] == "0.100000"
    assert verdict["field_defects"]["credit_rating"]["count"] == 1
    validated = pq.read_table(verdict["validated_path"])
    assert validated.num_rows == 9 and validated.schema.names == FEEDS["tax"].arrow_schema().names
    assert set(quarantine_rows(verdict)) == {5}

    settings = settings_for(tmp_path / "b")
    records = rows("tax", 10)
    records[3]["纳税年度"] = "2027"     # a rule failure ...
    records[4]["纳税年度"] = "x"         # ... plus an ingest failure: 20 %
    verdict = run(settings, "tax", records)
    assert verdict["status"] == "rejected" and verdict["bad_rows"] == 2
    assert "不合格 2 行，占 20%，超过允许的 10%" in verdict["reason"]
    assert not (settings.work / "validated" / "tax").exists()


# --- field defects: a bad value outside the key and required columns costs the value, not the row ----------


def test_a_mistyped_optional_registry_value_costs_the_value_not_the_registration(tmp_path):
    from pipelines import portrait

    settings = settings_for(tmp_path)
    records = rows("registry", 10)
    records[0] = row("registry", 1, phone="1380000")                 # row 2: a mistyped phone (GX rule)
    records[1] = row("registry", 2, registered_capital_10k="-3")     # row 3: a negative capital (GX rule)
    records[2] = row("registry", 3, enterprise_type="外星独资企业")   # row 4: no code list in feeds.md: kept as sent
    records[3] = row("registry", 4, abnormal="N", phone="12")        # row 5: untypable at ingest, and a bad phone
    verdict = run(settings, "registry", records)
    # 4 of 10 rows with a defect would be 40 % bad rows; field defects are not bad rows
    assert (verdict["status"], verdict["bad_rows"], verdict["bad_share"]) == ("accepted", 0, "0.000000")
    assert verdict["good_rows"] == 10 and quarantine_rows(verdict) == {}

    validated = {r["uscc"]: r for r in pq.read_table(verdict["validated_path"]).to_pylist()}
    assert len(validated) == 10
    assert validated[uscc(1)]["phone"] is None and validated[uscc(1)]["name"] == "南阳卧龙测试企业1有限公司"
    assert validated[uscc(2)]["registered_capital_10k"] is None and validated[uscc(2)]["phone"] == "13800000000"
    assert validated[uscc(3)]["enterprise_type"] == "外星独资企业"
    assert validated[uscc(4)]["abnormal"] is None and validated[uscc(4)]["phone"] is None

    saved = json.loads(settings.verdict_path("registry", AS_OF).read_text(encoding="utf-8"))
    assert saved["field_defects"] == verdict["field_defects"]
    assert list(saved["field_defects"]) == ["registered_capital_10k", "phone", "abnormal"]   # contract order
    assert saved["field_defect_values"] == 4
    assert saved["field_defects"]["phone"] == {
        "header": "联系电话",
        "count": 2,
        "examples": [
            {"row": 2, "file": "registry.csv", "value": "1380000", "reason": '联系电话 "1380000" 格式不正确，应为11位手机号码'},
            {"row": 5, "file": "registry.csv", "value": "12", "reason": '联系电话 "12" 格式不正确，应为11位手机号码'},
        ],
    }
    assert saved["field_defects"]["registered_capital_10k"]["examples"][0]["value"] == "-3"
    assert saved["field_defects"]["abnormal"]["examples"] == [
        {"row": 5, "file": "registry.csv", "value": "N", "reason": '经营异常 "N" 应为“是”或“否”'}
    ]

    # the portrait: still registered, the nulled values missing
    table = pq.read_table(portrait.build(settings, AS_OF))
    enterprise = {r["uscc"]: r for r in table.to_pylist()}
    assert all(enterprise[uscc(n)]["registered"] for n in (1, 2, 3, 4))
    assert enterprise[uscc(1)]["phone"] is None and enterprise[uscc(2)]["registered_capital_10k"] is None
    assert enterprise[uscc(4)]["abnormal"] is None


def test_a_bad_key_or_required_value_still_quarantines_the_row_with_all_its_reasons(tmp_path):
    settings = settings_for(tmp_path)
    records = rows("registry", 80)
    records[0] = row("registry", 1, uscc=wrong_check(1), phone="1380000")   # row 2
    records[1] = row("registry", 2, name="", abnormal="N")                  # row 3
    records[2] = row("registry", 3, established_on="不详", phone="1")        # row 4: quarantined at ingest
    verdict = run(settings, "registry", records)
    reasons = quarantine_rows(verdict)
    assert set(reasons) == {2, 3, 4} and verdict["bad_rows"] == 3
    assert "不是有效的统一社会信用代码" in reasons[2] and '第2行 联系电话 "1380000" 格式不正确' in reasons[2]
    assert "企业名称为空" in reasons[3] and '第3行 经营异常 "N" 应为“是”或“否”' in reasons[3]
    assert '第4行 成立日期 "不详" 不是有效日期' in reasons[4]
    # a quarantined row's bad values are in its reasons, not counted again as field defects
    assert verdict["field_defects"] == {} and verdict["field_defect_values"] == 0
    validated = pq.read_table(verdict["validated_path"])
    assert uscc(2) not in validated["uscc"].to_pylist() and validated.num_rows == 77


def test_a_rule_over_two_columns_nulls_the_column_whose_rule_it_is(tmp_path):
    settings = settings_for(tmp_path)
    records = rows("credit", 100)
    records[0] = row("credit", 1, listed_on="2026-03-01", removed_on="2026-02-28")
    verdict = run(settings, "credit", records, day=AS_OF)
    assert verdict["status"] == "accepted" and verdict["bad_rows"] == 0
    # still listed: an unreadable removal date never takes an enterprise off the list
    first = pq.read_table(verdict["validated_path"]).to_pylist()[0]
    assert first["uscc"] == uscc(1) and first["listed_on"] == dt.date(2026, 3, 1) and first["removed_on"] is None
    assert verdict["field_defects"]["removed_on"]["count"] == 1


@pytest.mark.parametrize("feed", list(FEEDS))
def test_field_defect_rules_name_a_column_outside_the_key_and_required_ones(feed):
    spec = FEEDS[feed]
    suite = load_suite(settings_for(Path("/nonexistent")), feed)
    for e in suite["expectations"]:
        columns = rule_columns(e["kwargs"])
        column = e["meta"].get("field_defect")
        if column is None:
            assert set(columns) & spec.row_columns, f"{e['type']} {columns}: a rule on optional columns only must null"
        else:
            assert column in columns and column not in spec.row_columns


def test_stale_delivery_names_feed_department_and_days_late(tmp_path):
    settings = settings_for(tmp_path)
    verdict = run(settings, "tax", rows("tax", 3), day=AS_OF - dt.timedelta(days=40))
    assert verdict["status"] == "stale"
    assert verdict["reason"] == (
        "区税务局「年度纳税信息」数据已过期：最新交付为 2026-10-17，距运行日 40 天，超过时效（35 天）5 天。"
    )
    assert verdict["validated_path"] is None


def test_delivery_exactly_max_age_old_is_fresh(tmp_path):
    settings = settings_for(tmp_path)
    records = [row("registry", n, updated_at="2026-11-24") for n in (1, 2, 3)]
    verdict = run(settings, "registry", records, day=AS_OF - dt.timedelta(days=2))
    assert verdict["status"] == "accepted" and verdict["age_days"] == 2


def test_row_count_drift_stops_unless_accepted(tmp_path):
    settings = settings_for(tmp_path)
    first_day = AS_OF - dt.timedelta(days=1)
    assert run(settings, "registry", rows("registry", 10), day=first_day, as_of=first_day)["status"] == "accepted"

    verdict = run(settings, "registry", rows("registry", 13), day=AS_OF)
    assert verdict["status"] == "drift" and verdict["drift"] == "0.300000"
    assert "较上次通过校验的交付（2026-11-25，10 行）变化 30%" in verdict["reason"]
    assert verdict["validated_path"] is None

    verdict = validate_feed(settings, "registry", AS_OF, accept_drift=True)
    assert verdict["status"] == "accepted" and verdict["drift_accepted"] is True
    assert any("已由操作员确认接受" in w for w in verdict["warnings"])
    # a rerun replaces the feed's earlier GX result for the same run date
    assert len(list((settings.quality_dir(AS_OF) / "gx_results" / "registry").rglob("*.json"))) == 1


def test_drift_of_exactly_twenty_percent_passes(tmp_path):
    settings = settings_for(tmp_path)
    first_day = AS_OF - dt.timedelta(days=1)
    run(settings, "credit", rows("credit", 10), day=first_day, as_of=first_day)
    verdict = run(settings, "credit", rows("credit", 8), day=AS_OF)
    assert verdict["status"] == "accepted" and verdict["drift"] == "-0.200000"


def test_codes_missing_from_registry_are_warned_not_quarantined(tmp_path):
    settings = settings_for(tmp_path)
    assert run(settings, "registry", rows("registry", 3))["status"] == "accepted"
    verdict = run(settings, "tax", rows("tax", 3) + [row("tax", 77)])
    assert verdict["status"] == "accepted" and verdict["bad_rows"] == 0 and verdict["good_rows"] == 4
    assert verdict["not_in_registry"] == 1
    assert any("1 行的统一社会信用代码不在企业登记信息" in w for w in verdict["warnings"])


def test_hidden_sheets_not_read_are_named_in_the_verdict(tmp_path):
    settings = settings_for(tmp_path)
    records = rows("registry", 3)
    folder = delivery_dir(settings, "registry", DELIVERED)
    folder.mkdir(parents=True)
    table = [list(records[0])] + [list(r.values()) for r in records]
    xlsx(folder / "registry.xlsx", {"旧版": table, "2026": table}, hidden={"旧版": "hidden"})
    (folder / "_SUCCESS").touch()
    ingest_feed(settings, "registry", AS_OF)
    verdict = validate_feed(settings, "registry", AS_OF)
    assert verdict["status"] == "accepted"
    assert "文件「registry.xlsx」中隐藏的工作表「旧版」未读取（只读取可见的工作表）" in verdict["warnings"]


def test_ingest_outcomes_carry_into_the_verdict(tmp_path):
    settings = settings_for(tmp_path)
    ingest_feed(settings, "tech", AS_OF)
    verdict = validate_feed(settings, "tech", AS_OF)
    assert verdict["status"] == "missing" and "区科学技术局「资质认定」" in verdict["reason"]

    records = [{k: v for k, v in r.items() if k != "证书编号"} for r in rows("tech", 2)]
    verdict = run(settings, "tech", records)
    assert verdict["status"] == "rejected" and "缺少必需列「证书编号」" in verdict["reason"]


# --- the gate ----------------------------------------------------------------------------


def test_gate_opens_when_every_feed_is_accepted_and_closes_naming_each_failure(tmp_path):
    settings = settings_for(tmp_path)
    for feed in FEEDS:
        assert run(settings, feed, rows(feed, 3))["status"] == "accepted"
    result = gate(settings, AS_OF)
    assert result["open"] is True
    assert json.loads((settings.quality_dir(AS_OF) / "gate.json").read_text(encoding="utf-8"))["open"] is True

    run(settings, "tax", rows("tax", 3), day=AS_OF - dt.timedelta(days=40))   # not newer: still 2026-11-25
    (settings.landing / "tax" / DELIVERED.isoformat() / "_SUCCESS").unlink()
    ingest_feed(settings, "tax", AS_OF)
    validate_feed(settings, "tax", AS_OF)
    (settings.quality_dir(AS_OF) / "credit.json").unlink()
    with pytest.raises(GateClosed) as closed:
        gate(settings, AS_OF)
    message = closed.value.message
    assert "区税务局「年度纳税信息」数据已过期：最新交付为 2026-10-17" in message
    assert "区发展和改革委员会（信用办）「失信名单」本次运行（2026-11-26）没有校验结论" in message
    assert "企业登记信息" not in message
    saved = json.loads((settings.quality_dir(AS_OF) / "gate.json").read_text(encoding="utf-8"))
    assert saved["open"] is False and saved["feeds"]["tax"]["status"] == "stale"


def test_delivery_with_no_typeable_row_is_rejected(tmp_path):
    settings = settings_for(tmp_path)
    verdict = run(settings, "credit", [row("credit", n, listed_on="不详") for n in (1, 2)], day=AS_OF)
    assert verdict["status"] == "rejected" and verdict["bad_rows"] == 2 and verdict["good_rows"] == 0
    assert set(quarantine_rows(verdict)) == {2, 3}


# --- the checks as a pure function: a verdict from rows and results, nothing read or written ---------


def test_check_delivery_decides_from_its_arguments_alone():
    import pyarrow as pa

    from pipelines.validate import check_delivery

    spec = FEEDS["credit"]
    staged = pa.table({"uscc": [uscc(1), uscc(2), uscc(3)], "_row": [2, 3, 4], "_file": ["a.csv"] * 3})
    ingest_bad = pa.table({"uscc": ["x"], "_row": [5], "_file": ["a.csv"], "reason": ["第5行 坏"]})
    results = [{"type": "expect_x", "kwargs": {"column": "uscc"}, "meta": {"reason_zh": "代码 {uscc} 不对"},
                "success": False, "unexpected": [1]}]
    ingested = {"delivery_date": DELIVERED.isoformat(), "rows": 4, "extra_columns": ["备注"]}
    previous = {"delivery_date": "2026-11-20", "rows": 2}
    checked = check_delivery(spec, ingested, staged, ingest_bad, results, {}, AS_OF, previous=previous,
                             registry=(pa.array([uscc(1)]), "2026-11-26"), accept_drift=True,
                             quarantine_name="credit_quarantine.csv")
    v = checked.verdict
    assert checked.good["uscc"].to_pylist() == [uscc(1), uscc(3)]
    assert [q["reason"] for q in checked.quarantine] == ["第5行 坏", f"第3行 代码 {uscc(2)} 不对"]
    assert (v["rows"], v["bad_rows"], v["rule_bad_rows"], v["not_in_registry"]) == (4, 2, 1, 1)
    assert v["failed_rules"] == [{"expectation": "expect_x", "columns": ["uscc"], "rule_zh": "代码 {uscc} 不对",
                                  "rows": 1}]
    # 2 of 4 bad is over credit's 1 %: rejected, and the reason points to the quarantine file;
    # the +100 % drift was accepted by the operator, so it is a warning, not a second problem
    assert v["status"] == "rejected" and "credit_quarantine.csv" in v["reason"]
    assert v["drift"] == "1.000000" and v["drift_accepted"] is True
    assert any("已由操作员确认接受" in w for w in v["warnings"]) and any("备注" in w for w in v["warnings"])


@hsettings(max_examples=60, deadline=None)
@given(data=st.data())
def test_field_defects_never_cost_a_row_whose_key_and_required_values_are_valid(data):
    import pyarrow as pa

    from pipelines.ingest import quarantine_schema, staged_schema
    from pipelines.validate import check_delivery

    spec = FEEDS["registry"]
    n = data.draw(st.integers(1, 12), label="rows")
    positions = st.sets(st.integers(0, n - 1))
    bad_uscc, bad_phone, bad_capital, bad_abnormal = (data.draw(positions, label=x)
                                                      for x in ("uscc", "phone", "capital", "abnormal"))
    records = [
        {**{c.name: None for c in spec.columns}, "uscc": uscc(i), "name": f"企业{i}", "established_on": dt.date(2020, 1, 1),
         "phone": "1380000", "registered_capital_10k": Decimal("-1"), "_row": i + 2, "_file": "r.csv",
         "_defects": [{"column": "abnormal", "value": "N", "reason": '经营异常 "N" 应为“是”或“否”'}] if i in bad_abnormal else None}
        for i in range(n)
    ]
    staged = pa.Table.from_pylist(records, schema=staged_schema(spec))

    def result(column, bad, field):
        meta = {"reason_zh": f"{column} 不对", **({"field_defect": column} if field else {})}
        return {"type": "expect_x", "kwargs": {"column": column}, "meta": meta, "success": not bad, "unexpected": sorted(bad)}

    results = [result("uscc", bad_uscc, False), result("phone", bad_phone, True),
               result("registered_capital_10k", bad_capital, True)]
    checked = check_delivery(spec, {"delivery_date": DELIVERED.isoformat(), "rows": n}, staged,
                             quarantine_schema(spec).empty_table(), results, {}, AS_OF, previous=None, registry=None)
    kept = [i for i in range(n) if i not in bad_uscc]
    assert checked.good["_row"].to_pylist() == [i + 2 for i in kept]
    for i, rec in zip(kept, checked.good.to_pylist()):
        assert (rec["phone"] is None) == (i in bad_phone)
        assert (rec["registered_capital_10k"] is None) == (i in bad_capital)
    counts = {c: d["count"] for c, d in checked.verdict["field_defects"].items()}
    expected = {"registered_capital_10k": len(bad_capital - bad_uscc), "phone": len(bad_phone - bad_uscc),
                "abnormal": len(bad_abnormal - bad_uscc)}
    assert counts == {c: k for c, k in expected.items() if k}
    assert checked.verdict["bad_rows"] == len(bad_uscc)
