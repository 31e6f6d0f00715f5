"""The benchmark's DuckDB SQL reference (benchmarks/duckdb_reference.py) decides as the engine does."""
from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal as D

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from benchmarks import duckdb_reference as ref
from pipelines import contracts, engine, policies as policy_lib
from tests.test_match_shards import HEAD

AS_OF = dt.date(2026, 11, 26)


# Every operator, group and benefit type, guards narrowed, both budget rules (exceeded), two
# exclusive groups (R-01 and R-10 tie), a manual pre-screen, a policy out of force and one on a name
# list (not expressed).
POLICIES = {
    "R-01": """conditions:
  - {field: division_code, op: eq, value: "411303"}
  - {field: rd_ratio, op: ge, value: 0.03}
  - {field: credit_rating, op: in, value: [A, B]}
benefit: {type: fixed, amount: 1000}
exclusive_group: G1
budget: 3000
budget_rule: flag
""",
    "R-02": """conditions:
  - any:
      - {field: high_tech, op: is_true}
      - {field: rd_expense_10k, op: gt, value: 50.5}
  - none:
      - {field: arrears, op: is_true}
      - {field: abnormal, op: is_true}
benefit: {type: rate, base: rd_expense_10k, rate: 100.25, min: 1000, cap: 15000.5}
exclusive_group: G1
budget: 30000.01
budget_rule: pro_rata
""",
    "R-03": """conditions:
  - {field: insured_avg_12m, op: ge, value: 10.5}
  - {field: size_class, op: not_in, value: [大型]}
  - {field: graduates_12m, op: le, value: 40.5}
benefit: {type: per_head, base: insured_count, amount_each: 333.335, cap: 20000}
exclusive_group: G1
guards: [registered]
""",
    "R-04": """conditions:
  - {field: tax_paid, op: between, value: [1000, null]}
  - {field: tax_growth, op: between, value: [0.1, 0.9]}
  - {field: industry_code, op: prefix_in, value: [C, I65]}
benefit:
  type: tiered
  base: tax_paid
  tiers:
    - {min: 500000, amount: 8000}
    - {min: 1000, amount: 2000}
    - {min: 100000, amount: 5000}
exclusive_group: G2
budget: 20000
budget_rule: pro_rata
""",
    "R-05": """conditions:
  - {field: established_on, op: lt, value: 2020-06-01}
  - {field: age_years, op: ne, value: 3}
  - {field: general_taxpayer, op: is_false}
  - {field: phone, op: not_null}
benefit: {type: rate, base: revenue_10k, rate: 0.0035, cap: 90000}
exclusive_group: G2
guards: [active, not_dishonest]
""",
    "R-06": """conditions:
  - {field: tax_year, op: is_null}
  - {field: age_years, op: between, value: [null, 8]}
benefit: {type: fixed, amount: 2000}
exclusive_group: G2
guards: [not_dishonest]
""",
    "R-07": """conditions:
  - {field: registered_capital_10k, op: ge, value: 1000}
  - {field: industry_section, op: in, value: [C, D, E]}
""",
    "R-08": """conditions:
  - {field: new_hires_12m, op: not_null}
benefit: {type: per_head, base: new_hires_12m, amount_each: 0.01}
""",
    "R-10": """conditions:
  - {field: credit_rating, op: in, value: [A, B, M]}
benefit: {type: fixed, amount: 1000}
exclusive_group: G1
""",
    "R-09": """conditions:
  - {field: division_code, op: eq, value: "411303"}
benefit: {type: from_list}
""",
}
KINDS = {"R-07": "manual", "R-09": "name_list"}
PERIODS = {"R-06": "2025"}


def load_policies(tmp_path) -> list[policy_lib.Policy]:
    folder = tmp_path / "policies"
    folder.mkdir()
    def head(pid: str, period: str) -> str:
        return f"id: {pid}\n" + HEAD.format(id=pid, kind=KINDS.get(pid, "condition")).replace(
            'period: "2026"', f'period: "{period}"')

    for pid, body in POLICIES.items():
        (folder / f"{pid}.yaml").write_text(head(pid, PERIODS.get(pid, "2026")) + body, encoding="utf-8")
    (folder / "R-00.yaml").write_text(head("R-00", "2025").replace("2026-12-31", "2026-01-31") + POLICIES["R-06"],
                                      encoding="utf-8")   # out of force
    loaded, errors = policy_lib.load_dir(folder)
    assert not [e for e in errors if not e.warning], errors
    return loaded


