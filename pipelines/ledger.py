"""The payout ledger: one row per (policy id, period, enterprise) ever eligible,
moved only along the transitions of lifecycle.md.

    eligible -> notified -> confirmed -> approved -> scheduled -> paid -> recovering -> recovered
                notified -> declined | expired;  confirmed -> rejected
    (an online application of a manual policy) -> confirmed
                approved -> objected -> approved (dismissed) | rejected (upheld)
                approved -> suspended -> approved (re-check passes, or overridden) | rejected

Every function takes an open connection and works inside the caller's
transaction; a refusal is returned as a Chinese reason and writes nothing.
Status moves are compare-and-set (`UPDATE ... WHERE status = :expected`) so two
processes cannot both move the same row, and the database's triggers
(sql/ledger_guards_*.sql) refuse any move not in `allowed_transitions`.

Decisions (the spec is silent):
- A `manual` policy's pre-screened results never enter the ledger (they go to the
  reminder list: there is no amount); its accepted online applications do, at
  `confirmed` (`apply_online`).
- A key that is already in the ledger is never re-inserted: a later run only
  refreshes last_run/last_as_of/last_match_amount and the over-budget flag,
  and, while the row is still `eligible` (nobody has been told an amount),
  its amount and evidence; the amount change is logged as an
  eligible -> eligible entry in ledger_transitions. Once notified, the amount
  is fixed (the database refuses a change) and only last_match_amount moves.
- A declined or rejected key stays final for its period.
- The nightly run's sync inserts a result told the night it is found at `notified`
  (`sync_from_matches(notify=True)`), with both its moves logged, instead of inserting
  it at `eligible` and moving it: the ledger and each row's log end the same, without
  rewriting a province's millions of new rows.
- The publicity window of a policy with publicity_days = N starts on the
  as_of of the first nightly run that lists the approved result on the
  publicity list, and covers N working days including that day when it is one
  (pipelines/workdays.py); the result is
  payable from the run whose as_of is after the window's last day, provided it
  is `approved` then (an open objection keeps it `objected`). A dismissed
  objection does not restart the window.
- An over-budget flag (from the newest run) holds the whole (policy, period)
  off the payout list until `release_budget_hold` records an operator's release.
- 再确认 (`apply_recheck`) looks only at the rows that would be put on a payout
  list that night (payable: publicity passed, not held) and at the suspended
  rows. A department's override (复核 通过 with 审核意见) records the finding it
  overrode (`recheck_override`): the same finding on a later night passes, a
  different one (say, a new credit listing) suspends the row again.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Iterable, Iterator, Mapping

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pipelines import deadlines
from pipelines import warehouse as wh
from pipelines.evidence import render
from pipelines.warehouse import ledger, ledger_transitions, payout_batches, payout_items, to_money
from pipelines.workdays import WorkCalendar

Key = tuple[str, str, str]  # (policy_id, period, uscc)

STATUS_LABELS = {
    "eligible": "符合条件",
    "notified": "已通知",
    "confirmed": "已确认申领",
    "declined": "已放弃",
    "approved": "审核通过",
    "rejected": "不予兑现",
    "objected": "公示异议处理中",
    "scheduled": "已列入拨付清单",
    "paid": "已拨付",
    "suspended": "暂缓拨付",
    "recovering": "追回中",
    "recovered": "已追回",
    "expired": "逾期未确认",
}
ALLOWED = frozenset(wh.TRANSITIONS)
# Past the point where the newest run's over-budget flag matters.
SETTLED = frozenset({"declined", "rejected", "scheduled", "paid", "recovering", "recovered"})


@dataclass(frozen=True)
class Source:
    """Where a transition came from: a run, or a returned file and its hash."""

    run_id: str | None = None
    file: str | None = None
    sha256: str | None = None


def _source(source: Source | str | None) -> Source:
    if isinstance(source, Source):
        return source
    return Source(run_id=source)


def _key_text(key: Key) -> str:
    policy_id, period, uscc = key
    return f"政策 {policy_id} 期次 {period} 企业 {uscc}"


def _insert_ignore(conn: Connection, table: sa.Table, keys: list[str]):
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table).on_conflict_do_nothing(index_elements=keys)


def _log(conn: Connection, ledger_id: int, from_status: str | None, to_status: str,
         source: Source, department: str | None, amount: Decimal | None = None,
         note: str | None = None, at: datetime | None = None, as_of: date | None = None) -> None:
    conn.execute(ledger_transitions.insert().values(
        ledger_id=ledger_id, from_status=from_status, to_status=to_status, at=at or wh.utcnow(),
        run_id=source.run_id, source_file=source.file, source_sha256=source.sha256,
        department=department, amount=amount, note=note, as_of=as_of or business_day(conn)))


def business_day(conn: Connection) -> date:
    """The business date of a move made outside a nightly run (a returned file): the day
    after the newest run's as_of, i.e. the night that first sees it. The supervision
    figures of a date then count exactly the moves that date's run could see."""
    from pipelines.inbox import local_day

    newest = wh.newest_night(conn)
    if newest is None:
        return date.fromisoformat(local_day(datetime.now(timezone.utc)))
    return newest + timedelta(days=1)


def get(conn: Connection, key: Key) -> dict | None:
    policy_id, period, uscc = key
    row = conn.execute(sa.select(ledger).where(
        ledger.c.policy_id == policy_id, ledger.c.period == period, ledger.c.uscc == uscc)).first()
    return dict(row._mapping) if row else None


def history(conn: Connection, key: Key) -> list[dict]:
    row = get(conn, key)
    if row is None:
        return []
    rows = conn.execute(sa.select(ledger_transitions)
                        .where(ledger_transitions.c.ledger_id == row["id"])
                        .order_by(ledger_transitions.c.id)).all()
    return [dict(r._mapping) for r in rows]


# ---------------------------------------------------------------- nightly sync

