"""explain agrees with evaluate and reads in Chinese; match.run writes the run's files."""
from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal as D
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import contracts, engine, explain, match
from pipelines.config import load_settings
from pipelines.policies import load_text

AS_OF = dt.date(2026, 11, 26)
HEAD = """department: 区人力资源和社会保障局
period: "2026"
valid_from: 2026-01-01
valid_to: 2026-12-31
"""
PER_HEAD = HEAD + """id: WL-A
name: 稳岗奖励
kind: condition
conditions:
  - {field: division_code, op: eq, value: "411303"}
  - none:
      - {field: arrears, op: is_true}
benefit: {type: per_head, base: insured_count, amount_each: 500, cap: 50000}
exclusive_group: 稳岗
"""
FIXED = HEAD + """id: WL-B
name: 扩岗补助
kind: condition
conditions:
  - {field: division_code, op: eq, value: "411303"}
benefit: {type: fixed, amount: 8000}
exclusive_group: 稳岗
budget: 10000
budget_rule: pro_rata
"""


def portrait(rows):
    return pa.table({f.name: [r.get(f.name) for r in rows] for f in contracts.PORTRAIT_SCHEMA},
                    schema=contracts.PORTRAIT_SCHEMA)


def load(text):
    p, errors = load_text(text)
    assert not errors, errors
    return p


ROWS = [
    dict(uscc="A", name="甲公司", registered=True, active=True, dishonest=False, division_code="411303",
         insured_count=12, arrears=False),
    dict(uscc="B", name="乙公司", registered=True, active=True, dishonest=False, division_code="411303",
         insured_count=30, arrears=False),
    dict(uscc="C", name="丙公司", registered=True, active=True, dishonest=True, division_code="411303",
         insured_count=None, arrears=None),
    dict(uscc="D", name="丁公司", registered=True, active=True, dishonest=False, division_code="411302",
         insured_count=3, arrears=True),
]


def test_explain_agrees_with_evaluate_for_every_enterprise():
    a, b = load(PER_HEAD), load(FIXED)
    table = portrait(ROWS)
    results = {(r["policy_id"], r["uscc"]): r for r in engine.evaluate(table, [a, b], AS_OF).to_pylist()}
    expected_words = {"eligible": "符合，金额", "excluded_by_group": "就高不重复", "missing_data": "数据不全",
                      "guard_failed": "前置校验未通过", "near_miss": "应享未享提醒"}
    for policy in (a, b):
        for row in ROWS:
            text = explain.explain(table, policy, row["uscc"], AS_OF, all_policies=[a, b])
            r = results.get((policy.id, row["uscc"]))
            verdict = text.splitlines()[-1]
            if r is None:
                assert verdict.startswith("结论：不符合"), text
            else:
                assert expected_words[r["outcome"]] in verdict, (r["outcome"], text)
                if r["outcome"] in ("eligible", "excluded_by_group"):
                    assert explain.yuan(r["amount"]) in verdict


def test_explain_text_shows_values_and_computation():
    a, b = load(PER_HEAD), load(FIXED)
    table = portrait(ROWS)
    text = explain.explain(table, a, "A", AS_OF, all_policies=[a, b])
    assert "所属区划 卧龙区，需为 卧龙区 —— 符合" in text
    assert "社保欠缴 否，不得为“是” —— 未出现，符合" in text
    assert "参保人数 12 × 500.00 元 = 6,000.00 元，封顶 50,000.00 元" in text
    assert "WL-B" in text.splitlines()[-1]          # 8,000 beats 6,000 in the group
    text_b = explain.explain(table, b, "A", AS_OF, all_policies=[a, b])
    assert "按比例核减" not in text_b   # B keeps only A (8,000 <= budget 10,000): B itself went to WL-A
    missing = explain.explain(table, a, "C", AS_OF, all_policies=[a, b])
    assert "数据缺失" in missing and "数据不全" in missing.splitlines()[-1]
    near = explain.explain(table, a, "D", AS_OF)
    assert "不符合" in near.splitlines()[-1]


def test_match_run_writes_matches_errors_and_uses_the_newest_list_row(tmp_path: Path):
    settings = load_settings({"MIANSHEN_DATA": str(tmp_path), "MIANSHEN_POLICIES": str(tmp_path / "policies")})
    settings.portraits.mkdir(parents=True)
    pq.write_table(portrait(ROWS), settings.portraits / f"{AS_OF}.parquet")
    settings.policies.mkdir(parents=True)
    (settings.policies / "WL-A.yaml").write_text(PER_HEAD, encoding="utf-8")
    (settings.policies / "WL-L.yaml").write_text(HEAD + "id: WL-L\nname: 名单奖励\nkind: name_list\n"
                                                 "benefit: {type: from_list}\n", encoding="utf-8")
    (settings.policies / "bad.yaml").write_text(HEAD + "id: X\nname: 坏\nkind: wrong\n", encoding="utf-8")
    lists = settings.work / "namelists" / "WL-L"
    lists.mkdir(parents=True)
    for name, amount, received in (("new.parquet", "900", 2), ("old.parquet", "100", 1)):
        pq.write_table(pa.table({
            "uscc": ["A"], "name": ["甲公司"], "amount": pa.array([D(amount)], contracts.MONEY),
            "note": [None], "source": [name],
            "received_at": pa.array([dt.datetime(2026, 11, received)], pa.timestamp("s"))}), lists / name)
    summary = match.run(settings, AS_OF)
    json.dumps(summary)
    out = pq.read_table(settings.run_dir(AS_OF) / "matches.parquet")
    assert out.schema == engine.RESULT_SCHEMA
    rows = {(r["policy_id"], r["uscc"]): r for r in out.to_pylist()}
    assert rows[("WL-L", "A")]["amount"] == D("900.00")
    assert summary["bad_policy_files"] == ["bad.yaml"]
    errors = json.loads((settings.run_dir(AS_OF) / "policy_errors.json").read_text(encoding="utf-8"))
    assert errors and errors[0]["key"] == "kind"
    by_id = {p["policy_id"]: p for p in summary["policies"]}
    assert by_id["WL-A"]["counts"]["eligible"] == 2 and by_id["WL-A"]["eligible_amount"] == "21000.00"


def test_a_repealed_policy_is_explained_as_repealed():
    a = load(PER_HEAD + "repealed_on: 2026-11-01\n")
    text = explain.explain(portrait(ROWS), a, "A", AS_OF, all_policies=[a])
    assert text.splitlines()[-1] == "结论：该政策已于 2026-11-01 废止，不作评估。"
