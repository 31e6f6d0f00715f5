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

Built column-wise from the night's results (at province scale near misses and
missing-data results are millions of rows); the text of why is the engine's
`reason` column (pipelines/evidence.py), read from the evidence only for a
result written without one.
"""
from __future__ import annotations

import itertools
import json
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
from pipelines.files import atomic_write_bytes
from pipelines.outputs.review import safe_name
from pipelines.outputs.workbook import (XLSX_MAX_ROWS, Col, cn_date, csv_table_bytes, per_value, write_csv_tables,
                                        write_workbook)
from pipelines.policies import Policy
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

def _columns(source: pa.Table | Path, names: list[str], where: dict[str, str] | None = None) -> pa.Table:
    """The named columns (those present) of the rows whose columns equal `where`'s values: read
    from a matches.parquet with the filter pushed into the read (a province's night holds tens
    of millions of results; a list wants a few of its outcomes)."""
    if isinstance(source, pa.Table):
        table = source
        for column, value in (where or {}).items():
            table = table.filter(pc.equal(table.column(column), value))
        return table.select([n for n in names if n in table.column_names])
    present = set(pq.read_schema(source).names)
    filters = [(column, "==", value) for column, value in (where or {}).items()] or None
    return pq.read_table(source, columns=[n for n in names if n in present], filters=filters)


PORTRAIT_COLUMNS = ("uscc", "name", "phone", "registered", "active", "dishonest", "division_code")


def read_portrait(path: Path | None, extra: set[str] = frozenset()) -> pa.Table:
    """The portrait's columns the lists need (those absent read as unknown)."""
    wanted = list(dict.fromkeys(PORTRAIT_COLUMNS + tuple(sorted(extra))))
    table = _columns(path, wanted) if path is not None and Path(path).exists() else pa.table({"uscc": pa.array([], pa.string())})
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


def _with_reasons(source: pa.Table | Path, part: pa.Table, rows: pa.Array, where: dict[str, str]) -> pa.Array:
    """The engine's reason of each row of `part`; read from the evidence where a row lacks one."""
    reasons = part.column("reason") if "reason" in part.column_names else pa.nulls(part.num_rows, pa.string())
    reasons = reasons.combine_chunks() if isinstance(reasons, pa.ChunkedArray) else reasons
    unexplained = pc.indices_nonzero(pc.is_null(reasons))
    if len(unexplained):
        # Results written without the engine's reason column (by hand, or by an older version).
        few = part.take(unexplained).append_column("evidence", _evidence(source, rows.take(unexplained), where))
        made = [failing(*r) for r in zip(*(few.column(c).to_pylist()
                                          for c in ("outcome", "evidence", "failed_item", "failed_guard")))]
        mask = pc.is_in(pa.array(range(part.num_rows), pa.int64()), value_set=unexplained.cast(pa.int64()))
        reasons = pc.replace_with_mask(reasons, mask, pa.array(made, pa.string()))
    return reasons


def _evidence(source: pa.Table | Path, rows: pa.Array, where: dict[str, str]) -> pa.Array:
    """The full evidence text of the given rows (of the rows `where` selects): put together from
    the lean columns, or the `evidence` column of results written before evidence was normalised."""
    stored = _columns(source, ["evidence", "evidence_version", "evidence_actual", "evidence_result"], where)
    if "evidence" in stored.column_names:
        return stored.column("evidence").take(rows)
    templates = templates_of(source.schema if isinstance(source, pa.Table) else pq.read_schema(source))
    return full_evidence(stored.take(rows), templates)


NEAR_MISS_RESULTS, MISSING_DATA_RESULTS = {"outcome": "near_miss"}, {"outcome": "missing_data"}


def _results(source: pa.Table | Path, where: dict[str, str]) -> tuple[pa.Table, pa.Array]:
    """The results whose columns equal `where`'s values (without the evidence), with their
    reason, and their positions among those rows (for the evidence fallback)."""
    needed = ["department", "policy_id", "period", "uscc", "name", "policy_name", "outcome", "kind",
              "failed_item", "failed_guard", "reason"]
    part = _columns(source, needed, where)
    rows = pa.array(range(part.num_rows), pa.int64())
    if "failed_guard" not in part.column_names:
        part = part.append_column("failed_guard", pa.nulls(part.num_rows, pa.string()))
    return part, rows