# The sync's source: the night's eligible results, one row each, in a temporary table of only what
# varies from row to row (loaded row by row: on SQLite that is most of the sync's time, and each
# column of text a million rows long costs seconds), and what is the same for every result of a
# policy in a table of one row per policy. The statements read them joined, as one view.
# No key on the rows: the sync joins them to the ledger by the ledger's own key, and a night's
# results are one per (policy, period, enterprise) by construction (one portrait row each).
_SYNC_ROWS = sa.Table(
    "ledger_sync_rows", sa.MetaData(),
    sa.Column("policy_id", sa.String(100)),
    sa.Column("period", sa.String(32)),
    sa.Column("uscc", sa.String(18)),
    sa.Column("amount", wh.Money),
    sa.Column("evidence_actual", sa.Text),
    sa.Column("evidence_result", sa.Text),
    sa.Column("name", sa.Text),
    sa.Column("over_budget", sa.Boolean),
    prefixes=["TEMPORARY"],
)
_SYNC_POLICIES = sa.Table(
    "ledger_sync_policies", sa.MetaData(),
    sa.Column("policy_id", sa.String(100), primary_key=True),
    sa.Column("evidence_version", sa.String(16)),
    sa.Column("policy_name", sa.Text),
    sa.Column("department", sa.Text),
    sa.Column("days", sa.Integer),          # the policy's publicity_days
    sa.Column("has_days", sa.Boolean),      # whether the policy file gave publicity_days at all
    prefixes=["TEMPORARY"],
)
PER_POLICY = ("evidence_version", "policy_name", "department")
_POLICY_VALUES = [c for c in _SYNC_POLICIES.columns if c.name != "policy_id"]
_SYNC_SOURCE = sa.Table(   # a temporary view of the two
    "ledger_sync_source", sa.MetaData(),
    *(sa.Column(c.name, c.type) for c in [*_SYNC_ROWS.columns, *_POLICY_VALUES]),
)
_SYNC_VIEW = (f"CREATE TEMPORARY VIEW {_SYNC_SOURCE.name} AS SELECT "
              + ", ".join([f"r.{c.name}" for c in _SYNC_ROWS.columns] + [f"p.{c.name}" for c in _POLICY_VALUES])
              + f" FROM {_SYNC_ROWS.name} AS r JOIN {_SYNC_POLICIES.name} AS p ON p.policy_id = r.policy_id")


# The ledger rows the sync created and has not logged yet (ids only).
_SYNC_NEW = sa.Table(
    "ledger_sync_new", sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    prefixes=["TEMPORARY"],
)


def sync_from_matches(conn: Connection, as_of: date, matches: pa.Table | Iterable[pa.Table | pa.RecordBatch],
                      run_id: str, publicity_days: Mapping[str, int | None] | None = None,
                      notify: bool = False) -> dict:
    """Bring the run's eligible results into the ledger (see the module's decisions).

    matches: the results as a table, or as a stream of tables or record batches (a
    province's first night has millions of eligible results with their evidence, which
    are then never held at once); rows not eligible, and manual policies' rows, are
    left out here. publicity_days: policy id -> days (None/0: no publicity); kept on
    rows whose window has not started. Returns counts: new, amount_changed, seen.

    notify: the new rows are told tonight (the nightly run, which hands the SMS outbox on):
    each enters at `notified`, with both its moves logged (found, then told), unless its
    policy period is held over budget (see `notify`). At a province's scale that is what
    inserting them at `eligible` and then moving them would do, without writing millions of
    rows twice (the database lets a row start at `notified` only on the night it is found).

    Set-based, for a province's night of millions of eligible results: the
    run's eligible rows are bulk-loaded into temporary tables, and a handful
    of INSERT ... SELECT / UPDATE ... FROM statements do what a loop over the
    rows would: new rows (and their first transition), the newest run's
    figures on every row it found, and amount adjustments (logged) on rows
    still `eligible`.
    """
    days = dict(publicity_days or {})
    # (Creating the temporary tables is part of the transaction on both databases: a failed
    # sync rolls them back with everything else.)
    _drop_sync_source(conn, checkfirst=True)
    _SYNC_ROWS.create(conn)
    policies: dict[str, tuple] = {}
    loaded = 0
    for part in [matches] if isinstance(matches, pa.Table) else matches:
        rows = _eligible(pa.Table.from_batches([part]) if isinstance(part, pa.RecordBatch) else part)
        if rows.num_rows:
            _add_policies(policies, rows)
            wh.bulk_insert(conn, _SYNC_ROWS.name, rows.select([c.name for c in _SYNC_ROWS.columns]))
            loaded += rows.num_rows
    if not loaded:
        _SYNC_ROWS.drop(conn)
        return {"new": 0, "amount_changed": 0, "seen": 0}
    _SYNC_POLICIES.create(conn)
    conn.execute(_SYNC_POLICIES.insert(), [
        {"policy_id": pid, **dict(zip(PER_POLICY, values)), "days": days.get(pid), "has_days": pid in days}
        for pid, values in policies.items()])
    conn.exec_driver_sql(_SYNC_VIEW)
    wh.analyze(conn, _SYNC_ROWS, _SYNC_POLICIES, ledger)
    counts = _sync(conn, as_of, run_id, _SYNC_SOURCE, notify)
    _drop_sync_source(conn)
    return counts


def _eligible(matches: pa.Table) -> pa.Table:
    """The eligible results (not of manual policies) of some results."""
    wanted = pc.fill_null(pc.and_(pc.equal(matches.column("outcome"), "eligible"),
                                  pc.not_equal(matches.column("kind"), "manual")), False)
    return matches if pc.all(wanted).as_py() else matches.filter(wanted)   # (no copy when all are)


def _add_policies(policies: dict[str, tuple], rows: pa.Table) -> None:
    """Add the per-policy values of some results (policy id -> PER_POLICY values); a policy whose
    results disagree on them is a broken results file, not something to pick one of."""
    for found in rows.group_by(["policy_id", *PER_POLICY], use_threads=False).aggregate([]).to_pylist():
        values = tuple(found[c] for c in PER_POLICY)
        if policies.setdefault(found["policy_id"], values) != values:
            raise ValueError(f"results of policy {found['policy_id']} disagree on {PER_POLICY}: "
                             f"{policies[found['policy_id']]} and {values}")


def _drop_sync_source(conn: Connection, checkfirst: bool = False) -> None:
    """Be done with the sync's view and temporary tables; checkfirst: drop any left on this
    connection (by `warehouse.drop_temporary` in memory), before a new sync."""
    drop = wh.drop_if_there if checkfirst else wh.drop_temporary
    drop(conn, _SYNC_ROWS, _SYNC_POLICIES, views=[_SYNC_SOURCE.name])


