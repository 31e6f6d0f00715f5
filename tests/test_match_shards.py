"""Matching in shards of enterprises (issue 7 item 4): the merged result equals the unsharded run."""
from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal as D

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pipelines import contracts, engine, match
from tests.conftest import make_settings

AS_OF = dt.date(2026, 11, 26)

HEAD = """name: 政策{id}
department: 区财政局
kind: {kind}
period: "2026"
valid_from: 2026-01-01
valid_to: 2026-12-31
"""

POLICIES = {
    # fixed amount, group G1, flag budget (exceeded)
    "P-A": """conditions:
  - {field: division_code, op: eq, value: "411303"}
  - {field: rd_ratio, op: ge, value: 0.03}
benefit:
  type: fixed
  amount: 1000
exclusive_group: G1
budget: 3000
budget_rule: flag
""",
    # rate, group G1, pro_rata budget (exceeded: amounts scaled down)
    "P-B": """conditions:
  - {field: division_code, op: eq, value: "411303"}
  - any:
      - {field: high_tech, op: is_true}
      - {field: rd_expense_10k, op: ge, value: 50}
benefit:
  type: rate
  base: rd_expense_10k
  rate: 100
  cap: 50000
exclusive_group: G1
budget: 30000.01
budget_rule: pro_rata
""",
    # per head, pro_rata budget, near misses and missing data
    "P-C": """conditions:
  - {field: insured_avg_12m, op: ge, value: 10}
  - {field: size_class, op: in, value: [小型, 微型]}
benefit:
  type: per_head
  base: insured_count
  amount_each: 500
  cap: 20000
exclusive_group: G2
budget: 70000
budget_rule: pro_rata
guards: [registered, active, not_dishonest]
""",
    # a name list in group G1 (competes with P-A and P-B), with a flag budget
    "P-L": """conditions:
  - {field: division_code, op: eq, value: "411303"}
benefit:
  type: from_list
exclusive_group: G1
budget: 8000
budget_rule: flag
""",
    # a second name list, nobody in it is in the portrait
    "P-M": """benefit:
  type: from_list
""",
    "P-Z": """conditions:
  - {field: registered_capital_10k, op: ge, value: 1000}
""",
}
KINDS = {"P-L": "name_list", "P-M": "name_list", "P-Z": "manual"}


def code(i: int) -> str:
    return f"91411303MA{i:07d}X"


def make_portrait(n: int, seed: int = 7) -> pa.Table:
    rng = random.Random(seed)

    def maybe(v, p=0.1):
        return None if rng.random() < p else v

    rows = []
    for i in rng.sample(range(10 * n), n):
        rows.append({
            "uscc": code(i), "name": maybe(f"企业{i}", 0.05),
            "division_code": maybe(rng.choice(["411303", "411303", "411302"])),
            "registered": rng.random() > 0.05, "active": maybe(rng.random() > 0.1),
            "dishonest": maybe(rng.random() < 0.1),
            "rd_ratio": maybe(D(rng.randint(0, 60)) / 1000),
            "rd_expense_10k": maybe(D(rng.randint(0, 20000)) / 100),
            "high_tech": maybe(rng.random() < 0.3),
            "insured_avg_12m": maybe(D(rng.randint(0, 400)) / 10),
            "insured_count": maybe(rng.randint(0, 60)),
            "size_class": maybe(rng.choice(["小型", "微型", "中型"])),
            "registered_capital_10k": maybe(D(rng.randint(0, 5000))),
        })
    return pa.table({f.name: [r.get(f.name) for r in rows] for f in contracts.PORTRAIT_SCHEMA},
                    schema=contracts.PORTRAIT_SCHEMA)