def make_portrait(n: int, seed: int = 11) -> pa.Table:
    rng = random.Random(seed)

    def maybe(value, p=0.12):
        return None if rng.random() < p else value

    rows = []
    for i in range(n):
        rows.append({
            "uscc": f"91411303MA{i:07d}X", "name": maybe(f"企业{i}", 0.05), "phone": maybe("0377-1"),
            "division_code": maybe(rng.choice(["411303", "411303", "411302"])),
            "industry_code": maybe(rng.choice(["C3311", "I6510", "I6420", "F5123", "D4411"])),
            "industry_section": maybe(rng.choice(["C", "D", "E", "I"])),
            "registered": rng.random() > 0.05, "active": maybe(rng.random() > 0.1),
            "abnormal": maybe(rng.random() < 0.1), "arrears": maybe(rng.random() < 0.15),
            "dishonest": maybe(rng.random() < 0.1), "high_tech": maybe(rng.random() < 0.3),
            "general_taxpayer": maybe(rng.random() < 0.5),
            "established_on": maybe(dt.date(2012, 1, 1) + dt.timedelta(days=rng.randint(0, 5000))),
            "age_years": maybe(rng.randint(0, 14)), "tax_year": maybe(2025, 0.3),
            "registered_capital_10k": maybe(D(rng.randint(0, 5000))),
            "revenue_10k": maybe(D(rng.randint(0, 10**9)) / 10**4),
            "tax_paid": maybe(D(rng.randint(0, 10**8)) / 100),
            "rd_expense_10k": maybe(D(rng.randint(0, 20000)) / 100),
            "credit_rating": maybe(rng.choice(["A", "B", "M", "C"])),
            "tax_growth": maybe(D(rng.randint(-500, 1500)) / 1000),
            "rd_ratio": maybe(rng.choice([D("0.03"), D(rng.randint(0, 60)) / 1000])),
            "insured_count": maybe(rng.randint(0, 80)),
            "insured_avg_12m": maybe((D(rng.randint(0, 400)) / 10 + D(1) / 3).quantize(D("1e-18"))),
            "new_hires_12m": maybe(rng.randint(0, 900)), "graduates_12m": maybe(rng.randint(0, 60)),
            "size_class": maybe(rng.choice(list(contracts.SIZE_CLASSES))),
        })
    return pa.table({f.name: [r.get(f.name) for r in rows] for f in contracts.PORTRAIT_SCHEMA},
                    schema=contracts.PORTRAIT_SCHEMA)


@pytest.fixture
def runs(tmp_path):
    policies = load_policies(tmp_path)
    portrait = make_portrait(600)
    pq.write_table(portrait, tmp_path / "portrait.parquet")
    results = engine.evaluate(portrait, policies, AS_OF)
    pq.write_table(results, tmp_path / "matches.parquet")
    summary = ref.run(tmp_path / "portrait.parquet", policies, AS_OF, tmp_path / "reference.parquet")
    return tmp_path, summary, results


def test_the_fixture_exercises_every_outcome_groups_and_budgets(runs):
    _, _, results = runs
    outcomes = set(results.column("outcome").to_pylist())
    assert outcomes == {"eligible", "missing_data", "near_miss", "guard_failed", "excluded_by_group"}
    assert True in results.column("over_budget").to_pylist()   # R-01's flag budget
    by_policy = results.group_by(["policy_id", "outcome"]).aggregate([("amount", "sum")]).to_pylist()
    totals = {(r["policy_id"], r["outcome"]): r["amount_sum"] for r in by_policy}
    assert totals[("R-10", "excluded_by_group")] > 0   # ties with R-01 go to the smaller id


def test_the_reference_agrees_with_the_engine(runs):
    folder, summary, results = runs
    assert summary["not_expressed"] == ["R-09"]
    assert "R-00" not in summary["policies"] and "R-06" in summary["policies"]
    comparison = ref.compare(folder / "reference.parquet", folder / "matches.parquet", summary["policies"])
    assert comparison["engine_rows"] == results.num_rows
    assert comparison["engine_rows_not_compared"] == 0   # R-09 has no list: no rows
    assert comparison["only_engine_examples"] == [] and comparison["only_reference_examples"] == []
    assert comparison["agree"]


def test_the_comparison_finds_a_changed_amount(runs, tmp_path):
    folder, summary, results = runs
    amounts = results.column("amount").to_pylist()
    k = next(i for i, a in enumerate(amounts) if a is not None)
    amounts[k] += D("0.01")
    changed = results.set_column(results.schema.get_field_index("amount"), "amount", pa.array(amounts, engine.AMOUNT))
    pq.write_table(changed, tmp_path / "changed.parquet")
    comparison = ref.compare(folder / "reference.parquet", tmp_path / "changed.parquet", summary["policies"])
    assert (comparison["only_engine"], comparison["only_reference"]) == (1, 1)
    assert not comparison["agree"]