def _sync(conn: Connection, as_of: date, run_id: str, src: sa.Table, notify: bool) -> dict:
    now = wh.utcnow()
    keys = sa.and_(ledger.c.policy_id == src.c.policy_id, ledger.c.period == src.c.period,
                   ledger.c.uscc == src.c.uscc)
    seen = conn.execute(sa.select(sa.func.count()).select_from(src)).scalar_one()

    # Amount adjustments first (they compare with the ledger's amount before this run).
    t = ledger_transitions.c
    log_cols = [t.ledger_id, t.from_status, t.to_status, t.at, t.run_id, t.source_file, t.source_sha256,
                t.department, t.amount, t.note, t.as_of]
    adjust = sa.and_(keys, ledger.c.status == "eligible", ledger.c.amount != src.c.amount)
    changed = conn.execute(ledger_transitions.insert().from_select(log_cols, sa.select(
        ledger.c.id, sa.literal("eligible", sa.String), sa.literal("eligible", sa.String),
        sa.literal(now, sa.DateTime), sa.literal(run_id, sa.String), sa.null(), sa.null(), ledger.c.department,
        src.c.amount, sa.literal("金额调整：", sa.Text) + sa.cast(ledger.c.amount, sa.Text)
        + sa.literal(" → ", sa.Text) + sa.cast(src.c.amount, sa.Text), sa.literal(as_of, sa.Date))
        .where(adjust))).rowcount
    if changed:
        conn.execute(ledger.update().where(adjust).values(amount=src.c.amount, evidence=None,
                                                          evidence_version=src.c.evidence_version,
                                                          evidence_actual=src.c.evidence_actual,
                                                          evidence_result=src.c.evidence_result,
                                                          updated_at=now))

    # The newest run's figures on every row it found, written only where they differ: a rerun
    # of the date (after a crash, or an operator's) finds them all as they are, and would
    # otherwise rewrite every row of a province's ledger.
    keep_flag = ledger.c.status.in_(sorted(SETTLED))
    newest = {"last_run": sa.literal(run_id, sa.String), "last_as_of": sa.literal(as_of, sa.Date),
              "last_match_amount": src.c.amount,
              "over_budget": sa.case((keep_flag, ledger.c.over_budget), else_=src.c.over_budget),
              "publicity_days": sa.case((sa.and_(ledger.c.publicity_from.is_(None), src.c.has_days), src.c.days),
                                        else_=ledger.c.publicity_days)}
    differs = sa.or_(*(ledger.c[column].is_distinct_from(value) for column, value in newest.items()))
    conn.execute(ledger.update().where(keys, differs).values(**newest))

    # New rows, and the transition that created each.
    l = ledger.c
    before = conn.execute(sa.select(sa.func.coalesce(sa.func.max(l.id), 0))).scalar_one()
    held = held_over_budget(src)
    status = sa.case((held, "eligible"), else_="notified") if notify else sa.literal("eligible", sa.String)
    told = sa.case((held, sa.null()), else_=sa.literal(as_of, sa.Date)) if notify else sa.null()
    new = conn.execute(_insert_ignore(conn, ledger, ["policy_id", "period", "uscc"]).from_select(
        [l.policy_id, l.period, l.uscc, l.status, l.notified_as_of, l.amount, l.last_match_amount,
         l.evidence_version, l.evidence_actual, l.evidence_result, l.policy_name,
         l.department, l.name, l.over_budget, l.publicity_days, l.first_run, l.last_run, l.first_as_of,
         l.last_as_of, l.updated_at],
        sa.select(src.c.policy_id, src.c.period, src.c.uscc, status, told, src.c.amount,
                  src.c.amount, src.c.evidence_version, src.c.evidence_actual, src.c.evidence_result,
                  src.c.policy_name, src.c.department, src.c.name,
                  src.c.over_budget, src.c.days, sa.literal(run_id, sa.String), sa.literal(run_id, sa.String),
                  sa.literal(as_of, sa.Date), sa.literal(as_of, sa.Date), sa.literal(now, sa.DateTime))
        .where(sa.true()))).rowcount
    if new:
        # Which rows still lack their first transition is settled in a statement of its own, before
        # the log is written: asked inside the INSERT into ledger_transitions, PostgreSQL plans the
        # anti-join as a nested loop over the log it believes (nearly) empty, and every loop then
        # rescans each row the statement has inserted so far (quadratic: 39 s of 54 at 100k x 20).
        logged = sa.select(ledger_transitions.c.id).where(ledger_transitions.c.ledger_id == ledger.c.id).exists()
        fresh = _SYNC_NEW
        fresh.drop(conn, checkfirst=True)
        fresh.create(conn)
        # (ids past the newest one before: a range of the table, not a scan of a province's ledger)
        conn.execute(fresh.insert().from_select(["id"], sa.select(ledger.c.id).where(
            ledger.c.id > before, ledger.c.first_run == run_id, ledger.c.first_as_of == as_of, ~logged)))
        # Found, then (the rows told tonight) told: each logged in the ledger's order, as one scan
        # of it would.
        moves = [(None, "eligible", f"数据比对符合（{as_of}）", sa.true())]
        if notify:
            moves.append(("eligible", "notified", NOTIFIED_NOTE, ledger.c.status == "notified"))
        for from_status, to_status, note, which in moves:
            conn.execute(ledger_transitions.insert().from_select(log_cols, sa.select(
                ledger.c.id, sa.literal(from_status, sa.String), sa.literal(to_status, sa.String),
                sa.literal(now, sa.DateTime), sa.literal(run_id, sa.String), sa.null(), sa.null(),
                ledger.c.department, ledger.c.amount, sa.literal(note, sa.Text), sa.literal(as_of, sa.Date))
                .select_from(ledger.join(fresh, fresh.c.id == ledger.c.id)).where(which)
                .order_by(ledger.c.id)))
        wh.drop_temporary(conn, fresh)
    return {"new": new, "amount_changed": changed, "seen": seen}


def date_counts(conn: Connection, as_of: date, run_id: str) -> dict:
    """What the ledger step of `as_of` changed, read back from the ledger rather
    than counted while doing it, so that a rerun after a crash (which finds the
    work already committed) reports the same figures as a clean run:
    new = rows first seen on as_of; amount_changed = amount adjustments logged by run_id."""
    new = conn.execute(sa.select(sa.func.count()).select_from(ledger)
                       .where(ledger.c.first_as_of == as_of)).scalar_one()
    changed = conn.execute(sa.select(sa.func.count()).select_from(ledger_transitions).where(
        ledger_transitions.c.run_id == run_id, ledger_transitions.c.from_status == "eligible",
        ledger_transitions.c.to_status == "eligible")).scalar_one()
    return {"new": new, "amount_changed": changed}


# ---------------------------------------------------------------- transitions

def transition(conn: Connection, key: Key, to: str, source: Source | str | None,
               department: str | None, amount: Decimal | None = None, note: str | None = None,
               at: datetime | None = None, as_of: date | None = None, **values) -> str | None:
    """Move one ledger row to `to`. Returns None when done, else the Chinese reason
    it was refused (unknown match, wrong state, amount differing from the ledger's),
    in which case nothing changed. `values`: other ledger columns set with the move
    (the payee account with a confirmation, the re-check's finding)."""
    if to not in STATUS_LABELS:
        raise ValueError(f"unknown status {to!r}")
    row = get(conn, key)
    if row is None:
        return f"无此匹配结果：{_key_text(key)} 不在兑现台账中"
    if _done_by_file(conn, row["id"], to, _source(source)):
        return None   # this very file already made this move: a pass that died midway, replayed
    current = row["status"]
    if current == "expired" and to in ("confirmed", "declined"):
        return (f"逾期未确认：该结果已超过确认期限（{row['notified_as_of']} 短信通知），不再受理确认申领或放弃"
                f"（{_key_text(key)}）")
    if (current, to) not in ALLOWED:
        return (f"当前状态为“{STATUS_LABELS[current]}”，不能变更为“{STATUS_LABELS[to]}”"
                f"（{_key_text(key)}）")
    if amount is not None:
        try:
            given = to_money(amount)
        except (TypeError, ArithmeticError, ValueError):
            return f"金额“{amount}”无法识别"
        if given != row["amount"]:
            return f"金额 {given:,.2f} 元与台账金额 {_fmt(row['amount'])} 元不一致"
    values = {**values, "status": to, "updated_at": wh.utcnow()}
    if to == "notified":
        values["notified_as_of"] = as_of or date.today()
    done = conn.execute(ledger.update()
                        .where(ledger.c.id == row["id"], ledger.c.status == current)
                        .values(**values))
    if done.rowcount != 1:
        return "该结果的状态已被同时处理的其他文件或任务更改，本行未处理，请核对后重新报送"
    _log(conn, row["id"], current, to, _source(source), department, row["amount"], note, at, as_of)
    return None


