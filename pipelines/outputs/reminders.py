"""Reminder lists (提醒清单), per department, three kinds (lifecycle.md item 6):

- 应享未享提醒: enterprises that qualify and have not claimed: the ledger's
  `notified` results not yet answered (with the confirmation deadline and the
  working days left), and the pre-screened eligible enterprises of `manual`
  policies (请告知企业申报).
- 差一项清单: near misses a department can act on: the enterprise is registered,
  active, not on a credit list and inside the district, and the one failing
  item is not the district itself; largest would-be benefit first; a workbook
  of at most NEAR_MISS_XLSX_ROWS rows, the rest in a CSV beside it.
- 数据缺口清单 (数据共享需求清单): missing-data results grouped by the missing
  data and the feed and department that should supply it, with the count of
  results each blocks; the enterprises in a CSV beside it. Every missing-data
  result is counted once, under the combination of data it lacks, so the
  counts add up to the department's missing-data results.

Built column-wise from the night's results, a policy at a time (at province
scale near misses and missing-data results are tens of millions of rows): the
two lists are staged to Parquet in a scratch folder and DuckDB sorts them per
department, spilling to disk beyond SORT_MEMORY, so no list is held whole. The
text of why is the engine's `reason` column (pipelines/evidence.py), read from
the evidence only for a result written without one.
"""
from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Callable, Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines import contracts, deadlines, engine, match
from pipelines.evidence import (MISSING_BENEFIT_BASE, failing, full_evidence, missing_fields,
                                top_item, templates_of)
from pipelines.files import atomic_write_bytes, is_temporary
from pipelines.outputs.review import safe_name
from pipelines.outputs.workbook import (CSV_BATCH_ROWS, LOOKUP_ROWS, XLSX_MAX_ROWS, Col, cn_date, per_value,
                                        regrouped, write_csv_tables, write_workbook)
from pipelines.policies import Policy, load_dir
from pipelines.workdays import WorkCalendar

UNCLAIMED, NEAR_MISS, DATA_GAPS = "应享未享提醒", "差一项清单", "数据缺口清单"
NEAR_MISS_XLSX_ROWS = 2_000
UNNAMED = "名称未登记"
SUMMARY = "summary.json"
TOP_GAPS = 5

UNCLAIMED_COLUMNS = (
    Col("序号", "seq", "int"),
    Col("企业名称", "name"),
    Col("统一社会信用代码", "uscc"),
    Col("联系电话", "phone"),
    Col("政策编号", "policy_id"),
    Col("政策名称", "policy_name"),
    Col("期次", "period"),
    Col("预计金额（元）", "amount", "money"),
    Col("短信告知日期", "notified_on"),
    Col("确认截止日期", "deadline"),
    Col("剩余工作日", "days_left", "int"),
    Col("提醒事项", "action", wrap=True, max_width=40),
)
NEAR_MISS_COLUMNS = (
    Col("序号", "seq", "int"),
    Col("企业名称", "name"),
    Col("统一社会信用代码", "uscc"),
    Col("联系电话", "phone"),
    Col("政策编号", "policy_id"),
    Col("政策名称", "policy_name"),
    Col("期次", "period"),
    Col("符合后预计金额（元）", "amount", "money"),
    Col("尚未满足的条件", "reason", wrap=True, max_width=70),
)
GAP_COLUMNS = (
    Col("序号", "seq", "int"),
    Col("缺失的数据", "gap", wrap=True, max_width=40),
    Col("应提供数据的部门（数据）", "source", wrap=True, max_width=50),
    Col("受影响的政策结果（条）", "results", "int"),
    Col("涉及企业（家）", "enterprises", "int"),
    Col("涉及政策", "policies", wrap=True, max_width=50),
)
GAP_DETAIL_COLUMNS = (
    Col("统一社会信用代码", "uscc"),
    Col("企业名称", "name"),
    Col("政策编号", "policy_id"),
    Col("政策名称", "policy_name"),
    Col("期次", "period"),
    Col("缺失的数据", "gap"),
    Col("应提供数据的部门（数据）", "source"),
)

# Portrait fields that are not a feed's column: the feed(s) they are computed from.
DERIVED_FEEDS = {
    "industry_section": ("registry",), "registered": ("registry",), "active": ("registry",),
    "age_years": ("registry",), "prev_tax_paid": ("tax",), "tax_growth": ("tax",), "rd_ratio": ("tax",),
    "insured_avg_12m": ("social_insurance",), "new_hires_12m": ("social_insurance",),
    "graduates_12m": ("social_insurance",), "high_tech": ("tech",), "tech_sme": ("tech",),
    "specialized": ("tech",), "little_giant": ("tech",), "dishonest": ("credit",),
    "size_class": ("social_insurance", "tax"),
}
NAME_LIST_AMOUNT = "部门报送名单金额"


