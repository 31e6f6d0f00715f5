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


# ---------------------------------------------------------------- review: divergences from policies.md

def _with(extra_conditions: str = "", benefit: str = "{type: fixed, amount: 100}", head: str = "") -> str:
    return (f"id: R-1\nname: 测试\ndepartment: 区财政局\nkind: condition\nperiod: \"2026\"\n{head or 'valid_from: 2026-01-01'}\n"
            f"valid_to: 2026-12-31\nconditions:\n  - {{field: tax_year, op: ge, value: 2025}}\n{extra_conditions}"
            f"benefit: {benefit}\n")


def test_dates_given_as_strings_must_be_yyyy_mm_dd():
    # "Dates are ISO strings compared as dates": "2026-01-01" quoted or not is the same date, but an ISO
    # week date (which Python 3.11's fromisoformat also accepts) is not a calendar date string.
    p, errors = P.load_text(_with(head='valid_from: "2026-01-01"'))
    assert not errors and p.valid_from == dt.date(2026, 1, 1)
    _, errors = P.load_text(_with(head='valid_from: "2026-W01-1"'))
    assert [e.key for e in errors] == ["valid_from"]
    p, errors = P.load_text(_with('  - {field: established_on, op: between, value: ["2020-01-01", null]}\n'))
    assert not errors and p.conditions[1].value == (dt.date(2020, 1, 1), None)


def test_order_operators_are_allowed_on_text_fields():
    # "Operators: eq ne gt ge lt le (value is a scalar), between (...)": the spec limits prefix_in to text
    # and is_true/is_false to yes/no fields by their meaning, but not the comparisons.
    p, errors = P.load_text(_with('  - {field: industry_code, op: between, value: [C13, C43]}\n'))
    assert not errors and p.conditions[1].value == ("C13", "C43")
    _, errors = P.load_text(_with('  - {field: industry_code, op: between, value: [C43, C13]}\n'))
    assert any(e.key == "conditions[1].value" and "下限" in e.message for e in errors)


def test_numbers_with_an_exponent_are_exact():
    # "Numbers written in a policy file are exact decimals": YAML 1.2 reads 1e3 as a number (PyYAML's 1.1
    # rules would leave it a string), and 1.0e+6 must not crash the engine later.
    p, errors = P.load_text(_with('  - {field: insured_count, op: ge, value: 1e1}\n', "{type: fixed, amount: 1.0e+6}"))
    assert not errors
    assert p.conditions[1].value == Decimal(10) and p.benefit.amount == Decimal("1.0e+6")
    _, errors = P.load_text(_with('  - {field: division_code, op: eq, value: "1e1"}\n'))
    assert not errors   # quoted: text


def test_benefit_numbers_beyond_exact_arithmetic_are_errors():
    # A money value the engine cannot carry exactly is reported at load time (file, line, key), never a crash.
    _, errors = P.load_text(_with(benefit="{type: rate, base: tax_paid, rate: 0.0000000000000000000001}"))
    assert [(e.line, e.key) for e in errors] == [(10, "benefit.rate")]
    _, errors = P.load_text(_with(benefit="{type: fixed, amount: 1000000000000000000000000}"))
    assert [e.key for e in errors] == ["benefit.amount"]


def test_duplicate_id_is_reported_even_when_the_other_file_has_errors(tmp_path):
    # "a duplicate id ... each is an error naming the file, the line and the key"; "A check command reports
    # every error in every file at once" - the duplicate too, not only the other file's own error.
    (tmp_path / "a.yaml").write_text(MINIMAL, encoding="utf-8")
    (tmp_path / "b.yaml").write_text(MINIMAL.replace("kind: condition", "kind: conditon"), encoding="utf-8")
    policies, errors = P.load_dir(tmp_path)
    assert policies == []
    assert any(Path(e.file).name == "a.yaml" and e.key == "id" and "重复" in e.message for e in errors)
    assert any(Path(e.file).name == "b.yaml" and e.key == "id" and "重复" in e.message for e in errors)
    assert any(Path(e.file).name == "b.yaml" and e.key == "kind" for e in errors)