def _done_by_file(conn: Connection, ledger_id: int, to: str, source: Source) -> bool:
    """Whether the returned file with this content hash already moved the row to `to`.

    The inbox takes a file exactly once, but a pass that dies after some of its
    rows were committed handles the whole file again; its rows that were already
    applied must then read as applied (not as refused, and not moved twice)."""
    if not source.sha256:
        return False
    return conn.execute(sa.select(ledger_transitions.c.id).where(
        ledger_transitions.c.ledger_id == ledger_id, ledger_transitions.c.to_status == to,
        ledger_transitions.c.source_sha256 == source.sha256).limit(1)).first() is not None


def move_all(conn: Connection, current: str, to: str, source: Source | str | None,
             note: str | None = None, where: sa.ColumnElement[bool] | None = None,
             as_of: date | None = None, **values) -> int:
    """The nightly run's bulk move of every row in `current` (all eligible rows to notified):
    the transition log and the status change as two set-based statements, not a statement
    per row, with the same check as `transition` that nothing else moved them meanwhile.
    Returns the number of rows moved."""
    if (current, to) not in ALLOWED:
        raise ValueError(f"cannot move rows in {current!r} to {to!r}")
    now, src = wh.utcnow(), _source(source)
    which = ledger.c.status == current if where is None else sa.and_(ledger.c.status == current, where)
    t = ledger_transitions.c
    logged = conn.execute(ledger_transitions.insert().from_select(
        [t.ledger_id, t.from_status, t.to_status, t.at, t.run_id, t.source_file, t.source_sha256,
         t.department, t.amount, t.note, t.as_of],
        sa.select(ledger.c.id, sa.literal(current, sa.String), sa.literal(to, sa.String),
                  sa.literal(now, sa.DateTime), sa.literal(src.run_id, sa.String),
                  sa.literal(src.file, sa.Text), sa.literal(src.sha256, sa.String), ledger.c.department,
                  ledger.c.amount, sa.literal(note, sa.Text),
                  sa.literal(as_of or business_day(conn), sa.Date)).where(which))).rowcount
    moved = conn.execute(ledger.update().where(which).values(status=to, updated_at=now, **values)).rowcount
    if moved != logged:
        raise RuntimeError("台账状态已被同时运行的其他任务更改，本次夜间处理已回滚，请重跑")
    return moved


def _fmt(amount: Decimal | None) -> str:
    return "（无金额）" if amount is None else f"{amount:,.2f}"


def release_budget_hold(conn: Connection, policy_id: str, period: str, operator: str,
                        note: str | None = None) -> bool:
    """Record an operator's release of an over-budget hold. True when newly released."""
    stmt = _insert_ignore(conn, wh.budget_releases, ["policy_id", "period"]).values(
        policy_id=policy_id, period=period, operator=operator, released_at=wh.utcnow(), note=note)
    return conn.execute(stmt).rowcount == 1


def released_holds(conn: Connection) -> set[tuple[str, str]]:
    rows = conn.execute(sa.select(wh.budget_releases.c.policy_id, wh.budget_releases.c.period))
    return {(r[0], r[1]) for r in rows}


def holds_released(settings, also: Iterable = ()) -> set[tuple[str, str]]:
    """(policy_id, period) whose hold is released: recorded earlier, or `also`
    (those this run's release_holds parameter releases)."""
    engine = wh.connect(settings.warehouse_url)
    with engine.connect() as conn:
        recorded = released_holds(conn)
    return recorded | {(str(p), str(q)) for p, q, *_ in also}


# ---------------------------------------------------------------- nightly moves

def _dicts(result) -> list[dict]:
    """A result's rows as dicts: zipped with its keys once (Row._mapping per row costs
    several times more, and the lists read hundreds of thousands of rows)."""
    keys = list(result.keys())
    return [dict(zip(keys, row)) for row in result]


def listed_columns() -> list[sa.Column]:
    """The ledger's columns a list reads: all but the evidence (large text), which only the
    review workbooks show."""
    return [c for c in ledger.c if not c.name.startswith("evidence")]


def rows_in(conn: Connection, *statuses: str, evidence: bool = True) -> list[dict]:
    """The rows in `statuses`, ordered for the lists; evidence=False leaves the evidence out."""
    columns = list(ledger.c) if evidence else listed_columns()
    return _dicts(conn.execute(sa.select(*columns).where(ledger.c.status.in_(statuses))
                               .order_by(ledger.c.department, ledger.c.policy_id, ledger.c.period,
                                         ledger.c.uscc)))


# A list of millions of rows is read in batches of this many straight into Arrow columns:
# never a dict per row, never the whole list at once.
STREAM_ROWS = 100_000


def _arrow_type(column: sa.Column) -> pa.DataType:
    kind = column.type
    if isinstance(kind, wh.Money):
        return pa.decimal128(20, 2)
    if isinstance(kind, sa.Boolean):
        return pa.bool_()
    if isinstance(kind, sa.Integer):
        return pa.int64()
    if isinstance(kind, sa.DateTime):
        return pa.timestamp("us")
    if isinstance(kind, sa.Date):
        return pa.date32()
    return pa.string()