def feeds_of(field: str) -> tuple[str, ...]:
    direct = tuple(f.name for f in contracts.FEEDS.values()
                   if field != "uscc" and field in {c.name for c in f.columns})
    return direct or DERIVED_FEEDS.get(field, ())


def source_text(fields: list[str]) -> str:
    feeds = dict.fromkeys(feed for field in fields for feed in feeds_of(field))
    return "、".join(f"{contracts.FEEDS[f].department}（{contracts.FEEDS[f].title}）" for f in feeds)


# ---------------------------------------------------------------- reading

class Results:
    """The night's results, read a policy at a time: a matches.parquet through its per-policy
    row groups (`match.policy_row_groups`; a file written otherwise is filtered as it is read),
    or a table (a test's). A province's night holds tens of millions of results; a list
    wants a few columns of a few outcomes."""

    def __init__(self, source: pa.Table | Path):
        self.table = source if isinstance(source, pa.Table) else None
        self.file = None if self.table is not None else pq.ParquetFile(source)
        schema = self.table.schema if self.table is not None else self.file.schema_arrow
        self.names = set(schema.names)
        self.templates = templates_of(schema)
        self.groups = match.policy_row_groups(self.file) if self.file is not None else None
        self.source = source

    def policy_ids(self) -> list[str]:
        if self.groups is not None:
            return sorted(self.groups)
        ids = self.table.column("policy_id") if self.table is not None else \
            pq.read_table(self.source, columns=["policy_id"]).column("policy_id")
        return sorted(pc.unique(ids).drop_null().to_pylist())

    def policy(self, policy_id: str, columns: Iterable[str]) -> pa.Table:
        """The named columns (those present) of the policy's results, in their stored order."""
        if self.groups is None:
            return self.where(columns, policy_id=policy_id)
        return self.file.read_row_groups(self.groups.get(policy_id, []),
                                         columns=[c for c in dict.fromkeys(columns) if c in self.names])

    def where(self, columns: Iterable[str], **equal: str) -> pa.Table:
        """The named columns (those present) of every result whose columns equal the given
        values (the filter pushed into the read)."""
        names = [c for c in dict.fromkeys(columns) if c in self.names]
        if self.table is None:
            return pq.read_table(self.source, columns=names, filters=[(c, "==", v) for c, v in equal.items()] or None)
        table = self.table
        for column, value in equal.items():
            table = table.filter(pc.equal(table.column(column), value))
        return table.select(names)

    def evidence(self, policy_id: str) -> pa.Array:
        """The full evidence text of the policy's results: rebuilt from the lean columns, or the
        `evidence` column of results written before evidence was normalised."""
        stored = self.policy(policy_id, ["evidence", "evidence_version", "evidence_actual", "evidence_result"])
        if "evidence" in stored.column_names:
            return stored.column("evidence").combine_chunks()
        return full_evidence(stored, self.templates)


PORTRAIT_COLUMNS = ("uscc", "name", "phone", "registered", "active", "dishonest", "division_code")


def read_portrait(path: Path | None, extra: set[str] = frozenset()) -> pa.Table:
    """The portrait's columns the lists need (those absent read as unknown)."""
    wanted = list(dict.fromkeys(PORTRAIT_COLUMNS + tuple(sorted(extra))))
    if path is not None and Path(path).exists():
        present = set(pq.read_schema(path).names)
        table = pq.read_table(path, columns=[n for n in wanted if n in present])
    else:
        table = pa.table({"uscc": pa.array([], pa.string())})
    for name in wanted:
        if name not in table.column_names:
            table = table.append_column(name, pa.nulls(table.num_rows, contracts.PORTRAIT_SCHEMA.field(name).type))
    return table.select(wanted)


def _lookup(portrait: pa.Table, codes: pa.Array) -> pa.Table:
    """The portrait row of each code (nulls where the code is not in the portrait)."""
    return portrait.take(pc.index_in(codes, value_set=portrait.column("uscc")))


def registry_names(portrait_rows: pa.Table) -> pa.Array:
    """The registry's name, or 名称未登记 (the code stands in its own column)."""
    registered = pc.fill_null(portrait_rows.column("registered"), True)
    name = pc.if_else(registered, portrait_rows.column("name"), pa.scalar(None, pa.string()))
    return pc.fill_null(name, UNNAMED)


LIST_COLUMNS = ["department", "policy_id", "policy_name", "period", "uscc", "outcome", "failed_item",
                "failed_guard", "reason"]


def _with_reasons(results: Results, policy_id: str, part: pa.Table, at: pa.Array) -> pa.Array:
    """The engine's reason of each row of `part` (the policy's results at positions `at`); made
    from the evidence where a row lacks one (results written without the engine's reason
    column: by hand, or by an older version)."""
    reasons = part.column("reason").combine_chunks() if "reason" in part.column_names \
        else pa.nulls(part.num_rows, pa.string())
    unexplained = pc.is_null(reasons)
    if pc.any(unexplained).as_py():
        few = part.filter(unexplained)
        evidence = results.evidence(policy_id).take(at.filter(unexplained))
        made = [failing(*r) for r in zip(few.column("outcome").to_pylist(), evidence.to_pylist(),
                                         few.column("failed_item").to_pylist(), few.column("failed_guard").to_pylist())]
        reasons = pc.replace_with_mask(reasons, unexplained, pa.array(made, pa.string()))
    return reasons


