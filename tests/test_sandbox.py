"""The policy sandbox: same figures as the nightly engine, overlap, sensitivity, refusals."""
from __future__ import annotations

import datetime as dt
import io
import json
from collections import Counter
from decimal import Decimal as D
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import contracts, match, sandbox
from pipelines.config import load_settings

AS_OF = dt.date(2026, 11, 26)
HEAD = ('department: 区人力资源和社会保障局\nperiod: "2026"\nvalid_from: 2026-01-01\nvalid_to: 2026-12-31\n'
        "guide: {summary: 测试, time_limit: 10日, process: 数据比对, contact: 0377-1}\n")
POLICIES = {
    # Two members of one exclusive group; A is scaled pro rata, so groups and budgets both matter.
    "WL-T-A": HEAD + """id: WL-T-A
name: 稳岗奖励（测试）
kind: condition
conditions:
  - {field: division_code, op: eq, value: "411303"}
  - {field: size_class, op: in, value: [小型, 微型]}
  - any:
      - {field: insured_avg_12m, op: ge, value: 10}
      - {field: graduates_12m, op: ge, value: 3}
  - none:
      - {field: arrears, op: is_true}
benefit: {type: per_head, base: insured_count, amount_each: 500, cap: 20000}
exclusive_group: 稳岗
budget: 300000
budget_rule: pro_rata
""",
    "WL-T-B": HEAD + """id: WL-T-B
name: 吸纳就业补贴（测试）
kind: condition
conditions:
  - {field: insured_count, op: between, value: [5, 40]}
  - {field: tax_paid, op: ge, value: 10000}
benefit: {type: fixed, amount: 9000}
exclusive_group: 稳岗
""",
    "WL-T-C": HEAD + """id: WL-T-C
name: 研发奖励（测试）
kind: condition
conditions:
  - {field: rd_ratio, op: ge, value: 0.03}
  - {field: insured_count, op: le, value: 45}
benefit: {type: rate, base: tax_paid, rate: 0.05, cap: 2000}
budget: 50000
budget_rule: flag
""",
    "WL-T-D": HEAD + """id: WL-T-D
name: 人工核定（测试）
kind: manual
conditions:
  - {field: high_tech, op: is_true}
""",
}
# A draft that would join the group with a higher amount than either member.
NEW_DRAFT = HEAD + """id: WL-T-N
name: 稳岗新政（草案）
kind: condition
conditions:
  - {field: insured_count, op: ge, value: 20}
  - {field: division_code, op: eq, value: "411303"}
benefit: {type: fixed, amount: 25000}
exclusive_group: 稳岗
"""


def enterprise(i: int) -> dict:
    """A deterministic, varied enterprise, with some data missing."""
    return {
        "uscc": f"91411303{i:010d}", "name": f"测试企业{i}",
        "registered": i % 37 != 0, "active": i % 41 != 0, "dishonest": i % 43 == 0,
        "division_code": "411303" if i % 10 else "411302",
        "industry_section": "CFIEG"[i % 5], "industry_code": "CFIEG"[i % 5] + "3311",
        "size_class": ("小型", "微型", "中型", None)[i % 4],
        "insured_count": None if i % 29 == 0 else i % 60,
        "insured_avg_12m": None if i % 31 == 0 else D(i % 50) + D("0.5"),
        "graduates_12m": i % 7,
        "arrears": None if i % 17 == 0 else i % 13 == 0,
        "tax_paid": None if i % 23 == 0 else D(i * 1000 % 70000) + D("0.25"),
        "rd_ratio": D(i % 10) / 100,
        "high_tech": i % 3 == 0,
    }


def portrait(n: int = 400) -> pa.Table:
    rows = [enterprise(i) for i in range(1, n + 1)]
    return pa.table({f.name: [r.get(f.name) for r in rows] for f in contracts.PORTRAIT_SCHEMA},
                    schema=contracts.PORTRAIT_SCHEMA)