def stream(conn: Connection, query: sa.Select, rows: int = STREAM_ROWS) -> Iterator[pa.Table]:
    """The query's rows as Arrow tables of up to `rows` rows (a streamed cursor where the
    driver has one: psycopg's server-side cursor; SQLite's cursor steps through the rows
    anyway), typed from the selected columns. Nothing is read before the first table is asked for."""
    columns = list(query.selected_columns)
    types = [_arrow_type(c) for c in columns]
    names = [c.key for c in columns]
    # SQLite keeps money, dates and times as text: they are read as that text and cast by
    # Arrow a column at a time, not turned into a Decimal or date object per value (that was
    # 40 % of reading a first night's SMS outbox back).
    as_text = [conn.dialect.name == "sqlite" and _kept_as_text(kind) for kind in types]
    if any(as_text):
        query = query.with_only_columns(
            *(sa.type_coerce(c, sa.String).label(c.key) if text else c for c, text in zip(columns, as_text)),
            maintain_column_froms=True)
    ahead = {"stream_results", "yield_per"} & set(conn.get_execution_options())
    if conn.dialect.name == "sqlite" and not ahead:
        # pysqlite's own tuples, not a Row object per row (a fifth of reading an outbox back);
        # what a Row would have converted (a boolean's 0/1) is converted below. (Not with
        # streaming options, here or on the connection: the result would then have fetched a
        # first row ahead, off the cursor.)
        convert = [None if text else c.type.dialect_impl(conn.dialect).result_processor(conn.dialect, None)
                   for c, text in zip(columns, as_text)]
        parts = _fetched(conn.execute(query), rows)
    else:
        # (options of this statement only: on the connection they would stay for its later statements)
        result = conn.execute(query, execution_options={"stream_results": True, "yield_per": rows})
        convert, parts = [None] * len(columns), result.partitions(rows)
    try:
        for part in parts:
            yield pa.table([_text_column(values, kind, column, conn.dialect) if text
                            else pa.array([f(v) for v in values] if f else values, kind)
                            for values, kind, column, text, f in zip(zip(*part), types, columns, as_text, convert)],
                           names=names)
    finally:   # the cursor is closed now, not when the frame is collected (it would block a DROP)
        parts.close()


def _fetched(result: sa.CursorResult, rows: int) -> Iterator[list[tuple]]:
    """The DBAPI cursor's rows of a result, `rows` at a time; the result is closed after."""
    try:
        while part := result.cursor.fetchmany(rows):
            yield part
    finally:
        result.close()


def _kept_as_text(kind: pa.DataType) -> bool:
    return pa.types.is_decimal(kind) or pa.types.is_date(kind) or pa.types.is_timestamp(kind)


def _text_column(values: tuple, kind: pa.DataType, column: sa.ColumnElement, dialect) -> pa.Array:
    """SQLite's text of a money, date or time column as the Arrow type; a value Arrow does not
    read (text written by hand, say) makes the batch's column go through the column type's
    own conversion, as an ordinary read would."""
    try:
        return pc.cast(pa.array(values, pa.string()), kind)
    except (pa.ArrowInvalid, pa.ArrowTypeError):   # (ArrowTypeError: a value that is not text)
        convert = column.type.dialect_impl(dialect).result_processor(dialect, None)
        return pa.array([convert(v) for v in values] if convert else values, kind)


def count(conn: Connection, *where: sa.ColumnElement[bool]) -> int:
    return conn.execute(sa.select(sa.func.count()).select_from(ledger).where(*where)).scalar_one()


def with_evidence(conn: Connection, rows: list[dict]) -> list[dict]:
    """The rows, each with its full evidence JSON under "evidence": kept as it was stored
    (rows stored before 0005), or put together from its policy version's template and
    its own values."""
    versions = wh.templates(conn, (r.get("evidence_version") for r in rows if not r.get("evidence")))
    for r in rows:
        if not r.get("evidence") and r.get("evidence_version") in versions:
            r["evidence"] = render(versions[r["evidence_version"]], r["evidence_actual"], r["evidence_result"])
    return rows


def held_over_budget(rows: sa.Table = ledger) -> sa.ColumnElement[bool]:
    """Rows (of the ledger, or of results) of a policy period flagged over budget whose hold no
    operator has released."""
    released = sa.select(wh.budget_releases.c.policy_id).where(
        wh.budget_releases.c.policy_id == rows.c.policy_id,
        wh.budget_releases.c.period == rows.c.period).exists()
    return sa.and_(rows.c.over_budget.is_(True), ~released)


NOTIFIED_NOTE = "短信待发清单已生成"


def notify(conn: Connection, as_of: date, run_id: str) -> int:
    """Move every `eligible` row to `notified` (the SMS outbox is handed on) and
    return how many rows are notified for this as_of, including those an earlier
    attempt of the same date already moved and those the night's sync inserted told
    (`sync_from_matches(notify=True)`), so a rerun writes the same outbox (`sms_query`
    reads them).

    A policy period held over budget is told nothing (no enterprise is promised
    money the budget cannot pay): its rows stay `eligible` until the night the
    hold is released."""
    move_all(conn, "eligible", "notified", run_id, note=NOTIFIED_NOTE, where=~held_over_budget(),
             as_of=as_of, notified_as_of=as_of)
    return count(conn, ledger.c.notified_as_of == as_of)


SMS_COLUMNS = ("name", "uscc", "policy_id", "policy_name", "period", "amount", "notified_as_of")


def sms_query(which: sa.ColumnElement[bool], columns: Iterable[str] = SMS_COLUMNS) -> sa.Select:
    """The SMS outbox's rows (notified_as_of or reminded_as_of of a date) in its order."""
    return (sa.select(*(ledger.c[c] for c in columns)).where(which)
            .order_by(ledger.c.department, ledger.c.policy_id, ledger.c.uscc))


def notified_on(conn: Connection, as_of: date) -> list[dict]:
    """The rows notified by the run of as_of (what its SMS outbox listed); reads only."""
    return _dicts(conn.execute(sms_query(ledger.c.notified_as_of == as_of, [c.name for c in listed_columns()])))


def in_publicity(conn: Connection, as_of: date) -> list[dict]:
    """Rows whose publicity window contains as_of (approved or under objection); reads only."""
    rows = conn.execute(
        sa.select(*listed_columns()).where(ledger.c.status.in_(("approved", "objected")),
                                ledger.c.publicity_from <= as_of, ledger.c.publicity_to >= as_of)
        .order_by(ledger.c.policy_id, ledger.c.period, ledger.c.uscc))
    return _dicts(rows)


def start_publicity(conn: Connection, as_of: date, calendar: WorkCalendar) -> list[dict]:
    """Open the publicity window (publicity_days working days, deadlines.publicity_to) of
    approved rows listed for the first time, and return every row whose window contains
    as_of (approved or under objection).

    Set-based: the window's end depends only on as_of and the number of days, so each
    distinct publicity_days is one UPDATE, whatever the number of rows."""
    now = wh.utcnow()
    opening = sa.and_(ledger.c.status == "approved", ledger.c.publicity_from.is_(None), ledger.c.publicity_days > 0)
    for (days,) in conn.execute(sa.select(ledger.c.publicity_days).where(opening).distinct()).all():
        conn.execute(ledger.update().where(opening, ledger.c.publicity_days == days)
                     .values(publicity_from=as_of, publicity_to=deadlines.publicity_to(calendar, as_of, days),
                             updated_at=now))
    return in_publicity(conn, as_of)