def _outcome(results: Results, policy_id: str, rows: pa.Table, outcome: str) -> pa.Table:
    """The policy's results of one outcome (LIST_COLUMNS), each with its reason."""
    at = pc.indices_nonzero(pc.equal(rows.column("outcome"), outcome))
    part = rows.take(at)
    reasons = _with_reasons(results, policy_id, part, at)
    if "reason" in part.column_names:
        return part.set_column(part.schema.get_field_index("reason"), "reason", reasons)
    return part.append_column("reason", reasons)


# ---------------------------------------------------------------- 差一项清单

def district_items(policy: Policy) -> set[int]:
    """The top-level items that test the enterprise's division: failing one of them is not actionable."""
    return {top_item(leaf.path) for leaf in policy.leaves() if leaf.field == "division_code"}


def would_be_amounts(part: pa.Table, portrait_rows: pa.Table, policy: Policy | None) -> pa.Array:
    """What each of a policy's near misses would be paid if it qualified (null when unknown: a
    manual or name-list policy)."""
    if policy is None or policy.benefit is None or policy.benefit.type == "from_list":
        return pa.nulls(part.num_rows, engine.AMOUNT)
    got, _ = engine.raw_amounts(engine.Columns(portrait_rows), policy, None)
    return got.cast(engine.AMOUNT)


NEAR_MISS_LIST = pa.schema([("department", pa.string()), ("uscc", pa.string()), ("name", pa.string()),
                            ("phone", pa.string()), ("policy_id", pa.string()), ("policy_name", pa.string()),
                            ("period", pa.string()), ("amount", engine.AMOUNT), ("reason", pa.string())])


def actionable(part: pa.Table, who: pa.Table, policy: Policy | None) -> pa.Table:
    """The near misses of one policy (`who`: their portrait rows) a department can act on: the
    enterprise is registered, active, not on a credit list and inside the district, and the
    failing item is not the district itself; with the would-be benefit (NEAR_MISS_LIST)."""
    keep = pc.and_(pc.and_(pc.fill_null(who.column("registered"), False), pc.fill_null(who.column("active"), False)),
                   pc.and_(pc.invert(pc.fill_null(who.column("dishonest"), True)),
                           pc.fill_null(pc.equal(who.column("division_code"), contracts.WOLONG), False)))
    items = district_items(policy) if policy is not None else set()
    if items:
        on_district = pc.is_in(part.column("failed_item"), value_set=pa.array(sorted(items), pa.int64()))
        keep = pc.and_(keep, pc.invert(pc.fill_null(on_district, False)))
    part, who = part.filter(keep), who.filter(keep)
    return pa.table({
        "department": part.column("department"), "uscc": part.column("uscc"), "name": registry_names(who),
        "phone": pc.fill_null(who.column("phone"), ""), "policy_id": part.column("policy_id"),
        "policy_name": part.column("policy_name"), "period": part.column("period"),
        "amount": would_be_amounts(part, who, policy), "reason": part.column("reason"),
    }, schema=NEAR_MISS_LIST)


# ---------------------------------------------------------------- 数据缺口清单

def _gap_of(reason: str | None, policy: Policy | None) -> tuple[str, str]:
    """(the missing data, who should supply it) of one missing-data reason."""
    fields = missing_fields(reason or "")
    if not fields and reason == MISSING_BENEFIT_BASE and policy is not None and policy.benefit is not None:
        if policy.benefit.type == "from_list":
            return NAME_LIST_AMOUNT, f"{policy.department}（名单）"
        fields = [policy.benefit.base]
    if not fields:
        return (reason or "数据缺失"), "—"
    return "、".join(contracts.FIELD_LABELS.get(f, f) for f in fields), source_text(fields) or "—"


GAP_DETAIL = pa.schema([("department", pa.string()), ("uscc", pa.string()), ("name", pa.string()),
                        ("policy_id", pa.string()), ("policy_name", pa.string()), ("period", pa.string()),
                        ("gap", pa.string()), ("source", pa.string())])


def with_gaps(part: pa.Table, policy: Policy | None) -> pa.Table:
    """One policy's missing-data results with the data each lacks (`gap`) and who should supply
    it (`source`), made once per distinct reason."""
    reasons = pc.fill_null(part.column("reason"), "")
    unique = pc.unique(reasons)
    made = [_gap_of(reason, policy) for reason in unique.to_pylist()]
    at = pc.index_in(reasons, value_set=unique)
    return part.append_column("gap", pc.take(pa.array([g for g, _ in made], pa.string()), at)) \
        .append_column("source", pc.take(pa.array([s for _, s in made], pa.string()), at))