def make(tmp: Path, policies: dict[str, str], name: str = "run"):
    base = tmp / name
    settings = load_settings({"MIANSHEN_DATA": str(base), "MIANSHEN_POLICIES": str(base / "policies")})
    settings.policies.mkdir(parents=True)
    for pid, text in policies.items():
        (settings.policies / f"{pid}.yaml").write_text(text, encoding="utf-8")
    settings.portraits.mkdir(parents=True)
    pq.write_table(portrait(), settings.portraits / f"{AS_OF}.parquet")
    return settings


@pytest.fixture(scope="module")
def nightly(tmp_path_factory):
    """Settings with the test policies in force and the nightly match run of AS_OF done."""
    settings = make(tmp_path_factory.mktemp("sandbox"), POLICIES)
    match.run(settings, AS_OF)
    return settings, pq.read_table(settings.run_dir(AS_OF) / "matches.parquet").to_pylist()


def nightly_figures(rows: list[dict], policy_id: str) -> tuple[dict, D]:
    mine = [r for r in rows if r["policy_id"] == policy_id]
    counts = Counter(r["outcome"] for r in mine)
    total = sum((r["amount"] or D(0) for r in mine if r["outcome"] == "eligible"), D("0.00"))
    return {o: counts.get(o, 0) for o in sandbox.ALL_OUTCOMES}, total


@pytest.mark.parametrize("policy_id", sorted(POLICIES))
def test_sandbox_equals_the_nightly_engine_for_an_in_force_policy(nightly, policy_id):
    settings, rows = nightly
    result = sandbox.simulate(settings, settings.policies / f"{policy_id}.yaml", AS_OF)
    counts, total = nightly_figures(rows, policy_id)
    assert result["outcomes"] == counts
    assert result["eligible"] == counts["eligible"] > 0
    assert result["total_amount"] == str(total.quantize(D("0.01")))
    assert (result["missing_data"], result["near_miss"]) == (counts["missing_data"], counts["near_miss"])
    assert not result["forced_in_force"]
    near = Counter(r["failed_item"] for r in rows if r["policy_id"] == policy_id and r["outcome"] == "near_miss")
    assert {c["item"]: c["near_miss"] for c in result["conditions"]} == {
        k: near.get(k, 0) for k in range(len(result["conditions"]))}


def test_groups_and_budgets_are_those_of_the_nightly_run(nightly):
    settings, rows = nightly
    a = sandbox.simulate(settings, settings.policies / "WL-T-A.yaml", AS_OF)
    # The fixture must exercise both: A loses some enterprises to B and is scaled to its budget.
    assert a["outcomes"]["excluded_by_group"] > 0
    assert a["budget"]["exceeds"] and a["budget"]["pro_rata_factor"] is not None
    assert D(a["budget"]["demand_amount"]) > D("300000") >= D(a["total_amount"])
    assert a["group_peers"] == ["WL-T-B"]
    # The sensitivity runs (peers evaluated once, then the engine's groups and budget) start from the headline.
    for s in a["sensitivity"]:
        assert (s["base"]["eligible"], s["base"]["total_amount"]) == (a["eligible"], a["total_amount"])
    c = sandbox.simulate(settings, settings.policies / "WL-T-C.yaml", AS_OF)
    assert c["budget"]["over_budget"] and c["budget"]["total_amount"] == c["budget"]["demand_amount"]
    # A revision identical to the file in force changes nothing.
    assert a["overlap"]["revises_in_force"] and a["overlap"]["net_change"] == "0.00"
    assert a["overlap"]["switch_to_draft"] == []


