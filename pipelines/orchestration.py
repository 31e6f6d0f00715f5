"""What the DAG files need from a running task, kept out of the DAG files."""
from __future__ import annotations

from datetime import date

import pendulum

DAG_TIMEZONE = "Asia/Shanghai"


def as_of_from_context(context) -> date:
    """The run date: the `as_of` parameter when an operator set one, else the
    logical date in the district's time zone (a run scheduled after midnight
    processes the day before: its data interval starts on that day)."""
    override = (context.get("params") or {}).get("as_of")
    if override:
        return date.fromisoformat(str(override))
    logical = context.get("logical_date") or context.get("data_interval_start")
    return pendulum.instance(logical).in_timezone(DAG_TIMEZONE).date()


def run_id_from_context(context) -> str:
    return str(context.get("run_id") or "manual")


def parse_hold(text) -> tuple[str, str]:
    """`"WL-KJ-2026-01:2026"` → ("WL-KJ-2026-01", "2026"): the one parser of POLICY:PERIOD
    (the CLI's --release-hold and `ledger release-hold`, the DAG's release_holds parameter)."""
    policy_id, sep, period = str(text).partition(":")
    policy_id, period = policy_id.strip(), period.strip()
    if not sep or not policy_id or not period:
        raise ValueError(f"应写作 政策编号:期次，例如 WL-KJ-2026-01:2026：{text!r}")
    return policy_id, period


def parse_holds(values) -> tuple[tuple[str, str], ...]:
    """`["WL-KJ-2026-01:2026", …]` → ((policy_id, period), …)."""
    return tuple(parse_hold(value) for value in values or ())