def gap_detail(part: pa.Table, who: pa.Table) -> pa.Table:
    """GAP_DETAIL of missing-data results (`with_gaps`; `who`: their portrait rows)."""
    return pa.table({
        "department": part.column("department"), "uscc": part.column("uscc"), "name": registry_names(who),
        "policy_id": part.column("policy_id"), "policy_name": part.column("policy_name"),
        "period": part.column("period"), "gap": part.column("gap"), "source": part.column("source"),
    }, schema=GAP_DETAIL)


# ---------------------------------------------------------------- staged, then sorted out of core

ORDER = "_order"      # a staged row's place in the night's order (policy, then code): the last sort key
SORT_MEMORY = "1GB"   # DuckDB's limit when it sorts the staged lists; beyond it, it spills to disk


class Staged:
    """The near-miss and data-gap lists of the night, made policy by policy and staged to
    Parquet (with each row's place, `ORDER`) in `scratch`; DuckDB then reads them back per
    department, sorted with spilling to disk: a province's night has tens of millions of
    such rows, more than memory holds as Arrow."""

    def __init__(self, scratch: Path):
        self.near = scratch / "near_miss.parquet"
        self.gaps = scratch / "gaps.parquet"
        self._writers = {path: pq.ParquetWriter(path, schema.append(pa.field(ORDER, pa.int64())))
                         for path, schema in ((self.near, NEAR_MISS_LIST), (self.gaps, GAP_DETAIL))}
        self._rows = {self.near: 0, self.gaps: 0}
        import duckdb

        self.con = duckdb.connect(config={"memory_limit": SORT_MEMORY, "temp_directory": str(scratch / "spill")})

    def add(self, path: Path, table: pa.Table) -> None:
        if table.num_rows:
            start = self._rows[path]
            self._writers[path].write_table(table.append_column(
                ORDER, pa.array(range(start, start + table.num_rows), pa.int64())))
            self._rows[path] += table.num_rows

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()

    def counts(self, path: Path) -> list[tuple[str, int]]:
        """(department, rows), departments in order."""
        return self.con.sql("SELECT department, count(*) FROM read_parquet($f) GROUP BY ALL ORDER BY ALL",
                            params={"f": str(path)}).fetchall()

    def rows(self, path: Path, department: str, order: str | None = None) -> pa.RecordBatchReader:
        """The department's staged rows, sorted by `order` (SQL), else in the order staged
        (DuckDB keeps the insertion order of a scan)."""
        columns = ", ".join(f'"{c}"' for c in (NEAR_MISS_LIST if path == self.near else GAP_DETAIL).names)
        sort = f" ORDER BY {order}" if order else ""
        return self.con.sql(f"SELECT {columns} FROM read_parquet($f) WHERE department = $d{sort}",
                            params={"f": str(path), "d": department}).to_arrow_reader(CSV_BATCH_ROWS)

    def gap_summary(self) -> pa.Table:
        """Per department and gap: results blocked, enterprises, policies; most results first
        (ties in the order the night first met them)."""
        return self.con.sql(
            "SELECT department, gap, source, count(*) AS results, count(DISTINCT uscc) AS enterprises, "
            "string_agg(DISTINCT policy_id, '、' ORDER BY policy_id) AS policies FROM read_parquet($f) "
            f"GROUP BY department, gap, source ORDER BY department, results DESC, gap, min({ORDER})",
            params={"f": str(self.gaps)}).to_arrow_table()


NEAR_MISS_ORDER = f"amount DESC NULLS LAST, policy_id, uscc, {ORDER}"


def stage_lists(results: Results, portrait: pa.Table, policies: dict[str, Policy], staged: Staged) -> None:
    """Every policy's actionable near misses and missing-data results, staged. The portrait is
    looked up for LOOKUP_ROWS results at a time (a lookup hashes the whole portrait)."""
    near: list[tuple[str, pa.Table]] = []   # (policy id, its near misses)
    gap: list[pa.Table] = []

    def flush():
        if near or gap:   # one lookup for both lists; each policy's near misses are a slice of it
            codes = [c for t in [t for _, t in near] + gap for c in t.column("uscc").chunks]
            who = _lookup(portrait, pa.chunked_array(codes, pa.string()))
            at, kept = 0, []
            for pid, part in near:
                kept.append(actionable(part, who.slice(at, part.num_rows), policies.get(pid)))
                at += part.num_rows
            if kept:
                staged.add(staged.near, pa.concat_tables(kept))
            if gap:
                staged.add(staged.gaps, gap_detail(pa.concat_tables(gap), who.slice(at)))
        near.clear()
        gap.clear()

    for pid in results.policy_ids():
        rows = results.policy(pid, LIST_COLUMNS)
        if "failed_guard" not in rows.column_names:
            rows = rows.append_column("failed_guard", pa.nulls(rows.num_rows, pa.string()))
        near.append((pid, _outcome(results, pid, rows, "near_miss")))
        gap.append(with_gaps(_outcome(results, pid, rows, "missing_data"), policies.get(pid)))
        if sum(t.num_rows for _, t in near) + sum(t.num_rows for t in gap) >= LOOKUP_ROWS:
            flush()
    flush()
    staged.close()