def test_overlap_agrees_with_two_nightly_runs(tmp_path):
    before = make(tmp_path, POLICIES, "before")
    after = make(tmp_path, {**POLICIES, "WL-T-N": NEW_DRAFT}, "after")
    match.run(before, AS_OF)
    match.run(after, AS_OF)
    run1 = pq.read_table(before.run_dir(AS_OF) / "matches.parquet").to_pylist()
    run2 = pq.read_table(after.run_dir(AS_OF) / "matches.parquet").to_pylist()
    draft = tmp_path / "draft.yaml"
    draft.write_text(NEW_DRAFT, encoding="utf-8")
    result = sandbox.simulate(before, draft, AS_OF)

    def group_total(rows):
        return sum((r["amount"] for r in rows if r["outcome"] == "eligible" and r["exclusive_group"] == "稳岗"),
                   D("0.00"))

    ov = result["overlap"]
    assert D(ov["net_change"]) == group_total(run2) - group_total(run1) != 0
    paid1 = {(r["policy_id"], r["uscc"]) for r in run1 if r["outcome"] == "eligible"}
    switched = Counter(r["policy_id"] for r in run2 if r["excluded_by"] == "WL-T-N" and (r["policy_id"], r["uscc"]) in paid1)
    assert {s["from_policy"]: s["enterprises"] for s in ov["switch_to_draft"]} == dict(switched)
    assert sum(switched.values()) > 0
    n_counts, n_total = nightly_figures(run2, "WL-T-N")
    assert result["outcomes"] == n_counts and result["total_amount"] == str(n_total)
    assert not ov["revises_in_force"] and {p["policy_id"] for p in ov["policies"]} == {"WL-T-A", "WL-T-B", "WL-T-N"}


def counts_along(entry: dict) -> list[int]:
    v = entry["variants"]
    return [v[0]["eligible"], v[1]["eligible"], entry["base"]["eligible"], v[2]["eligible"], v[3]["eligible"]]


def test_sensitivity_moves_the_right_way(nightly, tmp_path):
    settings, _ = nightly
    b = sandbox.simulate(settings, settings.policies / "WL-T-B.yaml", AS_OF)
    by = {(s["field"], s["end"]): s for s in b["sensitivity"]}
    assert set(by) == {("insured_count", "lo"), ("insured_count", "hi"), ("tax_paid", None)}
    lo, hi, tax = counts_along(by[("insured_count", "lo")]), counts_along(by[("insured_count", "hi")]), \
        counts_along(by[("tax_paid", None)])
    assert lo == sorted(lo, reverse=True) and lo[0] > lo[-1]       # a higher lower bound admits fewer
    assert hi == sorted(hi) and hi[0] < hi[-1]                     # a higher upper bound admits more
    assert tax == sorted(tax, reverse=True) and tax[0] > tax[-1]
    assert [v["value"] for v in by[("tax_paid", None)]["variants"]] == ["8000", "9000", "11000", "12000"]
    for s in b["sensitivity"]:
        demand = [D(v["demand_amount"]) for v in s["variants"]]
        assert demand == sorted(demand, reverse=s["end"] != "hi")
    # A variant is exactly the simulation of the draft with that one value edited.
    edited = tmp_path / "edited.yaml"
    edited.write_text(POLICIES["WL-T-B"].replace("value: 10000", "value: 12000"), encoding="utf-8")
    again = sandbox.simulate(settings, edited, AS_OF)
    plus20 = by[("tax_paid", None)]["variants"][3]
    assert (again["eligible"], again["total_amount"]) == (plus20["eligible"], plus20["total_amount"])

    a = sandbox.simulate(settings, settings.policies / "WL-T-A.yaml", AS_OF)
    grads = next(s for s in a["sensitivity"] if s["field"] == "graduates_12m")
    assert [v["value"] for v in grads["variants"]] == ["2.4", "2.7", "3.3", "3.6"]
    assert counts_along(grads) == sorted(counts_along(grads), reverse=True)


