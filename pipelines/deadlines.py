"""The deadlines of lifecycle.md, in working days (pipelines/workdays.py), and what
a ledger row owes at a date: pure functions, no database.

    confirmation  notified_on + confirm_days   催办 at half of it; after it: `expired`
    review        confirmed_on + review_days   (an application: from the application)
    publicity     publicity_days working days from the day the window opens
    payment       end of publicity (or approval, without publicity) + pay_days

A row past a review, publicity or payment deadline is *overdue*: it stays where it
is, and is counted and listed for supervision (督导统计).

Decisions (the spec is silent):
- 催办 goes out on the first night on or after the working day `ceil(confirm_days / 2)`
  after the SMS; a night that is already past the deadline expires the result instead.
- An overdue *confirmation* is a result that was reminded (past half its time) and is
  still unanswered; once past the deadline it is `expired`, counted as such.
- An overdue *publicity* is an objection (异议) still open after its window closed.
- A payment is overdue while the row is approved, suspended or scheduled past
  `pay_days` after the end of its publicity window (or its approval).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Mapping

from pipelines.policies import DEADLINE_DEFAULTS
from pipelines.workdays import WorkCalendar

OVERDUE_KINDS = {"confirm": "确认", "review": "审核", "publicity": "公示异议处理", "payment": "拨付"}


@dataclass(frozen=True)
class Days:
    """A policy's deadlines in working days."""

    confirm: int = DEADLINE_DEFAULTS["confirm_days"]
    review: int = DEADLINE_DEFAULTS["review_days"]
    pay: int = DEADLINE_DEFAULTS["pay_days"]


def days_of(policies: Mapping[str, object]) -> dict[str, Days]:
    """policy id -> its Days, from loaded policies (pipelines.policies.Policy)."""
    return {pid: Days(p.confirm_days, p.review_days, p.pay_days) for pid, p in policies.items()}


def confirm_by(calendar: WorkCalendar, notified_on: date, days: Days) -> date:
    return calendar.add_working_days(notified_on, days.confirm)


def remind_on(calendar: WorkCalendar, notified_on: date, days: Days) -> date:
    return calendar.add_working_days(notified_on, (days.confirm + 1) // 2)


def publicity_to(calendar: WorkCalendar, opened_on: date, publicity_days: int) -> date:
    return calendar.window(opened_on, publicity_days)


@dataclass(frozen=True)
class RowState:
    """A ledger row as it stood at a date, replayed from its transitions."""

    status: str
    eligible_on: date | None = None     # the row's first move (an application: its date)
    notified_on: date | None = None
    confirmed_on: date | None = None
    approved_on: date | None = None     # the first approval
    paid_on: date | None = None
    publicity_from: date | None = None
    publicity_to: date | None = None


def overdue(state: RowState, as_of: date, calendar: WorkCalendar, days: Days) -> tuple[str, date] | None:
    """(kind, deadline) when the row is past a deadline at as_of (kind in OVERDUE_KINDS), else None."""
    if state.status == "notified" and state.notified_on is not None:
        if as_of >= remind_on(calendar, state.notified_on, days):
            return "confirm", confirm_by(calendar, state.notified_on, days)
    elif state.status == "confirmed" and state.confirmed_on is not None:
        deadline = calendar.add_working_days(state.confirmed_on, days.review)
        if as_of > deadline:
            return "review", deadline
    elif state.status == "objected" and state.publicity_to is not None and as_of > state.publicity_to:
        return "publicity", state.publicity_to
    elif state.status in ("approved", "suspended", "scheduled"):
        start = state.publicity_to or state.approved_on
        if start is not None:
            deadline = calendar.add_working_days(start, days.pay)
            if as_of > deadline:
                return "payment", deadline
    return None