def _head(reader: pa.RecordBatchReader, rows: int) -> tuple[pa.Table, Iterator[pa.Table]]:
    """The first `rows` rows of a stream, and the rest of it."""
    head, taken = [], 0
    for batch in reader:
        if taken + batch.num_rows > rows:
            cut = rows - taken
            head.append(batch.slice(0, cut))
            rest = itertools.chain([pa.Table.from_batches([batch.slice(cut)])],
                                   (pa.Table.from_batches([b]) for b in reader))
            return pa.Table.from_batches(head, reader.schema), rest
        head.append(batch)
        taken += batch.num_rows
    return pa.Table.from_batches(head, reader.schema), iter(())


def _numbered_from(tables: Iterable[pa.Table], first: int) -> Iterator[pa.Table]:
    seq = first
    for table in tables:
        if table.num_rows:
            yield table.append_column("seq", pa.array(range(seq, seq + table.num_rows), pa.int64()))
            seq += table.num_rows


# ---------------------------------------------------------------- 应享未享提醒

UNANSWERED_SCHEMA = pa.schema([("department", pa.string()), ("uscc", pa.string()), ("policy_id", pa.string()),
                               ("policy_name", pa.string()), ("period", pa.string()),
                               ("amount", pa.decimal128(20, 2)), ("notified_as_of", pa.date32()),
                               ("rank", pa.int64())])
NOTIFIED_ACTION = "已短信告知，企业尚未确认申领，请提醒企业在截止日期前确认"
MANUAL_ACTION = "人工核定类政策：预筛符合，请告知企业申报"


@dataclass
class Unanswered:
    """The ledger's unanswered (`notified`) results as this list reads them, without holding
    them: `groups` counts them per (department, policy_id, notified_as_of); `read(ranks)`
    gives the rows (UNANSWERED_SCHEMA) in the order of the ranked groups
    ((department, policy_id, notified_as_of, rank)), then by code and period, in batches
    (`ledger.stream_unanswered`)."""

    groups: list[tuple[str, str, date | None, int]]
    read: Callable[[list[tuple[str, str, date | None, int]]], Iterable[pa.Table]]

    @classmethod
    def of(cls, rows: list[dict]) -> "Unanswered":
        """From ledger rows in memory (a test's, a small caller's)."""
        groups = Counter((r["department"], r["policy_id"], r.get("notified_as_of")) for r in rows)

        def read(ranks):
            rank = {tuple(g[:3]): g[3] for g in ranks}
            table = pa.Table.from_pylist(
                [{**{k: r.get(k) for k in UNANSWERED_SCHEMA.names[:-1]},
                  "rank": rank[(r["department"], r["policy_id"], r.get("notified_as_of"))]} for r in rows],
                schema=UNANSWERED_SCHEMA)
            yield table.take(pc.sort_indices(table, [("rank", "ascending"), ("uscc", "ascending"),
                                                     ("period", "ascending")]))

        return cls([(*k, n) for k, n in groups.items()], read)


@dataclass
class Ranked:
    ranks: list[tuple[str, str, date | None, int]]   # (department, policy_id, notified_as_of, rank)
    deadline: pa.Array        # each rank's 确认截止日期 (text)
    days_left: pa.Array       # each rank's working days left
    upto: dict[str, int]      # department -> one past its last rank
    rows: dict[str, int]      # department -> its unanswered rows


def ranked(groups: list[tuple[str, str, date | None, int]], policies: dict[str, Policy], as_of: date,
           calendar: WorkCalendar) -> Ranked:
    """The list's order (department, deadline, policy) as ranks of the groups: soonest deadline
    first within a department. Groups of one policy whose nights give the same deadline share a rank."""
    days = deadlines.days_of(policies)
    dated = []
    for department, policy_id, told, n in groups:
        deadline = deadlines.confirm_by(calendar, told or as_of, days.get(policy_id, deadlines.Days()))
        dated.append(((department, deadline, policy_id), told, n))
    dated.sort(key=lambda g: g[0])
    order = list(dict.fromkeys(key for key, _, _ in dated))
    at = {key: i for i, key in enumerate(order)}
    upto: dict[str, int] = {}
    rows: dict[str, int] = {}
    for key, _, n in dated:
        upto[key[0]] = at[key] + 1
        rows[key[0]] = rows.get(key[0], 0) + n
    return Ranked(ranks=[(key[0], key[2], told, at[key]) for key, told, _ in dated],
                  deadline=pa.array([cn_date(d) for _, d, _ in order], pa.string()),
                  days_left=pa.array([calendar.working_days_between(as_of, d) for _, d, _ in order], pa.int64()),
                  upto=upto, rows=rows)