def remind_and_expire(conn: Connection, as_of: date, run_id: str, calendar: WorkCalendar,
                      days: Mapping[str, deadlines.Days]) -> dict:
    """催办 and 逾期未确认 for the unanswered (`notified`) rows: past half of confirm_days a
    row gets its one reminder (reminded_as_of, set once: a rerun sends none again); past
    confirm_days it becomes `expired`. Returns counts: reminded, expired.

    Set-based: a row's deadlines depend only on its policy and the night it was told, so
    each distinct (policy, notified_as_of) is one UPDATE (a reminder) or one `move_all`
    (expiry, logged row by row in the same statement), however many rows it holds."""
    counts = {"reminded": 0, "expired": 0}
    told = sa.and_(ledger.c.status == "notified", ledger.c.notified_as_of.is_not(None))
    groups = conn.execute(sa.select(ledger.c.policy_id, ledger.c.notified_as_of).where(told)
                          .group_by(ledger.c.policy_id, ledger.c.notified_as_of)
                          .order_by(ledger.c.policy_id, ledger.c.notified_as_of)).all()
    for policy_id, notified_as_of in groups:
        policy_days = days.get(policy_id, deadlines.Days())
        deadline = deadlines.confirm_by(calendar, notified_as_of, policy_days)
        these = sa.and_(ledger.c.policy_id == policy_id, ledger.c.notified_as_of == notified_as_of)
        if as_of > deadline:
            counts["expired"] += move_all(conn, "notified", "expired", run_id, where=these, as_of=as_of,
                                          note=f"逾期未确认：确认截止日期 {deadline} 前未确认申领意愿")
        elif as_of >= deadlines.remind_on(calendar, notified_as_of, policy_days):
            counts["reminded"] += conn.execute(
                ledger.update().where(told, these, ledger.c.reminded_as_of.is_(None))
                .values(reminded_as_of=as_of, updated_at=wh.utcnow())).rowcount
    return counts


UNANSWERED_COLUMNS = ("department", "uscc", "policy_id", "policy_name", "period", "amount", "notified_as_of")
Group = tuple[str, str, "date | None", int]   # (department, policy_id, notified_as_of, rows or rank)


def unanswered_groups(conn: Connection) -> list[Group]:
    """The `notified` rows counted per (department, policy, notification date): a row's
    deadline depends only on its policy and the night it was told."""
    query = (sa.select(ledger.c.department, ledger.c.policy_id, ledger.c.notified_as_of, sa.func.count())
             .where(ledger.c.status == "notified")
             .group_by(ledger.c.department, ledger.c.policy_id, ledger.c.notified_as_of))
    return [tuple(r) for r in conn.execute(query)]


_LIST_RANK = sa.Table(
    "ledger_list_rank", sa.MetaData(),
    sa.Column("department", sa.Text),
    sa.Column("policy_id", sa.String(100)),
    sa.Column("notified_as_of", sa.Date),
    sa.Column("rank", sa.Integer),
    prefixes=["TEMPORARY"],
)


def stream_unanswered(conn: Connection, ranks: list[Group]) -> Iterator[pa.Table]:
    """The `notified` rows (UNANSWERED_COLUMNS and their rank) in the order of `ranks`
    ((department, policy_id, notified_as_of, rank) of each group), then by code and period:
    the database sorts them (a province's first night leaves millions unanswered), the
    rows come in batches."""
    r = _LIST_RANK
    r.drop(conn, checkfirst=True)
    r.create(conn)
    if ranks:
        conn.execute(r.insert(), [dict(zip(("department", "policy_id", "notified_as_of", "rank"), g)) for g in ranks])
    query = (sa.select(*(ledger.c[c] for c in UNANSWERED_COLUMNS), r.c.rank)
             .join_from(ledger, r, sa.and_(ledger.c.department == r.c.department, ledger.c.policy_id == r.c.policy_id,
                                           ledger.c.notified_as_of.is_not_distinct_from(r.c.notified_as_of)))
             .where(ledger.c.status == "notified")
             .order_by(r.c.rank, ledger.c.uscc, ledger.c.period))
    yield from stream(conn, query)
    r.drop(conn)


def applications(conn: Connection) -> frozenset[Key]:
    """The keys of every online application (rows that entered at `confirmed`)."""
    rows = conn.execute(sa.select(ledger.c.policy_id, ledger.c.period, ledger.c.uscc)
                        .where(ledger.c.applied_on.is_not(None)))
    return frozenset(tuple(r) for r in rows)


def reminded_on(conn: Connection, as_of: date) -> list[dict]:
    """The rows the run of as_of sent a 催办 to (what its SMS outbox listed); reads only."""
    return _dicts(conn.execute(sms_query(ledger.c.reminded_as_of == as_of, [c.name for c in listed_columns()])))


def apply_online(conn: Connection, key: Key, amount: Decimal, applied_on: date, source: Source,
                 policy_name: str, department: str, name: str | None, payee: Mapping[str, object],
                 publicity_days: int | None) -> str | None:
    """An accepted online application of a `manual` policy: a new row straight at `confirmed`
    with the applied amount and payee account (the database lets a row start there only with
    its application date). Refused when the key is already in the ledger (one application
    per enterprise, policy and period)."""
    existing = get(conn, key)
    if existing is not None:
        if _done_by_file(conn, existing["id"], "confirmed", source):
            return None
        return (f"重复申请：该企业已于 {existing['applied_on'] or existing['first_as_of']} 申请本政策本期次"
                f"（当前状态“{STATUS_LABELS[existing['status']]}”），同一期次只能申请一次")
    policy_id, period, uscc = key
    run = f"online:{source.file}"
    now = wh.utcnow()
    new = conn.execute(_insert_ignore(conn, ledger, ["policy_id", "period", "uscc"]).values(
        policy_id=policy_id, period=period, uscc=uscc, status="confirmed", amount=amount,
        last_match_amount=amount, policy_name=policy_name, department=department, name=name,
        publicity_days=publicity_days or None, applied_on=applied_on, first_run=run, last_run=run,
        first_as_of=applied_on, last_as_of=applied_on, updated_at=now, **payee))
    if new.rowcount != 1:
        return "该结果已被同时处理的其他文件写入台账，本行未处理，请核对后重新报送"
    row = get(conn, key)
    _log(conn, row["id"], None, "confirmed", source, department, amount,
         f"在线申请 {amount:,.2f} 元（{applied_on}）；已签署信用承诺；收款账号尾号{payee['bank_account'][-4:]}",
         as_of=applied_on)
    return None


