"""A DuckDB SQL formulation of the policies: the reference point `make bench` measures matching against.

A bench tool, not part of the pipeline. For the portrait a run built and the run's policy files it
writes one SQL query (a UNION ALL of one SELECT per policy, then exclusive groups and pro-rata budgets
as window and aggregate steps) that gives, per policy and enterprise, the outcome the engine stores and
the amount, written to Parquet: the same decisions as pipelines/engine.py, with no evidence. Then it
compares (policy_id, uscc, outcome, amount) with the engine's matches.parquet.

Expressed: `condition` and `manual` policies (every operator, group, guard and benefit type of
policies.md, exclusive groups, both budget rules). Not expressed: `name_list` policies (their lists
come from the inbox): they are left out of the query and of the comparison, which says so.

    python -m benchmarks.duckdb_reference --portrait P --policies DIR --as-of D --out O \
        [--matches M] [--report R]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from pipelines import contracts, engine, policies as policy_lib
from pipelines.policies import FIELD_KINDS, NUMERIC_KINDS, Leaf, Node, Policy

COMPARED = ("policy_id", "uscc", "outcome", "amount")
EXPRESSED_KINDS = ("condition", "manual")
# A guard: the SQL that holds when it passes; a null field fails it, as in the engine. (The portrait
# the pipeline builds has `registered`.)
GUARD_SQL = {guard: f"coalesce({field} = {str(passes).lower()}, false)"
             for guard, (field, passes) in engine.GUARD_FIELDS.items()}


# ---------------------------------------------------------------- literals and leaves

def _text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _decimal_type(field: str) -> tuple[int, int]:
    type_ = contracts.PORTRAIT_SCHEMA.field(field).type
    return (type_.precision, type_.scale)


def _scale(value: Decimal) -> int:
    return max(0, -value.as_tuple().exponent)  # type: ignore[operator]


def _numeric(field: str, values) -> tuple[str, list[str]]:
    """(the column, the literals) typed so that DuckDB compares them exactly: in the column's own
    type when every value fits it, else both as DECIMAL(38, 18) (the engine's comparison type).
    DuckDB would otherwise widen mismatched decimals to DOUBLE."""
    decimals = [Decimal(v) for v in values]
    if FIELD_KINDS[field] == "int":
        if all(d == d.to_integral_value() for d in decimals):
            return field, [str(int(d)) for d in decimals]
    else:
        precision, scale = _decimal_type(field)
        if all(_scale(d) <= scale for d in decimals):
            return field, [f"CAST('{d:f}' AS DECIMAL({precision}, {scale}))" for d in decimals]
    return f"CAST({field} AS DECIMAL(38, 18))", [f"CAST('{d:f}' AS DECIMAL(38, 18))" for d in decimals]


def _literal(field: str, value) -> str:
    kind = FIELD_KINDS[field]
    if kind == "date":
        return f"DATE '{value.isoformat()}'"
    if kind == "bool":
        return "true" if value else "false"
    return _text(value)


def _typed(field: str, values) -> tuple[str, list[str]]:
    if FIELD_KINDS[field] in NUMERIC_KINDS:
        return _numeric(field, values)
    return field, [_literal(field, v) for v in values]


_COMPARE = {"eq": "=", "ne": "<>", "gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def leaf_sql(leaf: Leaf) -> str:
    """TRUE / FALSE / NULL (unknown), as the engine's leaf_result."""
    f, op = leaf.field, leaf.op
    if op == "is_null":
        return f"({f} IS NULL)"
    if op == "not_null":
        return f"({f} IS NOT NULL)"
    if op in ("is_true", "is_false"):
        return f"({f} = {'true' if op == 'is_true' else 'false'})"
    if op in _COMPARE:
        col, (lit,) = _typed(f, [leaf.value])
        return f"({col} {_COMPARE[op]} {lit})"
    if op == "between":
        lo, hi = leaf.value
        col, lits = _typed(f, [v for v in (lo, hi) if v is not None])
        parts = []
        if lo is not None:
            parts.append(f"{col} >= {lits.pop(0)}")
        if hi is not None:
            parts.append(f"{col} <= {lits.pop(0)}")
        # No bound at all: TRUE, unknown on a null value.
        return "(" + " AND ".join(parts) + ")" if parts else f"(CASE WHEN {f} IS NULL THEN NULL ELSE true END)"
    if op in ("in", "not_in"):
        col, lits = _typed(f, leaf.value)
        return f"({col} {'IN' if op == 'in' else 'NOT IN'} ({', '.join(lits)}))"
    if op == "prefix_in":
        return "(" + " OR ".join(f"starts_with({f}, {_text(p)})" for p in leaf.value) + ")"
    raise ValueError(f"unknown operator {op}")


def node_sql(node: Node) -> str:
    if isinstance(node, Leaf):
        return leaf_sql(node)
    items = [node_sql(item) for item in node.items]
    if node.op == "all":
        return "(" + " AND ".join(items) + ")"
    anyof = "(" + " OR ".join(items) + ")"
    return anyof if node.op == "any" else f"(NOT {anyof})"


# ---------------------------------------------------------------- amounts

def _dec(value: Decimal) -> str:
    """A policy number in the narrowest exact decimal type: with DECIMAL(38, s) on both sides DuckDB's
    least/greatest would fall back to a type that loses the fraction."""
    sign, digits, exponent = value.as_tuple()
    scale = _scale(value)
    precision = max(len(digits) + exponent, 0) + scale   # type: ignore[operator]
    return f"CAST('{value:f}' AS DECIMAL({max(precision, 1)}, {scale}))"


def _base(field: str) -> str:
    """A benefit base as an exact decimal (ints too), to multiply by a policy number."""
    return f"CAST({field} AS DECIMAL(38, 6))" if FIELD_KINDS[field] == "int" else field


def amount_sql(policy: Policy) -> str:
    """The amount before rounding (NULL when the base is null), as the engine's raw_amounts."""
    b = policy.benefit
    if b.type == "fixed":
        return _dec(b.amount)
    base = _base(b.base)
    if b.type == "tiered":
        whens = " ".join(f"WHEN {base} >= {_dec(t.min)} THEN {_dec(t.amount)}" for t in reversed(b.tiers))
        return f"(CASE WHEN {base} IS NULL THEN NULL {whens} ELSE 0 END)"
    amount = f"({base} * {_dec(b.rate if b.type == 'rate' else b.amount_each)})"
    # greatest/least skip NULLs, but a null base is missing_data before the amount matters.
    if b.type == "rate" and b.min is not None:
        amount = f"greatest({amount}, {_dec(b.min)})"
    if b.cap is not None:
        amount = f"least({amount}, {_dec(b.cap)})"
    return amount


def _fen(amount: str) -> str:
    """Half-up to the 分 (DuckDB rounds a decimal half away from zero: the same for amounts > 0,
    and an amount <= 0 is never eligible)."""
    return f"CAST(round({amount}, 2) AS DECIMAL(38, 2))"


# ---------------------------------------------------------------- one policy, then all of them

def policy_sql(policy: Policy, portrait: str) -> str:
    """One policy's stored results: policy_id, uscc, outcome, amount (eligible only), grp, period."""
    items = [node_sql(n) for n in policy.conditions]
    cond = " AND ".join(items) if items else "true"
    if len(items) > 1:   # exactly one top-level item FALSE, all the others TRUE
        false_count = " + ".join(f"CAST(coalesce(NOT {i}, false) AS INTEGER)" for i in items)
        true_count = " + ".join(f"CAST(coalesce({i}, false) AS INTEGER)" for i in items)
        near = f"({false_count}) = 1 AND ({true_count}) = {len(items) - 1}"
    else:
        near = "true" if items else "false"
    guards = " AND ".join(GUARD_SQL[g] for g in policy.guards)
    base_null = "false"
    if policy.kind == "manual":   # a pre-screen: eligible with no amount
        decided, amount = "'eligible'", "CAST(NULL AS DECIMAL(38, 2))"
    else:
        amount = _fen(amount_sql(policy))
        if policy.benefit.type != "fixed":
            base_null = f"{policy.benefit.base} IS NULL"
        decided = "CASE WHEN base_null THEN 'missing_data' WHEN amount > 0 THEN 'eligible' END"
    group = _text(policy.exclusive_group) if policy.exclusive_group and policy.kind != "manual" else "NULL"
    return f"""SELECT {_text(policy.id)} AS policy_id, uscc, outcome,
       CASE WHEN outcome = 'eligible' THEN amount END AS amount,
       CAST({group} AS VARCHAR) AS grp, {_text(policy.period)} AS period
FROM (
  SELECT uscc, amount,
         CASE WHEN cond IS NULL THEN 'missing_data'
              WHEN NOT cond THEN CASE WHEN near THEN 'near_miss' END
              WHEN NOT guard_ok THEN 'guard_failed'
              ELSE {decided} END AS outcome
  FROM (SELECT uscc, ({cond}) AS cond, ({near}) AS near, ({guards}) AS guard_ok,
              {amount} AS amount, {base_null} AS base_null
        FROM {portrait})
)
WHERE outcome IS NOT NULL"""


def reference_sql(policies: list[Policy], portrait: str) -> str:
    """All policies, then 就高不重复 and the budgets, as one query."""
    union = "\nUNION ALL\n".join(policy_sql(p, portrait) for p in policies)
    pro_rata = [p for p in policies if p.budget is not None and p.budget_rule == "pro_rata" and p.kind != "manual"]
    # budget = num / den exactly; new 分 = floor(分 x budget / total) = 分 x 100 num // (den x total 分)
    budgets = ", ".join(f"({_text(p.id)}, {p.budget.as_integer_ratio()[0]}::HUGEINT, "
                        f"{p.budget.as_integer_ratio()[1]}::HUGEINT)" for p in pro_rata)
    budget_cte = (f"budgets(policy_id, num, den) AS (VALUES {budgets})" if budgets else
                  "budgets(policy_id, num, den) AS (SELECT NULL::VARCHAR, NULL::HUGEINT, NULL::HUGEINT WHERE false)")
    return f"""WITH results AS (
{union}
),
grouped AS (
  SELECT policy_id, uscc, amount,
         CASE WHEN contender AND winner <> policy_id THEN 'excluded_by_group' ELSE outcome END AS outcome
  FROM (SELECT *, first_value(policy_id) OVER (
                    PARTITION BY uscc, grp, period, contender ORDER BY amount DESC, policy_id) AS winner
        FROM (SELECT *, outcome = 'eligible' AND grp IS NOT NULL AS contender FROM results))
),
{budget_cte},
totals AS (
  SELECT policy_id, sum(amount) AS total FROM grouped WHERE outcome = 'eligible' GROUP BY policy_id
)
SELECT g.policy_id, g.uscc, g.outcome,
       CASE WHEN g.outcome = 'eligible' AND CAST(t.total * 100 AS HUGEINT) * b.den > b.num * 100
            THEN CAST(CAST((CAST(g.amount * 100 AS HUGEINT) * 100 * b.num)
                           // (b.den * CAST(t.total * 100 AS HUGEINT)) AS DECIMAL(38, 0)) * 0.01
                      AS DECIMAL(38, 2))
            ELSE g.amount END AS amount
FROM grouped g
LEFT JOIN budgets b USING (policy_id)
LEFT JOIN totals t USING (policy_id)"""


def expressed(policies: list[Policy], as_of: dt.date) -> tuple[list[Policy], list[Policy]]:
    """(policies in force the SQL expresses, in id order; those in force it does not)."""
    active = sorted(policy_lib.in_force(policies, as_of), key=lambda p: p.id)
    return ([p for p in active if p.kind in EXPRESSED_KINDS], [p for p in active if p.kind not in EXPRESSED_KINDS])


def load_portrait(con: duckdb.DuckDBPyConnection, portrait: Path, policies: list[Policy]) -> str:
    """The portrait's columns the policies read (the guards' too), as a temporary table: the Parquet
    file is scanned once rather than once per policy. Its name."""
    wanted = {"uscc"} | {field for field, _ in engine.GUARD_FIELDS.values()}
    for p in policies:
        wanted |= {leaf.field for leaf in p.leaves()}
        if p.kind != "manual" and p.benefit.base:
            wanted.add(p.benefit.base)
    con.execute(f"CREATE TEMP TABLE portrait AS SELECT {', '.join(sorted(wanted))} "
                f"FROM read_parquet({_text(str(portrait))})")
    return "portrait"


def connect(memory_limit: str | None, spill: Path) -> "duckdb.DuckDBPyConnection":
    """A DuckDB connection that may spill to `spill`; rows need not keep their order (the
    results are compared as sets), which lets DuckDB stream a COPY of tens of millions of rows."""
    con = duckdb.connect()
    con.execute("SET preserve_insertion_order = false")
    con.execute(f"SET temp_directory = {_text(str(spill))}")
    if memory_limit:
        con.execute(f"SET memory_limit = {_text(memory_limit)}")
    return con


def run(portrait: Path, policies: list[Policy], as_of: dt.date, out: Path, memory_limit: str | None = None) -> dict:
    """Write the reference results to `out` (Parquet); what it expressed and how many rows."""
    chosen, left_out = expressed(policies, as_of)
    con = connect(memory_limit, out.parent / ".duckdb-spill")
    sql = reference_sql(chosen, load_portrait(con, portrait, chosen))
    out.parent.mkdir(parents=True, exist_ok=True)
    con.execute(f"COPY ({sql}) TO {_text(str(out))} (FORMAT PARQUET)")
    con.close()
    return {"policies": [p.id for p in chosen], "not_expressed": [p.id for p in left_out],
            "rows": pq.ParquetFile(out).metadata.num_rows}


def compare(reference: Path, matches: Path, policy_ids: list[str], examples: int = 5,
            memory_limit: str | None = None) -> dict:
    """(policy_id, uscc, outcome, amount) of the reference against the engine's results for the
    same policies: rows on each side, rows only on one side, and a few of them; and the engine's
    rows of the policies left out."""
    con = connect(memory_limit, reference.parent / ".duckdb-spill")
    cols = ", ".join(COMPARED)
    con.execute("CREATE TEMP TABLE ids(policy_id VARCHAR)")
    con.executemany("INSERT INTO ids VALUES (?)", [(i,) for i in policy_ids])
    con.execute(f"CREATE TEMP VIEW engine AS SELECT {cols} FROM read_parquet({_text(str(matches))}) "
                "WHERE policy_id IN (SELECT policy_id FROM ids)")
    con.execute(f"CREATE TEMP VIEW reference AS SELECT {cols} FROM read_parquet({_text(str(reference))})")
    only_engine = "SELECT * FROM engine EXCEPT ALL SELECT * FROM reference"
    only_reference = "SELECT * FROM reference EXCEPT ALL SELECT * FROM engine"

    def count(sql: str) -> int:
        return con.execute(f"SELECT count(*) FROM ({sql})").fetchone()[0]

    def some(sql: str) -> list[dict]:
        rows = con.execute(f"{sql} ORDER BY ALL LIMIT {examples}").fetchall()
        return [dict(zip(COMPARED, (str(v) if v is not None else None for v in r))) for r in rows]

    result = {"columns": list(COMPARED), "policies": len(policy_ids),
              "engine_rows": count("SELECT * FROM engine"), "reference_rows": count("SELECT * FROM reference"),
              "engine_rows_not_compared": count(f"SELECT * FROM read_parquet({_text(str(matches))}) "
                                                "WHERE policy_id NOT IN (SELECT policy_id FROM ids)"),
              "only_engine": count(only_engine), "only_reference": count(only_reference),
              "only_engine_examples": some(only_engine), "only_reference_examples": some(only_reference)}
    result["agree"] = result["only_engine"] == 0 and result["only_reference"] == 0
    con.close()
    return result


def main() -> None:
    from pipelines.nightly import StageMeter

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--portrait", required=True, type=Path)
    parser.add_argument("--policies", required=True, type=Path, help="the folder of policy files")
    parser.add_argument("--as-of", required=True, type=dt.date.fromisoformat)
    parser.add_argument("--out", required=True, type=Path, help="the reference results (Parquet)")
    parser.add_argument("--matches", type=Path, help="the engine's matches.parquet to compare with")
    parser.add_argument("--report", type=Path, help="write the timing and the comparison here (JSON)")
    parser.add_argument("--memory-limit", help="DuckDB's memory_limit, e.g. 8GB (it spills beyond it)")
    args = parser.parse_args()
    meter = StageMeter()
    # Timed as the engine's match stage is: reading the policy files, the query, writing Parquet.
    with meter.stage("duckdb"):
        loaded, _errors = policy_lib.load_dir(args.policies)
        summary = run(args.portrait, loaded, args.as_of, args.out, args.memory_limit)
    report = {**meter.stages["duckdb"], **summary}
    if args.matches:
        report["comparison"] = compare(args.out, args.matches, summary["policies"], memory_limit=args.memory_limit)
    text = json.dumps(report, ensure_ascii=False, indent=1)
    if args.report:
        args.report.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