def test_an_unknown_key_is_a_warning_and_the_policy_still_loads(tmp_path):
    # policies.md lists the errors that make a policy bad; an extra key is not
    # among them, so it is reported (with the nearest known key) and ignored.
    policy, found = P.load_text(MINIMAL + "备注: 内部说明\nbudjet: 100\n")
    assert policy is not None
    assert all(e.warning for e in found)
    assert any(e.key == "budjet" and '"budget"' in e.message for e in found)
    (tmp_path / "p.yaml").write_text(MINIMAL + "备注: 内部说明\n", encoding="utf-8")
    out = io.StringIO()
    assert P.check_command(tmp_path, out) == 0
    assert "提示：未知的键" in out.getvalue()


def test_a_repealed_policy_is_out_of_force_from_its_repeal_date():
    p, errors = P.load_text(_with(head="valid_from: 2026-01-01\nrepealed_on: 2026-09-30"))
    assert not errors and p.repealed_on == dt.date(2026, 9, 30)
    assert P.in_force([p], dt.date(2026, 9, 29)) == [p] and P.in_force([p], dt.date(2026, 9, 30)) == []
    assert (p.status_on(dt.date(2026, 9, 29)), p.status_on(dt.date(2026, 9, 30))) == ("生效", "已废止")
    assert (p.status_on(dt.date(2025, 12, 31)), p.status_on(dt.date(2027, 1, 1))) == ("未生效", "已废止")
    _, errors = P.load_text(_with(head="valid_from: 2026-01-01\nrepealed_on: 2025-12-31"))
    assert [(e.key, "早于" in e.message) for e in errors] == [("repealed_on", True)]
    _, errors = P.load_text(_with(head="valid_from: 2026-01-01\nrepealed_on: 九月"))
    assert [e.key for e in errors] == ["repealed_on"]


def test_fund_source_and_deadlines_are_optional_keys_with_defaults():
    from pipelines.policies import load_text

    base = ("id: X\nname: 测试\ndepartment: 区财政局\nkind: name_list\nperiod: '2026'\nvalid_from: 2026-01-01\n"
            "valid_to: 2026-12-31\nbenefit: {type: fixed, amount: 1000}\n")
    policy, errors = load_text(base)
    assert errors == [] and (policy.fund_source, policy.confirm_days, policy.review_days, policy.pay_days) == (
        None, 15, 10, 20)
    policy, errors = load_text(base + "fund_source: 区级惠企政策专项资金\nconfirm_days: 5\n")
    assert errors == [] and (policy.fund_source, policy.confirm_days) == ("区级惠企政策专项资金", 5)
    policy, errors = load_text(base + "confirm_days: 0\n")
    assert policy is None and "confirm_days" in str(errors[0])


def test_max_amount_is_a_positive_amount_of_a_manual_policy_only():
    from pipelines.policies import load_text

    manual = ("id: M\nname: 测试\ndepartment: 区商务局\nkind: manual\nperiod: '2026'\nvalid_from: 2026-01-01\n"
              "valid_to: 2026-12-31\nconditions: [{field: arrears, op: is_false}]\n")
    policy, errors = load_text(manual)
    assert errors == [] and policy.max_amount is None
    policy, errors = load_text(manual + "max_amount: 50000.50\n")
    assert errors == [] and policy.max_amount == Decimal("50000.50")
    for bad, words in (("max_amount: 0\n", "应大于零"), ("max_amount: 五万\n", "应为数值")):
        policy, errors = load_text(manual + bad)
        assert policy is None and errors[0].key == "max_amount" and words in errors[0].message, bad
    condition = manual.replace("kind: manual", "kind: condition") + "benefit: {type: fixed, amount: 1000}\n"
    policy, errors = load_text(condition + "max_amount: 50000\n")
    assert policy is None and "只适用于人工类（manual）政策" in errors[0].message