def payable(conn: Connection, as_of: date) -> tuple[list[dict], list[dict]]:
    """(rows to put on a payout list now, approved rows held over budget)."""
    released = released_holds(conn)
    pay, held = [], []
    # Only the rows whose publicity is over (or that have none) are read, without their evidence.
    over = sa.or_(sa.func.coalesce(ledger.c.publicity_days, 0) <= 0,
                  sa.and_(ledger.c.publicity_to.is_not(None), ledger.c.publicity_to < as_of))
    rows = _dicts(conn.execute(sa.select(*listed_columns()).where(ledger.c.status == "approved", over)
                               .order_by(ledger.c.department, ledger.c.policy_id, ledger.c.period, ledger.c.uscc)))
    for row in rows:
        if row["amount"] is None or row["amount"] <= 0:
            continue
        if row["over_budget"] and (row["policy_id"], row["period"]) not in released:
            held.append(row)
            continue
        pay.append(row)
    return pay, held


def apply_recheck(conn: Connection, run_id: str, findings: Mapping[int, str | None],
                  as_of: date | None = None) -> dict:
    """再确认: move rows by tonight's findings (ledger id -> Chinese finding, None: passes).

    A suspended row whose re-check passes (or finds only what its department
    overrode) returns to `approved`; an approved row that fails is `suspended` with
    the finding as its reason. Returns counts: resumed, suspended."""
    counts = {"resumed": 0, "suspended": 0}
    for row in rows_in(conn, "approved", "suspended"):
        if row["id"] not in findings:
            continue
        finding = findings[row["id"]]
        passes = finding is None or finding == row["recheck_override"]
        key = (row["policy_id"], row["period"], row["uscc"])
        if row["status"] == "suspended" and passes:
            note = "再确认通过，恢复审核通过" if finding is None else f"再确认：{finding}（部门已复核通过）"
            _must(transition(conn, key, "approved", run_id, row["department"], note=note, as_of=as_of,
                             recheck_reason=None))
            counts["resumed"] += 1
        elif row["status"] == "approved" and not passes:
            _must(transition(conn, key, "suspended", run_id, row["department"],
                             note=f"再确认未通过，暂缓拨付：{finding}", as_of=as_of, recheck_reason=finding))
            counts["suspended"] += 1
        elif row["status"] == "suspended" and finding != row["recheck_reason"]:
            # still failing, for another reason tonight: the 复核 workbook shows the current one
            conn.execute(ledger.update().where(ledger.c.id == row["id"]).values(recheck_reason=finding))
    return counts


def _must(reason: str | None) -> None:
    if reason:  # a concurrent move inside the ledger step: give the night's moves up
        raise RuntimeError(reason)


def batch_id_for(as_of: date, n: int) -> str:
    return f"PB-{as_of:%Y%m%d}-{n:02d}"


def schedule_payout(conn: Connection, as_of: date, run_id: str) -> str | None:
    """Put every payable row on a new batch and move it to `scheduled`.

    The batch id is PB-<as_of>-NN, NN counting the date's batches: a rerun after
    a crash either finds the committed batch (and nothing left to pay) or
    rebuilds the same one from the same rows. Returns the new batch id or None."""
    rows, _held = payable(conn, as_of)
    if not rows:
        return None
    n = conn.execute(sa.select(sa.func.count()).select_from(payout_batches)
                     .where(payout_batches.c.as_of == as_of)).scalar_one()
    batch_id = batch_id_for(as_of, n + 1)
    total = sum((r["amount"] for r in rows), Decimal("0.00"))
    conn.execute(payout_batches.insert().values(
        batch_id=batch_id, as_of=as_of, run_id=run_id, created_at=wh.utcnow(),
        status="scheduled", items=len(rows), total=total))
    conn.execute(payout_items.insert(), [
        {"batch_id": batch_id, "ledger_id": r["id"], "amount": r["amount"],
         "department": r["department"]} for r in rows])
    # One set-based move of the batch's rows (the log and the status change as two statements);
    # a concurrent move gives the whole batch up rather than half of it.
    on_batch = ledger.c.id.in_(sa.select(payout_items.c.ledger_id).where(payout_items.c.batch_id == batch_id))
    if move_all(conn, "approved", "scheduled", run_id, note=f"列入拨付批次 {batch_id}", where=on_batch,
                as_of=as_of) != len(rows):
        raise RuntimeError("台账状态已被同时运行的其他任务更改，本次夜间处理已回滚，请重跑")
    return batch_id


def batch_rows(conn: Connection, as_of: date) -> list[dict]:
    """The items of every batch created for as_of, with their ledger rows."""
    q = (sa.select(payout_items.c.batch_id, ledger)
         .join(ledger, ledger.c.id == payout_items.c.ledger_id)
         .join(payout_batches, payout_batches.c.batch_id == payout_items.c.batch_id)
         .where(payout_batches.c.as_of == as_of)
         .order_by(payout_items.c.batch_id, ledger.c.department, ledger.c.policy_id,
                   ledger.c.period, ledger.c.uscc))
    return [dict(r._mapping) for r in conn.execute(q).all()]


def record_payment(conn: Connection, key: Key, batch_id: str, amount: Decimal,
                   paid_on: date | None, source: Source | str | None,
                   department: str | None = None) -> str | None:
    """scheduled -> paid for one row of a batch; refused when the row is not on
    that batch, already paid, or the amount differs."""
    row = get(conn, key)
    if row is None:
        return f"无此匹配结果：{_key_text(key)} 不在兑现台账中"
    item = conn.execute(sa.select(payout_items).where(payout_items.c.ledger_id == row["id"])).first()
    if row["status"] == "paid" and _done_by_file(conn, row["id"], "paid", _source(source)):
        return None   # this very file paid it: a replay after a crash, not a second payment
    if row["status"] == "paid":
        where = f"（批次 {item.batch_id}）" if item else ""
        return f"该结果已拨付{where}，不重复支付"
    if item is None:
        return f"该结果未列入任何拨付批次（当前状态“{STATUS_LABELS[row['status']]}”）"
    if item.batch_id != batch_id:
        return f"批次号不符：该结果列入的是批次 {item.batch_id}，不是 {batch_id}"
    note = f"批次 {batch_id} 实付" + (f"，支付日期 {paid_on}" if paid_on else "")
    reason = transition(conn, key, "paid", source, department, amount=amount, note=note,
                        paid_on=paid_on or wh.utcnow().date())
    if reason is None:
        left = conn.execute(
            sa.select(sa.func.count()).select_from(payout_items)
            .join(ledger, ledger.c.id == payout_items.c.ledger_id)
            .where(payout_items.c.batch_id == batch_id, ledger.c.status != "paid")).scalar_one()
        if left == 0:
            conn.execute(payout_batches.update().where(payout_batches.c.batch_id == batch_id)
                         .values(status="paid"))
    return reason


# ---------------------------------------------------------------- 追回 (recovery)

