"""督导统计 (lifecycle.md item 9): per department, policy and period, cumulative up to a
date — eligible, notified, confirmed, declined, expired, approved, rejected,
suspended, paid (count and amount), recovered; the median working days from
eligible to paid; the overdue confirmations, reviews, publicity and payments.

Computed only from the ledger and its transition log, never kept as counters: the
log is replayed up to the date (each move carries its business date, `as_of`), so
`mianshen supervision --as-of D` rebuilds for any past D exactly what the run of D
wrote. A move from a returned file is dated the day after the newest run
(ledger.business_day): the run of D never saw it, and the rebuild of D leaves it out.

Decisions (the spec is silent):
- A figure counts the rows that ever reached the status by the date (an approved
  row later paid counts as approved and as paid); "paid" keeps counting a row that
  was later recovered, "recovered" counts it too.
- An online application (a `manual` policy) is counted from `confirmed`: it never
  was `eligible`; its days to payment run from the application.
- A move logged before migration 0004 (no as_of) is dated by its China-local day.
"""
from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import replace
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Iterable, Mapping

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pipelines import deadlines
from pipelines.deadlines import Days, RowState
from pipelines.warehouse import analyze, drop_temporary, ledger, ledger_transitions
from pipelines.workdays import WorkCalendar

COUNTED = ("eligible", "notified", "confirmed", "declined", "expired", "approved", "rejected",
           "suspended", "paid", "recovered")
LABELS = {
    "department": "部门", "policy_id": "政策编号", "policy_name": "政策名称", "period": "期次",
    "eligible": "符合条件", "notified": "已通知", "confirmed": "已确认申领", "declined": "已放弃",
    "expired": "逾期未确认", "approved": "审核通过", "rejected": "不予兑现", "suspended": "暂缓拨付",
    "paid": "已拨付", "paid_amount": "已拨付金额（元）", "recovered": "已追回",
    "median_days_to_paid": "符合条件至拨付中位工作日",
    "overdue_confirm": "逾期确认（已催办未答复）", "overdue_review": "逾期审核", "overdue_publicity": "逾期公示异议处理",
    "overdue_payment": "逾期拨付",
}
OVERDUE_KEYS = tuple(f"overdue_{k}" for k in deadlines.OVERDUE_KINDS)


def _day(value) -> date:
    return value.date() if isinstance(value, datetime) else value


def _business_date(move: Mapping) -> date:
    if move["as_of"] is not None:
        return _day(move["as_of"])
    from pipelines.inbox import local_day

    return date.fromisoformat(local_day(move["at"].replace(tzinfo=timezone.utc)))


def replay(row: Mapping, moves: Iterable[Mapping], as_of: date) -> tuple[RowState, set[str]] | None:
    """The row's state at as_of and the statuses it reached by then (None: not yet in the ledger)."""
    state, reached = None, set()
    for move in moves:
        on = _business_date(move)
        if on > as_of:
            continue
        to = move["to_status"]
        if state is None:
            state = RowState(status=to, eligible_on=on)
        elif to == state.status:   # an amount adjustment while eligible
            continue
        state = replace(state, status=to)
        if to == "notified":
            state = replace(state, notified_on=on)
        elif to == "confirmed":
            state = replace(state, confirmed_on=on)
        elif to == "approved" and state.approved_on is None:
            state = replace(state, approved_on=on)
        elif to == "paid":
            state = replace(state, paid_on=on)
        reached.add(to)
    if state is None:
        return None
    opened = row.get("publicity_from")
    if opened is not None and _day(opened) <= as_of:
        state = replace(state, publicity_from=_day(opened), publicity_to=_day(row["publicity_to"]))
    return state, reached


def _history(conn: Connection, as_of: date) -> tuple[dict[int, dict], dict[int, list[dict]]]:
    rows = {r.id: dict(r._mapping) for r in conn.execute(sa.select(
        ledger.c.id, ledger.c.policy_id, ledger.c.period, ledger.c.uscc, ledger.c.name, ledger.c.policy_name,
        ledger.c.department, ledger.c.amount, ledger.c.publicity_from, ledger.c.publicity_to))}
    t = ledger_transitions.c
    moves: dict[int, list[dict]] = defaultdict(list)
    for m in conn.execute(sa.select(t.ledger_id, t.to_status, t.as_of, t.at)
                          .where(sa.or_(t.as_of <= as_of, t.as_of.is_(None))).order_by(t.id)):
        moves[m.ledger_id].append(dict(m._mapping))
    return rows, moves