def _upto(tables: Iterator[pa.Table], left: list, end: int) -> Iterator[pa.Table]:
    """The rows of rank < end from a rank-ordered stream; the rest of a batch waits in `left`."""
    while True:
        table = left.pop() if left else next(tables, None)
        if table is None:
            return
        n = pc.sum(pc.less(table.column("rank"), end)).as_py() or 0   # ordered: a prefix
        if n < table.num_rows:
            left.append(table.slice(n))
            if n:
                yield table.slice(0, n)
            return
        yield table


def unclaimed_notified(table: pa.Table, plan: Ranked, portrait: pa.Table, as_of: date) -> pa.Table:
    """UNCLAIMED_COLUMNS' keys (but seq) of a batch of unanswered rows."""
    who = _lookup(portrait, table.column("uscc"))
    rank = table.column("rank")
    return pa.table({
        "department": table.column("department"), "uscc": table.column("uscc"), "name": registry_names(who),
        "phone": pc.fill_null(who.column("phone"), ""), "policy_id": table.column("policy_id"),
        "policy_name": table.column("policy_name"), "period": table.column("period"),
        "amount": table.column("amount"),
        "notified_on": per_value(table.column("notified_as_of"), lambda d: cn_date(d or as_of)),
        "deadline": plan.deadline.take(rank), "days_left": plan.days_left.take(rank),
        "action": pa.array([NOTIFIED_ACTION] * table.num_rows, pa.string()),
    })


def unclaimed_manual(manual: pa.Table, portrait: pa.Table) -> pa.Table:
    """UNCLAIMED_COLUMNS' keys (but seq) of manual policies' pre-screened enterprises."""
    who = _lookup(portrait, manual.column("uscc"))
    n = manual.num_rows
    return pa.table({
        "department": manual.column("department"), "uscc": manual.column("uscc"), "name": registry_names(who),
        "phone": pc.fill_null(who.column("phone"), ""), "policy_id": manual.column("policy_id"),
        "policy_name": manual.column("policy_name"), "period": manual.column("period"),
        "amount": pa.nulls(n, pa.decimal128(20, 2)), "notified_on": pa.nulls(n, pa.string()),
        "deadline": pa.nulls(n, pa.string()), "days_left": pa.nulls(n, pa.int64()),
        "action": pa.array([MANUAL_ACTION] * n, pa.string()),
    })


def _write_unclaimed(path: Path, tables: Iterable[pa.Table], rows: int, **kw) -> Path:
    """`write_list` of the numbered rows: a workbook up to XLSX_MAX_ROWS, else the CSV written batch by batch."""
    if rows <= XLSX_MAX_ROWS:
        return write_workbook(path, "惠企政策应享未享提醒清单", UNCLAIMED_COLUMNS,
                              [r for t in _numbered_from(tables, 1) for r in t.to_pylist()], **kw)
    return write_csv_tables(path.with_suffix(".csv"), UNCLAIMED_COLUMNS, _numbered_from(tables, 1))


# ---------------------------------------------------------------- writing

@dataclass
class Written:
    paths: list[Path]
    summary: dict     # department -> rows per list and its top data gaps

    @property
    def unclaimed_rows(self) -> int:
        return sum(d[UNCLAIMED] for d in self.summary.values())


def _numbered(table: pa.Table) -> pa.Table:
    return table.append_column("seq", pa.array(range(1, table.num_rows + 1), pa.int64()))


def _tables(reader: pa.RecordBatchReader) -> Iterator[pa.Table]:
    return (pa.Table.from_batches([batch]) for batch in reader)