def request_recovery(conn: Connection, key: Key, amount: Decimal, reason: str,
                     source: Source | str | None, department: str | None = None) -> str | None:
    """paid -> recovering, recording what the department asks back and why. Refused
    (Chinese reason, nothing changed) unless the row is paid and 0 < amount <= paid."""
    row = get(conn, key)
    if row is None:
        return f"无此匹配结果：{_key_text(key)} 不在兑现台账中"
    src = _source(source)
    if not _done_by_file(conn, row["id"], "recovering", src):
        if amount <= 0 or (row["amount"] is not None and amount > row["amount"]):
            return f"追回金额 {amount:,.2f} 元应大于零且不超过已拨付金额 {_fmt(row['amount'])} 元"
    refused = transition(conn, key, "recovering", src, department or row["department"],
                         note=f"追回 {amount:,.2f} 元：{reason}")
    if refused is None:
        conn.execute(_insert_ignore(conn, wh.recoveries, ["ledger_id"]).values(
            ledger_id=row["id"], amount=amount, reason=reason, requested_at=wh.utcnow(), request_file=src.file))
    return refused


def record_recovery_receipt(conn: Connection, key: Key, amount: Decimal, received_on: date | None,
                            source: Source | str | None, department: str | None = None) -> str | None:
    """recovering -> recovered once the finance bureau has received exactly what was asked back."""
    row = get(conn, key)
    if row is None:
        return f"无此匹配结果：{_key_text(key)} 不在兑现台账中"
    asked = conn.execute(sa.select(wh.recoveries).where(wh.recoveries.c.ledger_id == row["id"])).first()
    src = _source(source)
    if asked is not None and row["status"] == "recovering" and amount != asked.amount:
        return f"实收金额 {amount:,.2f} 元与追回金额 {asked.amount:,.2f} 元不一致"
    refused = transition(conn, key, "recovered", src, department,
                         note=f"追回款到账 {amount:,.2f} 元" + (f"，到账日期 {received_on}" if received_on else ""))
    if refused is None:
        conn.execute(wh.recoveries.update().where(wh.recoveries.c.ledger_id == row["id"]).values(
            received_amount=amount, received_on=received_on, receipt_file=src.file))
    return refused


def paid_since(conn: Connection, since: date) -> list[dict]:
    """Rows paid on or after `since` and still `paid` (the 事后监管清单's candidates)."""
    rows = conn.execute(sa.select(*listed_columns()).where(ledger.c.status == "paid", ledger.c.paid_on >= since)
                        .order_by(ledger.c.department, ledger.c.policy_id, ledger.c.period, ledger.c.uscc))
    return _dicts(rows)


def keys(rows: Iterable[dict]) -> list[Key]:
    return [(r["policy_id"], r["period"], r["uscc"]) for r in rows]


# ---------------------------------------------------------------- entry points for the CLI

def release_hold_command(settings, policy_id: str, period: str, operator: str) -> str:
    """`mianshen ledger release-hold POLICY:PERIOD --operator NAME`: a Chinese line to print."""
    engine = wh.connect(settings.warehouse_url)
    with engine.begin() as conn:
        held = conn.execute(sa.select(sa.func.count()).select_from(ledger).where(
            ledger.c.policy_id == policy_id, ledger.c.period == period,
            ledger.c.over_budget.is_(True), ledger.c.status == "approved")).scalar_one()
        new = release_budget_hold(conn, policy_id, period, operator)
    if not new:
        return f"政策 {policy_id} 期次 {period} 的超预算暂停此前已解除，未重复记录。"
    return (f"已记录：{operator} 解除政策 {policy_id} 期次 {period} 的超预算暂停拨付；"
            f"当前待拨付 {held} 条将在下一次夜间运行列入拨付清单。")


# ---------------------------------------------------------------- `mianshen ledger status`

STATUS_KEYS = ("policy_id", "period", "uscc", "status", "amount", "batch", "changed_on", "reason")


def status_rows(conn: Connection, policy_id: str | None = None, uscc: str | None = None) -> list[dict]:
    """Ledger rows (optionally of one policy and/or enterprise) with their payout batch and
    the newest transition: when (the China date) and why. JSON-able: amounts as text."""
    from pipelines.inbox import local_day

    newest = (sa.select(ledger_transitions.c.ledger_id, sa.func.max(ledger_transitions.c.id).label("id"))
              .group_by(ledger_transitions.c.ledger_id).subquery())
    t = ledger_transitions
    q = (sa.select(ledger.c.policy_id, ledger.c.period, ledger.c.uscc, ledger.c.status, ledger.c.amount,
                   payout_items.c.batch_id, t.c.at, t.c.note)
         .outerjoin(payout_items, payout_items.c.ledger_id == ledger.c.id)
         .outerjoin(newest, newest.c.ledger_id == ledger.c.id)
         .outerjoin(t, t.c.id == newest.c.id)
         .order_by(ledger.c.policy_id, ledger.c.period, ledger.c.uscc))
    if policy_id:
        q = q.where(ledger.c.policy_id == policy_id)
    if uscc:
        q = q.where(ledger.c.uscc == uscc)
    return [{"policy_id": r.policy_id, "period": r.period, "uscc": r.uscc, "status": r.status,
             "amount": None if r.amount is None else str(r.amount), "batch": r.batch_id,
             "changed_on": local_day(r.at.replace(tzinfo=timezone.utc)) if r.at else None,
             "reason": r.note} for r in conn.execute(q)]


def status_table(rows: list[dict]) -> str:
    """The rows as a Chinese table for a person at a terminal (CJK characters are two columns wide)."""
    from pipelines.outputs.workbook import display_width

    if not rows:
        return "台账中没有符合条件的记录。"
    header = ("政策编号", "期次", "统一社会信用代码", "状态", "金额（元）", "拨付批次", "变更日期", "说明")
    body = [(r["policy_id"], r["period"], r["uscc"], STATUS_LABELS.get(r["status"], r["status"]),
             f"{Decimal(r['amount']):,.2f}" if r["amount"] is not None else "—", r["batch"] or "—",
             r["changed_on"] or "—", r["reason"] or "") for r in rows]
    widths = [max(display_width(str(line[i])) for line in (header, *body)) for i in range(len(header) - 1)]

    def line(cells) -> str:
        padded = [str(c) + " " * (w - display_width(str(c))) for c, w in zip(cells, widths)]
        return "  ".join(padded + [str(cells[-1])]).rstrip()

    return "\n".join([line(header)] + [line(b) for b in body] + [f"共 {len(rows)} 条"])


def status_command(settings, policy_id: str | None, uscc: str | None, as_json: bool) -> str:
    from pipelines.uscc import normalise_code

    engine = wh.connect(settings.warehouse_url)
    with engine.connect() as conn:
        rows = status_rows(conn, policy_id, normalise_code(uscc) if uscc else None)
    if as_json:
        import json

        return json.dumps(rows, ensure_ascii=False, indent=2)
    return status_table(rows)