def test_an_invalid_draft_is_refused_in_chinese(nightly, tmp_path):
    settings, _ = nightly
    bad = tmp_path / "bad.yaml"
    bad.write_text(POLICIES["WL-T-C"].replace("field: rd_ratio", "field: rd_ration").replace("op: le", "op: lte"),
                   encoding="utf-8")
    pages = settings.output / "sandbox"
    written = sorted(pages.glob("*")) if pages.exists() else []
    out, err = io.StringIO(), io.StringIO()
    assert sandbox.simulate_command(settings, bad, AS_OF, out=out, err=err) == 1
    text = err.getvalue()
    assert "政策草案有错误" in text and "未知字段 \"rd_ration\"" in text and "rd_ratio" in text
    assert "未知运算符 \"lte\"" in text and "共 2 处错误" in text and out.getvalue() == ""
    assert (sorted(pages.glob("*")) if pages.exists() else []) == written
    with pytest.raises(sandbox.DraftError):
        sandbox.simulate(settings, bad, AS_OF)
    err = io.StringIO()
    assert sandbox.simulate_command(settings, tmp_path / "nowhere.yaml", AS_OF, err=err) == 1
    assert "草案文件不存在" in err.getvalue()


def test_a_draft_given_as_text_out_of_force_is_forced_in(nightly):
    settings, rows = nightly
    text = POLICIES["WL-T-C"].replace("valid_from: 2026-01-01\nvalid_to: 2026-12-31",
                                      "valid_from: 2027-01-01\nvalid_to: 2027-12-31")
    out = io.StringIO()
    assert sandbox.simulate_command(settings, text, None, as_json=True, out=out) == 0
    result = json.loads(out.getvalue())
    counts, total = nightly_figures(rows, "WL-T-C")
    assert result["forced_in_force"] and result["as_of"] == str(AS_OF)
    assert isinstance(result["eligible"], int) and result["eligible"] == counts["eligible"]
    assert result["total_amount"] == str(total) and len(result["total_amount"].split(".")[1]) == 2
    # The policy with the same id is in force: the draft replaces it, nothing else changes.
    assert result["overlap"]["revises_in_force"] and result["overlap"]["net_change"] == "0.00"
    page = Path(result["html"])
    assert page == settings.output / "sandbox" / f"WL-T-C_{AS_OF}.html"
    html_text = page.read_text(encoding="utf-8")
    assert "政策沙盘模拟" in html_text and "<svg" in html_text and "本次模拟按已生效计算" in html_text
    assert "阈值敏感性分析" in html_text and "<script" not in html_text


def test_no_portrait_is_reported(tmp_path):
    settings = load_settings({"MIANSHEN_DATA": str(tmp_path), "MIANSHEN_POLICIES": str(tmp_path / "p")})
    draft = tmp_path / "d.yaml"
    draft.write_text(POLICIES["WL-T-C"], encoding="utf-8")
    err = io.StringIO()
    assert sandbox.simulate_command(settings, draft, err=err) == 2
    assert "未找到企业画像" in err.getvalue()


def test_thresholds_and_scaling_are_exact():
    from pipelines.policies import load_text

    policy, errors = load_text(POLICIES["WL-T-B"])
    assert not errors
    ths = sandbox.thresholds(policy)
    assert [(t.field, t.end, t.value) for t in ths] == [
        ("insured_count", "lo", D(5)), ("insured_count", "hi", D(40)), ("tax_paid", None, D(10000))]
    assert sandbox.scaled(D("0.03"), D("-0.1")) == D("0.027")
    assert sandbox.scaled(D("0.000000000000000001"), D("0.1")) == D("0.000000000000000001")
    changed = sandbox.with_threshold(policy, ths[1], D(48))
    assert changed.conditions[0].value == (D(5), D(48)) and policy.conditions[0].value == (D(5), D(40))


def test_the_sandbox_dag_is_manual_and_documented():
    from airflow.dag_processing.dagbag import DagBag

    from tests.conftest import ROOT

    bag = DagBag(dag_folder=str(ROOT / "dags" / "mianshen_sandbox.py"))
    assert bag.import_errors == {}
    dag = bag.get_dag("mianshen_sandbox")
    assert dag.schedule is None and dag.catchup is False
    assert set(dag.params) == {"mode", "draft", "as_of"} and dag.params["mode"] == "simulate"
    assert dag.task_ids == ["run_sandbox"] and dag.get_task("run_sandbox").retries == 0