def _policy_ids(source: pa.Table | Path) -> list[str]:
    """The policies in the results, in order: from a matches.parquet's row-group statistics
    (`match.policy_row_groups`), without reading a row."""
    if isinstance(source, pa.Table):
        return sorted(pc.unique(source.column("policy_id")).drop_null().to_pylist())
    groups = match.policy_row_groups(pq.ParquetFile(source))
    return sorted(groups) if groups is not None else _policy_ids(pq.read_table(source, columns=["policy_id"]))


def _each_policy(source: pa.Table | Path, where: dict[str, str], make) -> pa.Table | None:
    """`make(policy_id, results, positions)` for each policy's results that `where` selects, one
    policy at a time (a province's night has tens of millions); the pieces concatenated."""
    pieces = []
    for pid in _policy_ids(source):
        one = {**where, "policy_id": pid}
        part, rows = _results(source, one)
        if part.num_rows:
            pieces.append(make(pid, part, rows, one))
    return pa.concat_tables(pieces) if pieces else None


# ---------------------------------------------------------------- 差一项清单

def district_items(policy: Policy) -> set[int]:
    """The top-level items that test the enterprise's division: failing one of them is not actionable."""
    return {top_item(leaf.path) for leaf in policy.leaves() if leaf.field == "division_code"}


def would_be_amounts(part: pa.Table, portrait_rows: pa.Table, policies: dict[str, Policy]) -> pa.Array:
    """What each near miss would be paid if it qualified (null when unknown: a manual or name-list policy)."""
    amount = pa.nulls(part.num_rows, engine.AMOUNT)
    ids = part.column("policy_id").combine_chunks()
    for pid in pc.unique(ids).to_pylist():
        policy = policies.get(pid)
        if policy is None or policy.benefit is None or policy.benefit.type == "from_list":
            continue
        mask = pc.equal(ids, pid)
        got, _ = engine.raw_amounts(engine.Columns(portrait_rows.filter(mask)), policy, None)
        amount = pc.replace_with_mask(amount, mask, got.cast(engine.AMOUNT))
    return amount


NEAR_MISS_LIST = pa.schema([("department", pa.string()), ("uscc", pa.string()), ("name", pa.string()),
                            ("phone", pa.string()), ("policy_id", pa.string()), ("policy_name", pa.string()),
                            ("period", pa.string()), ("amount", engine.AMOUNT), ("reason", pa.string())])


def near_misses(source: pa.Table | Path, portrait: pa.Table, policies: dict[str, Policy]) -> pa.Table:
    """The actionable near misses, largest would-be benefit first (then department, policy, code).
    Made policy by policy: only the list's own columns of its actionable rows are kept."""

    def actionable(pid: str, part: pa.Table, rows: pa.Array, where: dict) -> pa.Table:
        who = _lookup(portrait, part.column("uscc"))
        keep = pc.and_(pc.and_(pc.fill_null(who.column("registered"), False),
                               pc.fill_null(who.column("active"), False)),
                       pc.and_(pc.invert(pc.fill_null(who.column("dishonest"), True)),
                               pc.fill_null(pc.equal(who.column("division_code"), contracts.WOLONG), False)))
        items = district_items(policies[pid]) if pid in policies else set()
        if items:
            on_district = pc.is_in(part.column("failed_item"), value_set=pa.array(sorted(items), pa.int64()))
            keep = pc.and_(keep, pc.invert(pc.fill_null(on_district, False)))
        keep = pc.indices_nonzero(keep)
        part, rows, who = part.take(keep), rows.take(keep), who.take(keep)
        return pa.table({
            "department": part.column("department"), "uscc": part.column("uscc"), "name": registry_names(who),
            "phone": pc.fill_null(who.column("phone"), ""), "policy_id": part.column("policy_id"),
            "policy_name": part.column("policy_name"), "period": part.column("period"),
            "amount": would_be_amounts(part, who, policies), "reason": _with_reasons(source, part, rows, where),
        }, schema=NEAR_MISS_LIST)

    out = _each_policy(source, NEAR_MISS_RESULTS, actionable)
    if out is None:
        return NEAR_MISS_LIST.empty_table()
    order = pc.sort_indices(out, sort_keys=[("amount", "descending", "at_end"), ("department", "ascending"),
                                            ("policy_id", "ascending"), ("uscc", "ascending")])
    return out.take(order)


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


