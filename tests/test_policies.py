"""The policy checker: exact numbers, lines, every error at once; the district's policy files."""
from __future__ import annotations

import datetime as dt
import io
from decimal import Decimal
from pathlib import Path

from pipelines import policies as P

ROOT = Path(__file__).resolve().parent.parent
BAD = ROOT / "tests" / "fixtures" / "bad_policies"

MINIMAL = """id: T-1
name: 测试
department: 区财政局
kind: condition
period: "2026"
valid_from: 2026-01-01
valid_to: 2026-12-31
conditions:
  - {field: tax_growth, op: ge, value: 0.1}
benefit: {type: rate, base: tax_paid, rate: 0.03, cap: 1000.50}
"""


def errors_by_file():
    _, errors = P.load_dir(BAD)
    out: dict[str, list[P.PolicyError]] = {}
    for e in errors:
        out.setdefault(Path(e.file).name, []).append(e)
    return out


def has(errors, line, key, *words):
    return any(e.line == line and e.key == key and all(w in e.message for w in words) for e in errors)


def test_numbers_are_exact_decimals_not_floats():
    p, errors = P.load_text(MINIMAL)
    assert not errors
    assert p.benefit.rate == Decimal("0.03") and isinstance(p.benefit.rate, Decimal)
    assert p.conditions[0].value == Decimal("0.1")
    assert p.benefit.cap == Decimal("1000.50")
    assert p.guards == ("registered", "active", "not_dishonest") and p.budget_rule == "flag"


def test_every_error_in_every_file_with_line_and_key():
    by = errors_by_file()
    c = by["conditions.yaml"]
    assert has(c, 9, "conditions[0].field", '未知字段 "insured_avg12m"', '"insured_avg_12m"')
    assert has(c, 10, "conditions[1].op", "未知运算符")
    assert has(c, 11, "conditions[2].value", "文本")            # an unquoted number for a text field
    assert has(c, 12, "conditions[3].value", "下限")
    assert has(c, 13, "conditions[4].value[1]", "空值")
    assert has(c, 14, "conditions[5].value", "不能为空")
    assert has(c, 15, "conditions[6].any", "不能为空")
    assert has(c, 16, "conditions[7].value", "是/否")
    assert has(c, 17, "conditions[8].value", "日期")
    assert has(c, 18, "conditions[9].value", "between")
    b = by["benefit.yaml"]
    assert has(b, 7, "valid_to", "早于")
    assert has(b, 12, "benefit.base", "数值字段")
    assert has(b, 15, "benefit.tiers[1].min", "相同")
    assert has(b, 16, "guards[1]", "honest")
    assert has(b, 17, "budget_rule")
    m = by["missing.yaml"]
    assert {e.key for e in m} >= {"id", "department", "conditions", "benefit.type"}
    man = by["manual.yaml"]
    assert {e.key for e in man} == {"benefit", "exclusive_group", "budget"}
    assert has(by["dup_a.yaml"], 1, "id", "重复") and has(by["dup_b.yaml"], 1, "id", "重复")
    assert has(by["fromlist.yaml"], 9, "benefit.type", "name_list")
    assert has(by["fromlist.yaml"], 8, "conditions", "不能为空")
    assert by["syntax.yaml"][0].key == "yaml"
    assert "good.yaml" not in by


def test_a_bad_file_is_skipped_and_the_others_load():
    policies, _ = P.load_dir(BAD)
    assert [p.id for p in policies] == ["GOOD-1"]
    good = policies[0]
    assert good.period == "2026" and good.valid_to == dt.date(2026, 12, 31) and good.conditions == ()
    assert len(good.file_hash) == 64


def test_check_command_prints_file_line_key_message():
    out = io.StringIO()
    assert P.check_command(BAD, out) != 0
    assert f"{BAD / 'conditions.yaml'}:9: conditions[0].field: 未知字段" in out.getvalue()


def test_duplicate_yaml_key_and_unknown_top_level_key():
    _, errors = P.load_text(MINIMAL + "budjet: 100\nperiod: \"2027\"\n")
    assert any(e.key == "budjet" and '"budget"' in e.message for e in errors)
    assert any(e.key == "period" and e.line == 12 and "重复" in e.message for e in errors)


def test_in_force_is_inclusive():
    p, _ = P.load_text(MINIMAL)
    assert P.in_force([p], dt.date(2026, 12, 31)) == [p]
    assert P.in_force([p], dt.date(2027, 1, 1)) == []


def test_district_policies_are_all_valid_and_cover_every_kind_and_benefit():
    policies, errors = P.load_dir(ROOT / "data" / "policies")
    assert errors == []
    assert 12 <= len(policies) <= 20
    assert {p.kind for p in policies} == set(P.KINDS)
    assert {p.benefit.type for p in policies if p.benefit} == set(P.BENEFIT_TYPES)
    assert {p.budget_rule for p in policies if p.budget is not None} == {"flag", "pro_rata"}
    assert all(set(p.guide_dict) >= {"summary", "time_limit", "process", "contact"} for p in policies)
    assert all(Path(p.file).stem == p.id for p in policies)
    demo = dt.date(2026, 11, 26)
    assert len(P.in_force(policies, demo)) == len(policies) - 1