def setup(tmp_path, n: int = 80):
    pol = tmp_path / "policies"
    pol.mkdir()
    for pid, body in POLICIES.items():
        (pol / f"{pid}.yaml").write_text(f"id: {pid}\n" + HEAD.format(id=pid, kind=KINDS.get(pid, "condition")) + body,
                                         encoding="utf-8")
    settings = make_settings(tmp_path / "data", policies=pol)
    portrait = make_portrait(n)
    settings.portraits.mkdir(parents=True)
    pq.write_table(portrait, settings.portrait_path(AS_OF))
    codes = portrait.column("uscc").to_pylist()
    rng = random.Random(3)
    listed = rng.sample(codes, min(12, len(codes))) + [code(99_999_991), code(99_999_992)]   # two not in the portrait
    t0 = dt.datetime(2026, 11, 1)
    for k, batch in enumerate([listed[:9], listed[5:] + [listed[0]]]):      # overlaps: the newer wins
        folder = settings.namelists / "P-L"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({
            "uscc": batch, "name": [f"名单{c[-5:]}" for c in batch],
            "amount": pa.array([D(rng.randint(0, 8_000_000)) / 100 for _ in batch], contracts.MONEY),
            "note": [None] * len(batch), "source": [f"f{k}.xlsx"] * len(batch),
            "received_at": pa.array([t0 + dt.timedelta(days=k)] * len(batch), pa.timestamp("s")),
        }), folder / f"{k}.parquet")
    folder = settings.namelists / "P-M"
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"uscc": [code(99_999_993)], "amount": pa.array([D("10.00")], contracts.MONEY)}),
                   folder / "0.parquet")
    return settings


def _sorted(table: pa.Table) -> pa.Table:
    return table.sort_by([("policy_id", "ascending"), ("uscc", "ascending")])


@pytest.fixture
def unsharded(tmp_path):
    settings = setup(tmp_path)
    summary = match.run(settings, AS_OF)
    table = pq.read_table(summary["matches"])
    return settings, summary, table


def test_the_fixture_exercises_groups_budgets_and_lists(unsharded):
    _, summary, table = unsharded
    outcomes = set(table.column("outcome").to_pylist())
    assert {"eligible", "excluded_by_group", "missing_data", "near_miss", "guard_failed"} <= outcomes
    by_id = {p["policy_id"]: p for p in summary["policies"]}
    assert by_id["P-A"]["over_budget"] and by_id["P-L"]["over_budget"]
    # pro_rata: scaled to within the budget
    assert D(by_id["P-B"]["eligible_amount"]) <= D("30000.01") and D(by_id["P-C"]["eligible_amount"]) <= 70000
    unscaled = engine.evaluate(pq.read_table(unsharded[0].portrait_path(AS_OF)),
                               *_policies_and_lists(unsharded[0]), apply_budgets=False)
    for pid, budget in (("P-B", D("30000.01")), ("P-C", D(70000))):
        part = unscaled.filter(pc.and_(pc.equal(unscaled.column("policy_id"), pid),
                                       pc.equal(unscaled.column("outcome"), "eligible")))
        assert pc.sum(part.column("amount")).as_py() > budget
    assert summary["name_lists"] == {"P-L": 19, "P-M": 1}


def _policies_and_lists(settings):
    from pipelines import policies as policy_lib

    loaded, _ = policy_lib.load_dir(settings.policies)
    return loaded, AS_OF, match.load_name_lists(settings)


@pytest.mark.parametrize("shards", [1, 2, 3, 7])
def test_merged_shards_equal_the_unsharded_run(unsharded, shards):
    settings, summary, expected = unsharded
    paths = [match.run_shard(settings, AS_OF, k, shards) for k in range(shards)]
    assert [p.rsplit("/", 1)[1] for p in paths] == [f"shard-{k}-of-{shards}.parquet" for k in range(shards)]
    assert sum(pq.read_metadata(p).num_rows for p in paths) == expected.num_rows
    merged_summary = match.merge(settings, AS_OF, shards)
    merged = pq.read_table(merged_summary["matches"])
    assert merged.schema.equals(engine.RESULT_SCHEMA)
    assert _sorted(merged).equals(_sorted(expected))
    assert merged.equals(expected)                      # the very same order, too
    assert merged_summary == summary