def gaps(source: pa.Table | Path, policies: dict[str, Policy], portrait: pa.Table) -> pa.Table:
    """Every missing-data result with the data it lacks (`gap`) and who should supply it (`source`),
    made policy by policy."""

    def detail(pid: str, part: pa.Table, rows: pa.Array, where: dict) -> pa.Table:
        reasons = pc.fill_null(_with_reasons(source, part, rows, where), "")
        unique = pc.unique(reasons)
        made = [_gap_of(reason, policies.get(pid)) for reason in unique.to_pylist()]
        at = pc.index_in(reasons, value_set=unique)
        return pa.table({
            "department": part.column("department"), "uscc": part.column("uscc"),
            "name": registry_names(_lookup(portrait, part.column("uscc"))), "policy_id": part.column("policy_id"),
            "policy_name": part.column("policy_name"), "period": part.column("period"),
            "gap": pc.take(pa.array([g for g, _ in made], pa.string()), at),
            "source": pc.take(pa.array([s for _, s in made], pa.string()), at),
        }, schema=GAP_DETAIL)

    out = _each_policy(source, MISSING_DATA_RESULTS, detail)
    return GAP_DETAIL.empty_table() if out is None else out


def gap_summary(detail: pa.Table) -> pa.Table:
    """Per department and gap: results blocked, enterprises, policies; most results first."""
    grouped = detail.group_by(["department", "gap", "source"], use_threads=False).aggregate(
        [("uscc", "count"), ("uscc", "count_distinct"), ("policy_id", "distinct")])
    policies = pa.array(["、".join(sorted(p)) for p in grouped.column("policy_id_distinct").to_pylist()], pa.string())
    out = pa.table({"department": grouped.column("department"), "gap": grouped.column("gap"),
                    "source": grouped.column("source"), "results": grouped.column("uscc_count"),
                    "enterprises": grouped.column("uscc_count_distinct"), "policies": policies})
    return out.take(pc.sort_indices(out, sort_keys=[("department", "ascending"), ("results", "descending"),
                                                    ("gap", "ascending")]))


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
    def numbered():
        seq = 1
        for table in tables:
            if table.num_rows:
                yield table.append_column("seq", pa.array(range(seq, seq + table.num_rows), pa.int64()))
                seq += table.num_rows

    if rows <= XLSX_MAX_ROWS:
        return write_workbook(path, "惠企政策应享未享提醒清单", UNCLAIMED_COLUMNS,
                              [r for t in numbered() for r in t.to_pylist()], **kw)
    return write_csv_tables(path.with_suffix(".csv"), UNCLAIMED_COLUMNS, numbered())


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