def write_lists(folder: Path, as_of: date, staged: Staged, unit: str) -> tuple[list[Path], dict[str, dict]]:
    """Each department's 差一项清单 (a workbook of its first NEAR_MISS_XLSX_ROWS rows, the rest
    in a CSV beside it) and 数据缺口清单 (a workbook of the gaps, the enterprises in a CSV),
    from the staged lists; the files, and per department its figures."""
    paths: list[Path] = []
    counts: dict[str, dict] = {}
    for dept, total in staged.counts(staged.near):
        stem = safe_name(dept)
        head, rest = _head(staged.rows(staged.near, dept, NEAR_MISS_ORDER), NEAR_MISS_XLSX_ROWS)
        note = f"　共 {total} 条，本表列前 {NEAR_MISS_XLSX_ROWS} 条，其余见同名 CSV" if total > NEAR_MISS_XLSX_ROWS else ""
        paths.append(write_workbook(
            folder / f"{stem}_{NEAR_MISS}.xlsx", "惠企政策差一项条件企业清单（按预计金额排序）", NEAR_MISS_COLUMNS,
            _numbered(head).to_pylist(), unit=unit, made_on=as_of,
            subtitle=f"执行部门：{dept}{note}", sheet=NEAR_MISS, total=False))
        if total > NEAR_MISS_XLSX_ROWS:
            paths.append(write_csv_tables(folder / f"{stem}_{NEAR_MISS}_其余.csv", NEAR_MISS_COLUMNS,
                                          _numbered_from(rest, NEAR_MISS_XLSX_ROWS + 1)))
        counts.setdefault(dept, {})[NEAR_MISS] = total
    summary = staged.gap_summary()
    for dept, _ in staged.counts(staged.gaps):
        stem = safe_name(dept)
        dept_gaps = _numbered(summary.filter(pc.equal(summary.column("department"), dept)))
        paths.append(write_workbook(
            folder / f"{stem}_{DATA_GAPS}.xlsx", "数据共享需求清单（数据缺口）", GAP_COLUMNS, dept_gaps.to_pylist(),
            unit=unit, made_on=as_of, subtitle=f"执行部门：{dept}　企业明细见同名 CSV", sheet=DATA_GAPS, total=False))
        paths.append(write_csv_tables(folder / f"{stem}_{DATA_GAPS}_企业明细.csv", GAP_DETAIL_COLUMNS,
                                      _tables(staged.rows(staged.gaps, dept))))
        counts.setdefault(dept, {}).update({
            DATA_GAPS: int(pc.sum(dept_gaps.column("results")).as_py() or 0),
            "top_gaps": [[g["gap"], g["source"], g["results"]] for g in dept_gaps.slice(0, TOP_GAPS).to_pylist()]})
    return paths, counts


@dataclass
class NearMissAndGaps:
    """The 差一项清单 and 数据缺口清单 written: their files, and per department its figures."""
    paths: list[Path]
    counts: dict[str, dict]


def _benefit_bases(policies: list[Policy]) -> set[str]:
    return {p.benefit.base for p in policies if p.benefit is not None and p.benefit.base}


def _write_near_miss_and_gaps(folder: Path, as_of: date, results: Results, portrait: pa.Table,
                              by_id: dict[str, Policy], unit: str, scratch: Path | None) -> NearMissAndGaps:
    if scratch is not None:
        scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lists-", dir=scratch) as tmp:
        staged = Staged(Path(tmp))
        try:
            stage_lists(results, portrait, by_id, staged)
            return NearMissAndGaps(*write_lists(folder, as_of, staged, unit))
        finally:
            staged.con.close()


def write_near_miss_and_gaps(folder: Path, as_of: date, matches: pa.Table | Path, portrait_path: Path | None,
                             policies: list[Policy], unit: str, scratch: Path | None = None) -> NearMissAndGaps:
    """Each department's 差一项清单 and 数据缺口清单, written into `folder`. They read only the
    night's results, the portrait and the policies, never the ledger."""
    portrait = read_portrait(portrait_path, _benefit_bases(policies))
    return _write_near_miss_and_gaps(folder, as_of, Results(matches), portrait, {p.id: p for p in policies}, unit,
                                     scratch)