def test_a_shard_with_no_enterprises(tmp_path):
    settings = setup(tmp_path, n=3)
    summary = match.run(settings, AS_OF)
    shards = 7                                          # more shards than enterprises
    ranges = [match.shard_range(settings, AS_OF, k, shards) for k in range(shards)]
    for k in range(shards):
        match.run_shard(settings, AS_OF, k, shards)
    sizes = [pq.read_table(settings.shard_path(AS_OF, k, shards)).num_rows for k in range(shards)]
    assert 0 in sizes and ranges[0][0] is None and ranges[-1][1] is None
    merged = match.merge(settings, AS_OF, shards)
    assert pq.read_table(merged["matches"]).equals(pq.read_table(summary["matches"]))
    assert merged == summary


@pytest.mark.parametrize("shards", [1, 2, 3, 7])
def test_shard_ranges_cut_the_line_of_codes_into_pieces(tmp_path, shards):
    """Every code (in the portrait, between, before, after, or null) lies in exactly one shard,
    and the portrait's rows are shared out evenly."""
    settings = setup(tmp_path, n=20)
    ranges = [match.shard_range(settings, AS_OF, k, shards) for k in range(shards)]
    portrait = pq.read_table(settings.portrait_path(AS_OF), columns=["uscc"]).column("uscc")
    probes = pa.table({"uscc": pa.array(portrait.to_pylist() + ["", "0", "ZZZZ", code(10**6), None])})
    owners = [match._in_range(probes, lo, hi).column("uscc").to_pylist() for lo, hi in ranges]
    assert sorted(sum(owners, []), key=str) == sorted(probes.column("uscc").to_pylist(), key=str)
    assert None in owners[0]
    counts = [pq.read_table(settings.portrait_path(AS_OF), filters=match._range_filter(lo, hi)).num_rows
              for lo, hi in ranges]
    assert sum(counts) == 20 and max(counts) - min(counts) <= 1


def test_merge_refuses_a_missing_shard_or_other_policies(tmp_path):
    settings = setup(tmp_path, n=10)
    match.run_shard(settings, AS_OF, 0, 2)
    with pytest.raises(FileNotFoundError):
        match.merge(settings, AS_OF, 2)
    match.run_shard(settings, AS_OF, 1, 2)
    (settings.policies / "P-Z.yaml").write_text(
        (settings.policies / "P-Z.yaml").read_text(encoding="utf-8") + "\n# changed\n", encoding="utf-8")
    with pytest.raises(RuntimeError, match="policy files changed"):
        match.merge(settings, AS_OF, 2)
    with pytest.raises(ValueError):
        match.run_shard(settings, AS_OF, 2, 2)


def test_match_shards_setting():
    from pipelines.config import load_settings

    assert load_settings({}).match_shards == 1
    assert load_settings({"MIANSHEN_MATCH_SHARDS": "4"}).match_shards == 4
    with pytest.raises(ValueError):
        load_settings({"MIANSHEN_MATCH_SHARDS": "0"})


@pytest.mark.parametrize("shards", [None, 3])
def test_the_name_lists_that_joined_a_run_are_among_its_recorded_inputs(tmp_path, shards):
    """lifecycle.md, Audit: a run records the name lists that joined it, with their hashes."""
    import sqlalchemy as sa

    from pipelines import nightly, warehouse
    from pipelines.files import sha256_file

    settings = setup(tmp_path, n=20)
    if shards is None:
        match.run(settings, AS_OF)
    else:
        for k in range(shards):
            match.run_shard(settings, AS_OF, k, shards)
        match.merge(settings, AS_OF, shards)
    nightly.record_audit(settings, AS_OF, "r1", "success")
    with warehouse.connect(settings.warehouse_url).connect() as conn:
        recorded = conn.execute(sa.select(warehouse.run_inputs.c.name, warehouse.run_inputs.c.sha256)
                                .where(warehouse.run_inputs.c.kind == "name_list")).all()
    lists = sorted(settings.namelists.glob("*/*.parquet"))
    assert sorted(recorded) == [(f"{p.parent.name}/{p.name}", sha256_file(p)) for p in lists]
    assert len(recorded) == 3
