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
from pipelines.warehouse import ledger, ledger_transitions
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
    deadline]}: JSON-able (amounts as text), departments with overdue items first."""
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