class ListsJob:
    """`write_near_miss_and_gaps` in a process of its own (`python -m pipelines.outputs.reminders`).

    At province scale the two lists are minutes of work (tens of millions of rows staged,
    sorted and written) that need nothing of the ledger, while the ledger stage's own work is
    one process's SQL and SMS outbox; in a second process the lists take the machine's second
    core instead of adding their minutes to the stage. The child reads the policies from
    `policies_dir`, as the stage does. `stop()` ends it early (the stage failed) and removes
    its half-written files and its scratch folder."""

    def __init__(self, folder: Path, as_of: date, matches: Path, portrait_path: Path | None,
                 policies_dir: Path, unit: str, scratch: Path | None):
        job = {"folder": str(folder), "as_of": as_of.isoformat(), "matches": str(matches),
               "portrait": str(portrait_path) if portrait_path else None, "policies": str(policies_dir),
               "unit": unit, "scratch": str(scratch) if scratch else None}
        self.folder, self.scratch = folder, scratch
        self._scratch_before = set(scratch.glob("lists-*")) if scratch and scratch.is_dir() else set()
        self.process = subprocess.Popen([sys.executable, "-m", __name__, json.dumps(job, ensure_ascii=False)],
                                        stdout=subprocess.PIPE)

    def result(self) -> NearMissAndGaps:
        out, _ = self.process.communicate()
        if self.process.returncode:
            raise RuntimeError(f"writing the near-miss and data-gap lists failed in process {self.process.pid} "
                               f"(exit code {self.process.returncode}); its error is in the log above")
        done = json.loads(out.splitlines()[-1])   # the last line: nothing a library printed before it
        return NearMissAndGaps([Path(p) for p in done["paths"]], done["counts"])

    def stop(self) -> None:
        """End the child if it is still at work, then remove what it left: the files it was
        still writing in `folder` and its folder in `scratch` (a child started without a
        scratch folder leaves its staging in the system's temporary folder). The child exits
        at once on SIGTERM, without unwinding: a SystemExit raised in the middle of DuckDB's or
        Arrow's work could abort the process (seen under load as exit code -6) or stop its own
        clean-up halfway. So the clean-up is done here, also for a child that had to be killed."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()
        if self.scratch is not None and self.scratch.is_dir():
            for left in set(self.scratch.glob("lists-*")) - self._scratch_before:
                shutil.rmtree(left, ignore_errors=True)
        if self.folder.is_dir():
            for path in self.folder.rglob("*"):
                if is_temporary(path):
                    path.unlink(missing_ok=True)


def _lists_job(argument: str) -> None:
    signal.signal(signal.SIGTERM, lambda *_: os._exit(128 + signal.SIGTERM))   # ListsJob.stop cleans up
    job = json.loads(argument)
    written = write_near_miss_and_gaps(
        Path(job["folder"]), date.fromisoformat(job["as_of"]), Path(job["matches"]),
        Path(job["portrait"]) if job["portrait"] else None, load_dir(Path(job["policies"]))[0], job["unit"],
        Path(job["scratch"]) if job["scratch"] else None)
    print(json.dumps({"paths": [str(p) for p in written.paths], "counts": written.counts}, ensure_ascii=False))


def write(folder: Path, as_of: date, matches: pa.Table | Path, portrait_path: Path | None,
          notified: Unanswered | list[dict], policies: list[Policy], unit: str, calendar: WorkCalendar | None = None,
          applied: frozenset[tuple[str, str, str]] = frozenset(), scratch: Path | None = None,
          near_miss_and_gaps: NearMissAndGaps | Callable[[], NearMissAndGaps] | None = None) -> Written:
    """Write every department's lists into `folder` and SUMMARY beside them. `notified`: the
    ledger's unanswered results (`Unanswered`, or its rows); `applied`: the (policy id, period,
    uscc) of manual policies' online applications, not to be reminded again; `scratch`: where
    the near-miss and data-gap lists are staged and sorted (the system's temporary folder by
    default); `near_miss_and_gaps`: those two lists when they are written elsewhere, or what
    waits for them (`ListsJob.result`: asked for once the 应享未享 lists are written, so they
    are written while the job works), else they are written here."""
    if not isinstance(notified, Unanswered):
        notified = Unanswered.of(list(notified))
    by_id = {p.id: p for p in policies}
    portrait = read_portrait(portrait_path, _benefit_bases(policies))
    results = Results(matches)
    manual = results.where(["department", "policy_id", "policy_name", "period", "uscc"],
                           kind="manual", outcome="eligible")
    if applied:
        keys = zip(*(manual.column(c).to_pylist() for c in ("policy_id", "period", "uscc")))
        manual = manual.filter(pa.array([k not in applied for k in keys], pa.bool_()))
    plan = ranked(notified.groups, by_id, as_of, calendar or WorkCalendar())
    manual_rows = unclaimed_manual(manual, portrait)
    manual_depts = manual_rows.column("department")
    stream = iter(notified.read(plan.ranks) if plan.ranks else ())
    left: list[pa.Table] = []
    unclaimed: dict[str, int] = {}
    unclaimed_paths = []
    for dept in sorted(set(plan.rows) | set(manual_depts.to_pylist())):   # in the stream's order (ranks are
        stem = safe_name(dept)                                              # by department first)
        told = (unclaimed_notified(t, plan, portrait, as_of)
                for t in regrouped(_upto(stream, left, plan.upto.get(dept, 0)), LOOKUP_ROWS))
        extra = manual_rows.filter(pc.equal(manual_depts, dept))
        unclaimed[dept] = plan.rows.get(dept, 0) + extra.num_rows
        if unclaimed[dept]:
            unclaimed_paths.append(_write_unclaimed(
                folder / f"{stem}_{UNCLAIMED}.xlsx", itertools.chain(told, [extra]), unclaimed[dept],
                unit=unit, made_on=as_of, subtitle=f"执行部门：{dept}", sheet="应享未享提醒", total=False))
    if near_miss_and_gaps is None:
        near_miss_and_gaps = _write_near_miss_and_gaps(folder, as_of, results, portrait, by_id, unit, scratch)
    elif callable(near_miss_and_gaps):
        near_miss_and_gaps = near_miss_and_gaps()
    counts = near_miss_and_gaps.counts
    summary = {}
    for dept in sorted(set(unclaimed) | set(counts)):
        figures = counts.get(dept, {})
        summary[dept] = {UNCLAIMED: unclaimed.get(dept, 0), NEAR_MISS: figures.get(NEAR_MISS, 0),
                         DATA_GAPS: figures.get(DATA_GAPS, 0), "top_gaps": figures.get("top_gaps", [])}
    path = folder / SUMMARY
    atomic_write_bytes(path, json.dumps(summary, ensure_ascii=False, indent=2).encode("utf-8"))
    return Written(list(near_miss_and_gaps.paths) + unclaimed_paths + [path], summary)


if __name__ == "__main__":
    _lists_job(sys.argv[1])
