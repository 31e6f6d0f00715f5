"""The run report: its figures equal the run's data, and it renders in headless Chromium."""
from __future__ import annotations

import json
import re
import subprocess
from datetime import date
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import report
from pipelines.engine import RESULT_SCHEMA
from tests.conftest import require_chromium

AS_OF = date(2026, 11, 26)


def _match(policy_id, outcome, amount=None, over_budget=False, uscc="91411303MA00000000"):
    return {
        "as_of": AS_OF, "policy_id": policy_id, "policy_name": f"政策{policy_id}", "department": "区科学技术局",
        "kind": "condition", "period": "2026", "uscc": uscc, "name": "某公司", "outcome": outcome,
        "amount": Decimal(amount) if amount else None, "failed_item": 0 if outcome == "near_miss" else None,
        "failed_guard": None, "excluded_by": None, "exclusive_group": None, "over_budget": over_budget,
        "evidence": "[]",
    }


@pytest.fixture
def run(settings):
    quality = settings.quality_dir(AS_OF)
    quality.mkdir(parents=True)
    for feed, status in (("registry", "accepted"), ("tax", "accepted"), ("social_insurance", "accepted"),
                         ("tech", "accepted"), ("credit", "rejected")):
        (quality / f"{feed}.json").write_text(json.dumps(
            {"feed": feed, "status": status, "rows": 100, "bad_rows": 3 if status == "rejected" else 0,
             "delivery_date": str(AS_OF), "reason": "问题行占比 3.00%，超过 1% 的阈值" if status == "rejected" else None},
            ensure_ascii=False), encoding="utf-8")
    rows = [_match("WL-A", "eligible", "5000.00"), _match("WL-A", "eligible", "1234.56"),
            _match("WL-A", "near_miss"), _match("WL-B", "eligible", "100000.00", over_budget=True),
            _match("WL-B", "missing_data")]
    pq.write_table(pa.Table.from_pylist(rows, schema=RESULT_SCHEMA), settings.run_dir(AS_OF) / "matches.parquet")
    return settings


def test_key_figures_equal_the_runs_data(run):
    path = report.write(run, AS_OF, "manual__test")
    figures = json.loads((path.parent / "report.json").read_text(encoding="utf-8"))
    assert figures["eligible"] == 3
    assert figures["eligible_amount"] == "106234.56"
    assert figures["near_miss"] == 1 and figures["missing_data"] == 1
    assert figures["over_budget"] == ["WL-B"]
    page = path.read_text(encoding="utf-8")
    assert "106,234.56" in page
    assert "未通过" in page and "区发展和改革委员会（信用办）" in page


def test_field_defects_are_shown_beside_the_bad_rows_without_their_values(run):
    verdict_path = run.verdict_path("registry", AS_OF)
    verdict = json.loads(verdict_path.read_text(encoding="utf-8"))
    verdict["field_defects"] = {
        "registered_capital_10k": {"header": "注册资本（万元）", "count": 1, "examples": []},
        "phone": {"header": "联系电话", "count": 1200, "examples": [
            {"row": 2, "file": "registry.csv", "value": "13800001234", "reason": '联系电话 "13800001234" 格式不正确'}]},
    }
    verdict_path.write_text(json.dumps(verdict, ensure_ascii=False), encoding="utf-8")
    page = report.write(run, AS_OF, "r").read_text(encoding="utf-8")
    assert "已置空的字段值（行保留）" in page
    assert "<td>注册资本（万元） 1 处、联系电话 1,200 处</td>" in page
    assert "13800001234" not in page


def test_changes_against_the_previous_run(run):
    earlier = date(2026, 11, 25)
    run.run_dir(earlier).mkdir(parents=True)
    (run.run_dir(earlier) / "report.json").write_text(json.dumps({"eligible": 1, "eligible_amount": "6234.56"}))
    page = report.write(run, AS_OF, "r").read_text(encoding="utf-8")
    assert re.search(r'id="delta-eligible">\+2<', page)
    assert re.search(r'id="delta-amount">\+100,000.00<', page)


def test_renders_in_headless_chromium_with_charts(run, tmp_path):
    chromium = require_chromium()
    path = report.write(run, AS_OF, "manual__test")
    dom = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         "--dump-dom", path.as_uri()],
        capture_output=True, text=True, timeout=120, check=True).stdout
    assert 'id="kpi-eligible">3<' in dom
    assert 'id="kpi-amount">106,234.56<' in dom
    assert dom.count("<svg") >= 3 and dom.count('class="bar"') >= 4
    assert "卧龙区惠企政策“免申即享”夜间运行报告" in dom


def test_links_the_published_lists_and_counts_each_reminder_list(run):
    run_dir = run.run_dir(AS_OF)
    (run_dir / "lists").mkdir()
    (run_dir / "lists" / "惠企政策清单.html").write_text("<html></html>", encoding="utf-8")
    (run_dir / "reminders").mkdir()
    (run_dir / "reminders" / "summary.json").write_text(json.dumps({"区科学技术局": {
        "应享未享提醒": 3, "差一项清单": 2500, "数据缺口清单": 7,
        "top_gaps": [["纳税增长率", "区税务局（年度纳税信息）", 5], ["研发费用（万元）", "区税务局（年度纳税信息）", 2]]}},
        ensure_ascii=False), encoding="utf-8")
    page = report.write(run, AS_OF, "r").read_text(encoding="utf-8")
    assert '<a href="lists/惠企政策清单.html">' in page and "lists/办事指南清单.xlsx" not in page
    assert re.search(r'<td>区科学技术局</td><td class="num">3</td><td class="num">2,500</td><td class="num">7</td>'
                     r"<td>纳税增长率（5）；研发费用（万元）（2）</td>", page)
    assert "各部门因数据缺失无法判断的政策结果数" in page