def write(folder: Path, as_of: date, matches: pa.Table | Path, portrait_path: Path | None,
          notified: Unanswered | list[dict], policies: list[Policy], unit: str, calendar: WorkCalendar | None = None,
          applied: frozenset[tuple[str, str, str]] = frozenset()) -> Written:
    """Write every department's lists into `folder` and SUMMARY beside them. `notified`: the
    ledger's unanswered results (`Unanswered`, or its rows); `applied`: the (policy id, period,
    uscc) of manual policies' online applications, not to be reminded again."""
    if not isinstance(notified, Unanswered):
        notified = Unanswered.of(list(notified))
    by_id = {p.id: p for p in policies}
    bases = {p.benefit.base for p in policies if p.benefit is not None and p.benefit.base}
    portrait = read_portrait(portrait_path, bases)
    manual, _ = _results(matches, {"kind": "manual", "outcome": "eligible"})
    if applied:
        keys = zip(*(manual.column(c).to_pylist() for c in ("policy_id", "period", "uscc")))
        manual = manual.filter(pa.array([k not in applied for k in keys], pa.bool_()))
    plan = ranked(notified.groups, by_id, as_of, calendar or WorkCalendar())
    manual_rows = unclaimed_manual(manual, portrait)
    manual_depts = manual_rows.column("department")
    paths: list[Path] = []
    counts: dict[str, dict] = {}   # department -> its figures, as each list is written
    # One list at a time, each let go before the next is made (a province's near misses and
    # data gaps are tens of millions of rows each).
    near = near_misses(matches, portrait, by_id)
    for dept in sorted(set(near.column("department").to_pylist())):
        stem = safe_name(dept)
        dept_near = _numbered(near.filter(pc.equal(near.column("department"), dept)))
        rest = dept_near.num_rows - NEAR_MISS_XLSX_ROWS
        note = f"　共 {dept_near.num_rows} 条，本表列前 {NEAR_MISS_XLSX_ROWS} 条，其余见同名 CSV" if rest > 0 else ""
        paths.append(write_workbook(
            folder / f"{stem}_{NEAR_MISS}.xlsx", "惠企政策差一项条件企业清单（按预计金额排序）", NEAR_MISS_COLUMNS,
            dept_near.slice(0, NEAR_MISS_XLSX_ROWS).to_pylist(), unit=unit, made_on=as_of,
            subtitle=f"执行部门：{dept}{note}", sheet=NEAR_MISS, total=False))
        if rest > 0:
            path = folder / f"{stem}_{NEAR_MISS}_其余.csv"
            atomic_write_bytes(path, csv_table_bytes(NEAR_MISS_COLUMNS, dept_near.slice(NEAR_MISS_XLSX_ROWS)))
            paths.append(path)
        counts.setdefault(dept, {})[NEAR_MISS] = dept_near.num_rows
    near = dept_near = None
    detail = gaps(matches, by_id, portrait)
    summary_table = gap_summary(detail)
    for dept in sorted(set(detail.column("department").to_pylist())):
        stem = safe_name(dept)
        dept_gaps = _numbered(summary_table.filter(pc.equal(summary_table.column("department"), dept)))
        if dept_gaps.num_rows:
            paths.append(write_workbook(
                folder / f"{stem}_{DATA_GAPS}.xlsx", "数据共享需求清单（数据缺口）", GAP_COLUMNS, dept_gaps.to_pylist(),
                unit=unit, made_on=as_of, subtitle=f"执行部门：{dept}　企业明细见同名 CSV", sheet=DATA_GAPS,
                total=False))
            rows = detail.filter(pc.equal(detail.column("department"), dept))
            path = folder / f"{stem}_{DATA_GAPS}_企业明细.csv"
            atomic_write_bytes(path, csv_table_bytes(GAP_DETAIL_COLUMNS, rows))
            paths.append(path)
        counts.setdefault(dept, {}).update({
            DATA_GAPS: int(pc.sum(dept_gaps.column("results")).as_py() or 0),
            "top_gaps": [[g["gap"], g["source"], g["results"]] for g in dept_gaps.slice(0, TOP_GAPS).to_pylist()]})
    detail = summary_table = rows = None
    departments = sorted(set(plan.rows) | set(manual_depts.to_pylist()) | set(counts))
    stream = iter(notified.read(plan.ranks) if plan.ranks else ())
    left: list[pa.Table] = []
    summary = {}
    for dept in departments:   # in the stream's order (ranks are by department first)
        stem = safe_name(dept)
        told = (unclaimed_notified(t, plan, portrait, as_of) for t in _upto(stream, left, plan.upto.get(dept, 0)))
        extra = manual_rows.filter(pc.equal(manual_depts, dept))
        mine = plan.rows.get(dept, 0) + extra.num_rows
        if mine:
            paths.append(_write_unclaimed(
                folder / f"{stem}_{UNCLAIMED}.xlsx", itertools.chain(told, [extra]), mine,
                unit=unit, made_on=as_of, subtitle=f"执行部门：{dept}", sheet="应享未享提醒", total=False))
        figures = counts.get(dept, {})
        summary[dept] = {UNCLAIMED: mine, NEAR_MISS: figures.get(NEAR_MISS, 0), DATA_GAPS: figures.get(DATA_GAPS, 0),
                         "top_gaps": figures.get("top_gaps", [])}
    path = folder / SUMMARY
    atomic_write_bytes(path, json.dumps(summary, ensure_ascii=False, indent=2).encode("utf-8"))
    return Written(paths + [path], summary)