def compute(conn: Connection, as_of: date, calendar: WorkCalendar, days: Mapping[str, Days]) -> dict:
    """{"as_of", "figures": [one dict per department, policy and period], "overdue": [rows past a
    deadline]}: JSON-able (amounts as text), departments with overdue items first.

    Set-based, for a province's ledger of millions of rows: each row's state at as_of
    (what `replay` makes of its moves) is built by one GROUP BY over the log into a
    temporary table; the figures are then grouped in SQL, and only the few distinct
    (policy, status, date) combinations go through the deadline arithmetic in Python.
    Per row, Python sees only the overdue items (which the lists name one by one)."""
    analyze(conn, ledger, ledger_transitions)   # the night's moves are just written
    state = _row_states(conn, as_of)
    try:
        return _figures(conn, as_of, calendar, days, state)
    finally:
        drop_temporary(conn, state)


_STATE_DATES = ("eligible_on", "notified_on", "confirmed_on", "approved_on", "paid_on", "publicity_to")


def _business_on(conn: Connection, moves=ledger_transitions):
    """A move's business date in SQL (`_business_date`): its as_of, or the China-local day
    (UTC+8, no daylight saving) of its time for a move logged before 0004."""
    if conn.dialect.name == "sqlite":
        local = sa.func.date(moves.c.at, "+8 hours")
    else:
        local = sa.cast(moves.c.at + sa.literal_column("INTERVAL '8 hours'", sa.Interval), sa.Date)
    return sa.type_coerce(sa.func.coalesce(moves.c.as_of, local), sa.Date)


def _row_states(conn: Connection, as_of: date) -> sa.Table:
    """A temporary table: per ledger row with a move by as_of, its status then, the dates
    `replay` records, its deadline base and one 0/1 column per status reached."""
    t = ledger_transitions.c
    on = _business_on(conn)
    moves = sa.select(t.ledger_id, t.id, t.to_status, on.label("on_")).where(on <= as_of).subquery("m")
    m = moves.c

    def at(status: str, how):
        return how(sa.case((m.to_status == status, m.on_)))

    # A row reaches notified, confirmed and paid at most once (lifecycle.md's transitions have
    # no way back to them), so their dates are plain aggregates; approved can be reached again
    # (after an objection or a suspension), and replay keeps the first: found by its move id.
    per_row = sa.select(
        m.ledger_id, sa.func.min(m.id).label("first_id"), sa.func.max(m.id).label("last_id"),
        sa.func.min(sa.case((m.to_status == "approved", m.id))).label("approved_id"),
        sa.type_coerce(at("notified", sa.func.max), sa.Date).label("notified_on"),
        sa.type_coerce(at("confirmed", sa.func.max), sa.Date).label("confirmed_on"),
        sa.type_coerce(at("paid", sa.func.max), sa.Date).label("paid_on"),
        *(sa.func.max(sa.case((m.to_status == s, 1), else_=0)).label(f"r_{s}") for s in COUNTED),
    ).group_by(m.ledger_id).subquery("r")
    r = per_row.c
    first, last, approved = (ledger_transitions.alias(n) for n in ("f", "l", "a"))

    def day_of(alias):
        return _business_on(conn, alias)

    opened = sa.and_(ledger.c.publicity_from.is_not(None), ledger.c.publicity_from <= as_of)
    publicity_to = sa.case((opened, ledger.c.publicity_to))
    status = last.c.to_status
    # What overdue() counts a row's deadline from, by its status.
    base = sa.case((status == "notified", r.notified_on), (status == "confirmed", r.confirmed_on),
                   (status == "objected", publicity_to),
                   (status.in_(("approved", "suspended", "scheduled")),
                    sa.func.coalesce(publicity_to, day_of(approved))))
    table = sa.Table(
        "oversight_state", sa.MetaData(),
        sa.Column("ledger_id", sa.Integer, primary_key=True), sa.Column("status", sa.String(16)),
        *(sa.Column(name, sa.Date) for name in _STATE_DATES), sa.Column("base", sa.Date),
        *(sa.Column(f"r_{s}", sa.Integer) for s in COUNTED), prefixes=["TEMPORARY"])
    table.drop(conn, checkfirst=True)
    table.create(conn)
    query = (sa.select(r.ledger_id, status, day_of(first), r.notified_on, r.confirmed_on, day_of(approved),
                       r.paid_on, publicity_to, base, *(r[f"r_{s}"] for s in COUNTED))
             .select_from(per_row.join(first, first.c.id == r.first_id).join(last, last.c.id == r.last_id)
                          .outerjoin(approved, approved.c.id == r.approved_id)
                          .join(ledger, ledger.c.id == r.ledger_id)))
    conn.execute(table.insert().from_select(
        ["ledger_id", "status", *_STATE_DATES, "base", *(f"r_{s}" for s in COUNTED)], query))
    return table


