"""Day numbers, month indexes and the feeds' delivery calendar."""
from __future__ import annotations

from datetime import date, timedelta

EPOCH = date(1970, 1, 1)


def _days(d: date) -> int:
    return (d - EPOCH).days


def _month_index(d: date) -> int:
    return d.year * 12 + d.month - 1


def _period_text(month_index: int) -> str:
    return f"{month_index // 12:04d}-{month_index % 12 + 1:02d}"


def _monthly(as_of: date, day: int) -> date:
    """The newest `day`-th of a month on or before as_of."""
    if as_of.day >= day:
        return as_of.replace(day=day)
    return (as_of.replace(day=1) - timedelta(days=1)).replace(day=day)


def delivery_dates(as_of: date) -> dict[str, tuple[date, date]]:
    """(current, previous) delivery date per feed: current is fresh on as_of."""
    tax = _monthly(as_of, 5)
    si = _monthly(as_of, 10)
    return {
        "registry": (as_of, as_of - timedelta(days=1)),
        "tax": (tax, _monthly(tax - timedelta(days=1), 5)),
        "social_insurance": (si, _monthly(si - timedelta(days=1), 10)),
        "tech": (as_of - timedelta(days=45), as_of - timedelta(days=136)),
        "credit": (as_of, as_of - timedelta(days=1)),
    }