def _amount(conn: Connection):
    """The amount to SUM, exactly: SQLite keeps money as decimal text with two places
    (summed as whole fen, divided back in Python), PostgreSQL as NUMERIC."""
    if conn.dialect.name == "sqlite":
        return sa.cast(sa.func.replace(ledger.c.amount, ".", ""), sa.Integer)
    return sa.type_coerce(ledger.c.amount, sa.Numeric(20, 2))


def _names(conn: Connection, ids: list[int]):
    for start in range(0, len(ids), 500):
        yield from conn.execute(sa.select(ledger.c.id, ledger.c.policy_name)
                                .where(ledger.c.id.in_(ids[start:start + 500]))).all()


def _overdue(status: str, base: date, as_of: date, calendar: WorkCalendar, days: Days) -> tuple[str, date] | None:
    """deadlines.overdue of a row in `status` whose deadline counts from `base` (the date
    _row_states picked for that status)."""
    state = RowState(status=status, notified_on=base, confirmed_on=base, publicity_to=base, approved_on=base)
    return deadlines.overdue(state, as_of, calendar, days)


def _median(counted: list[tuple[int, int]]) -> float:
    """statistics.median of the values each repeated its count of times."""
    values = sorted(counted)
    n = sum(c for _, c in values)

    def nth(i: int) -> int:
        for value, c in values:
            if i < c:
                return value
            i -= c
        raise IndexError(i)

    if n % 2:
        return nth(n // 2)
    return (nth(n // 2 - 1) + nth(n // 2)) / 2


_LATE = sa.Table(
    "oversight_late", sa.MetaData(),
    sa.Column("policy_id", sa.String(100), primary_key=True), sa.Column("status", sa.String(16), primary_key=True),
    sa.Column("base", sa.Date, primary_key=True), sa.Column("kind", sa.String(16)), sa.Column("deadline", sa.Date),
    prefixes=["TEMPORARY"])


def _overdue_rows(conn: Connection, as_of: date, calendar: WorkCalendar, state: sa.Table,
                  late: Mapping[tuple, tuple[str, date]]) -> list[dict]:
    """The rows past a deadline, one dict each (the lists name them), joined to the combinations found late."""
    if not late:
        return []
    _LATE.drop(conn, checkfirst=True)
    _LATE.create(conn)
    try:
        conn.execute(_LATE.insert(), [{"policy_id": p, "status": st, "base": b, "kind": k, "deadline": d}
                                      for (p, st, b), (k, d) in late.items()])
        s, l, x = state.c, ledger.c, _LATE.c
        over: dict[date, int] = {}
        out = []
        for r in conn.execute(sa.select(l.department, x.kind, l.policy_id, l.policy_name, l.period, l.uscc,
                                        l.name, s.status, x.deadline)
                              .select_from(state.join(ledger, l.id == s.ledger_id)
                                           .join(_LATE, sa.and_(x.policy_id == l.policy_id,
                                                                x.status == s.status, x.base == s.base)))):
            if r.deadline not in over:
                over[r.deadline] = calendar.working_days_between(r.deadline, as_of)
            out.append({"department": r.department, "kind": deadlines.OVERDUE_KINDS[r.kind],
                        "policy_id": r.policy_id, "policy_name": r.policy_name, "period": r.period,
                        "uscc": r.uscc, "name": r.name, "status": r.status, "deadline": str(r.deadline),
                        "days_over": over[r.deadline]})
        return out
    finally:
        _LATE.drop(conn)


def _figures(conn: Connection, as_of: date, calendar: WorkCalendar, days: Mapping[str, Days],
             state: sa.Table) -> dict:
    s, l = state.c, ledger.c
    key = (l.department, l.policy_id, l.period)
    rows = state.join(ledger, l.id == s.ledger_id)
    groups: dict[tuple, dict] = {}
    paid_sum = sa.func.sum(sa.case((s.r_paid == 1, _amount(conn))))
    for g in conn.execute(sa.select(*key, sa.func.min(l.id).label("first"),
                                    *(sa.func.sum(s[f"r_{x}"]).label(x) for x in COUNTED),
                                    paid_sum.label("paid_sum"))
                          .select_from(rows).group_by(*key)):
        paid = Decimal(0) if g.paid_sum is None else Decimal(g.paid_sum)
        if conn.dialect.name == "sqlite":
            paid = paid / 100
        groups[(g.department, g.policy_id, g.period)] = {
            "department": g.department, "policy_id": g.policy_id, "_first": g.first, "period": g.period,
            **{x: int(getattr(g, x) or 0) for x in COUNTED}, "paid_amount": paid.quantize(Decimal("0.01")),
            **dict.fromkeys(OVERDUE_KEYS, 0)}
    # The group's policy name: its first row's (replay took the first row it met).
    firsts = {g["_first"]: k for k, g in groups.items()}
    for first_id, name in _names(conn, list(firsts)):
        groups[firsts[first_id]]["policy_name"] = name

    # Working days from eligible to paid: per distinct pair of dates, counted once.
    waits: dict[tuple, list[tuple[int, int]]] = defaultdict(list)
    for w in conn.execute(sa.select(*key, s.eligible_on, s.paid_on, sa.func.count().label("n"))
                          .select_from(rows).where(s.r_paid == 1)
                          .group_by(*key, s.eligible_on, s.paid_on)):
        waits[(w.department, w.policy_id, w.period)].append(
            (calendar.working_days_between(w.eligible_on, w.paid_on), w.n))

    # Overdue: the deadline of each distinct (policy, status, base date), then the rows past one.
    late: dict[tuple, tuple[str, date]] = {}
    counted = conn.execute(sa.select(*key, s.status, s.base, sa.func.count().label("n"))
                           .select_from(rows).where(s.base.is_not(None))
                           .group_by(*key, s.status, s.base)).all()
    for c in counted:
        combo = (c.policy_id, c.status, c.base)
        if combo not in late:
            late[combo] = _overdue(c.status, c.base, as_of, calendar, days.get(c.policy_id, Days()))
        if late[combo]:
            groups[(c.department, c.policy_id, c.period)][f"overdue_{late[combo][0]}"] += c.n
    overdue_rows = _overdue_rows(conn, as_of, calendar, state, {k: v for k, v in late.items() if v})

    late_by_department: dict[str, int] = defaultdict(int)
    for g in groups.values():
        late_by_department[g["department"]] += sum(g[k] for k in OVERDUE_KEYS)
    figures = []
    for k in sorted(groups, key=lambda k: (-late_by_department[k[0]], k)):
        g = groups[k]
        median = _median(waits[k]) if waits[k] else None
        figures.append({"department": g["department"], "policy_id": g["policy_id"],
                        "policy_name": g["policy_name"], "period": g["period"],
                        **{x: g[x] for x in COUNTED}, "paid_amount": f"{g['paid_amount']:.2f}",
                        **{x: g[x] for x in OVERDUE_KEYS},
                        "median_days_to_paid": None if median is None else float(median)})
    overdue_rows.sort(key=lambda r: (-late_by_department[r["department"]], r["department"], r["kind"],
                                     r["deadline"], r["policy_id"], r["uscc"]))
    return {"as_of": str(as_of), "figures": figures, "overdue": overdue_rows}


def compute_replayed(conn: Connection, as_of: date, calendar: WorkCalendar, days: Mapping[str, Days]) -> dict:
    """`compute`, replaying each row's moves in Python: the reference the set-based
    `compute` is tested against (it holds every row and move in memory)."""
    rows, moves = _history(conn, as_of)
    groups: dict[tuple, dict] = {}
    waits: dict[tuple, list[int]] = defaultdict(list)
    overdue_rows = []
    for ledger_id, row in rows.items():
        replayed = replay(row, moves.get(ledger_id, ()), as_of)
        if replayed is None:
            continue
        state, reached = replayed
        key = (row["department"], row["policy_id"], row["period"])
        g = groups.setdefault(key, {"department": key[0], "policy_id": key[1], "policy_name": row["policy_name"],
                                    "period": key[2], **dict.fromkeys(COUNTED, 0), "paid_amount": Decimal("0.00"),
                                    **dict.fromkeys(OVERDUE_KEYS, 0)})
        for status in reached & set(COUNTED):
            g[status] += 1
        if "paid" in reached:
            g["paid_amount"] += row["amount"] or 0
            waits[key].append(calendar.working_days_between(state.eligible_on, state.paid_on))
        late = deadlines.overdue(state, as_of, calendar, days.get(row["policy_id"], Days()))
        if late:
            kind, deadline = late
            g[f"overdue_{kind}"] += 1
            overdue_rows.append({"department": row["department"], "kind": deadlines.OVERDUE_KINDS[kind],
                                 "policy_id": row["policy_id"], "policy_name": row["policy_name"],
                                 "period": row["period"], "uscc": row["uscc"], "name": row["name"],
                                 "status": state.status, "deadline": str(deadline),
                                 "days_over": calendar.working_days_between(deadline, as_of)})
    late_by_department: dict[str, int] = defaultdict(int)
    for g in groups.values():
        late_by_department[g["department"]] += sum(g[k] for k in OVERDUE_KEYS)
    figures = []
    for key in sorted(groups, key=lambda k: (-late_by_department[k[0]], k)):
        g = groups[key]
        median = statistics.median(waits[key]) if waits[key] else None
        figures.append({**g, "paid_amount": f"{g['paid_amount']:.2f}",
                        "median_days_to_paid": None if median is None else float(median)})
    overdue_rows.sort(key=lambda r: (-late_by_department[r["department"]], r["department"], r["kind"],
                                     r["deadline"], r["policy_id"], r["uscc"]))
    return {"as_of": str(as_of), "figures": figures, "overdue": overdue_rows}


def command(settings, as_of: date) -> dict:
    """`mianshen supervision --as-of DATE`: the figures rebuilt for that date from the ledger."""
    from pipelines import policies as policies_mod
    from pipelines import warehouse

    calendar = WorkCalendar(settings.calendar)
    days = deadlines.days_of({p.id: p for p in policies_mod.load_dir(settings.policies)[0]})
    with warehouse.connect(settings.warehouse_url).connect() as conn:
        return compute(conn, as_of, calendar, days)


def table(result: dict) -> str:
    """The figures as a Chinese table for a person at a terminal."""
    from pipelines.outputs.workbook import display_width

    if not result["figures"]:
        return f"截至 {result['as_of']}，台账中尚无记录。"
    keys = ("department", "policy_id", "period") + COUNTED + ("paid_amount", "median_days_to_paid") + OVERDUE_KEYS
    header = [LABELS[k] for k in keys]
    body = [["—" if f[k] is None else f"{f[k]:g}" if isinstance(f[k], float) else str(f[k]) for k in keys]
            for f in result["figures"]]
    widths = [max(display_width(line[i]) for line in [header, *body]) for i in range(len(keys))]
    lines = ["  ".join(c + " " * (w - display_width(c)) for c, w in zip(line, widths)).rstrip()
             for line in [header, *body]]
    return "\n".join([f"督导统计（截至 {result['as_of']}）", *lines, f"逾期事项 {len(result['overdue'])} 项"])
