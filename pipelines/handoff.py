"""The ledger-and-lists stage: what a nightly run hands on.

`ledger_and_outputs` runs after matching: it stores the run's matches, syncs
the ledger (催办 and 逾期未确认 included), and writes under output/<as_of>/ the
SMS outbox, the review workbooks, the publicity lists, the payout lists, the
three reminder lists per department, the published 惠企政策清单 / 办事指南清单
(lists/) and the 督导统计 (oversight/). Each
list is built from the database after its state moves are committed, so a
rerun of the same date (after a crash anywhere) writes the same files.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Iterable, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import sqlalchemy as sa
import yaml

from pipelines import alerts, deadlines, ledger, oversight, recheck, warehouse
from pipelines.config import Settings
from pipelines.outputs import oversight as oversight_sheet
from pipelines.outputs import payout, publicity, published, reminders, review, sms, supervision
from pipelines.policies import load_dir
from pipelines.files import atomic_write_bytes, read_json
from pipelines.orchestration import parse_hold
from pipelines.outputs.workbook import clear_stale
from pipelines.workdays import WorkCalendar

log = logging.getLogger(__name__)
UNIT = "卧龙区惠企政策“免申即享”服务平台"


def publicity_days(policies_dir: Path) -> dict[str, int | None]:
    """policy id -> publicity_days, read straight from the YAML files.

    Only these two keys are needed here, so a file the policy checker would
    refuse for another reason still contributes (its results are not in the
    run anyway); unreadable files are skipped."""
    out: dict[str, int | None] = {}
    if not policies_dir or not Path(policies_dir).is_dir():
        return out
    for path in sorted(Path(policies_dir).glob("*.y*ml")):
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError, UnicodeDecodeError):
            continue
        if isinstance(doc, dict) and doc.get("id") is not None:
            days = doc.get("publicity_days")
            out[str(doc["id"])] = int(days) if isinstance(days, int) and days > 0 else None
    return out


def phones(settings: Settings, as_of: date) -> pa.Table:
    """The portrait's (uscc, phone) of every enterprise that has both, as Arrow columns
    (a province's million enterprises; the SMS outbox looks its codes up batch by batch)."""
    path = settings.portrait_path(as_of)
    if not path.exists():
        return pa.table({"uscc": pa.array([], pa.string()), "phone": pa.array([], pa.string())})
    table = pq.read_table(path, columns=["uscc", "phone"])
    known = pc.and_(pc.not_equal(pc.fill_null(table.column("uscc"), ""), ""),
                    pc.not_equal(pc.fill_null(table.column("phone"), ""), ""))
    return table.filter(known)


def _sms_batches(conn, as_of: date):
    """(kind, ledger rows) batches of the date's outbox: first notices, then 催办."""
    for kind, which in ((sms.FIRST, ledger.ledger.c.notified_as_of == as_of),
                        (sms.REMINDER, ledger.ledger.c.reminded_as_of == as_of)):
        for table in ledger.stream(conn, ledger.sms_query(which)):
            yield kind, table


def _hold(hold) -> tuple[str, str, str]:
    """(policy_id, period, operator) of a "POLICY:PERIOD" string or a (policy_id, period[, operator]) tuple."""
    if isinstance(hold, str):
        return (*parse_hold(hold), "操作员")
    policy_id, period, *rest = hold
    return str(policy_id), str(period), rest[0] if rest else "操作员"


def _release(conn, holds: Iterable) -> int:
    return sum(ledger.release_budget_hold(conn, *_hold(hold)) for hold in holds)


def _requested(holds: Iterable) -> set[tuple[str, str]]:
    return {_hold(hold)[:2] for hold in holds}


def ledger_and_outputs(settings: Settings, as_of: date, run_id: str,
                       release_holds: Iterable = ()) -> dict:
    """Sync the ledger from output/<as_of>/matches.parquet and write every list.

    release_holds: (policy_id, period[, operator]) tuples or "policy_id:period"
    strings whose over-budget hold an operator releases with this run.
    Returns JSON-able counts.

    The whole step holds the warehouse's ledger-step lock
    (`warehouse.ledger_step_lock`): a second run of the same date, or of
    another date, waits and then finds the work done, instead of racing this
    one for the same rows and the same files."""
    engine = warehouse.connect(settings.warehouse_url)
    with warehouse.ledger_step_lock(engine):
        return _ledger_and_outputs(settings, as_of, run_id, release_holds, engine)


def _ledger_and_outputs(settings: Settings, as_of: date, run_id: str, release_holds: Iterable,
                        engine) -> dict:
    # A backfill: a later date has already been through this step. The ledger
    # has moved on from this date, so this run moves nothing (no sync, no
    # notification, no publicity start, no batch) and rewrites the date's
    # lists from what was recorded for it (SMS by notified_as_of, payout by
    # batch date); the lists that show the ledger's state at the time
    # (review, publicity) and ledger.json stay as the date's run wrote them.
    with engine.connect() as conn:
        newest = warehouse.newest_night(conn, other_than=as_of)
        conn.rollback()
    backfill = newest is not None and newest > as_of
    recorded = read_json(settings.ledger_summary_path(as_of)) if backfill else None
    with _near_miss_and_gaps_beside(settings, as_of, start=recorded is None) as lists_job:
        return _hand_on(settings, as_of, run_id, release_holds, engine, backfill, recorded, lists_job)


# A night with this many results writes its 差一项 and 数据缺口 lists in a second process beside
# the ledger work (reminders.ListsJob): at 1M enterprises x 200 policies (88M results) they
# are minutes of work. A smaller night writes them in line: there they take well under a
# minute, and the second process's own portrait and staging (1-3 GB) would count against
# the night's memory beside the ledger's.
SEPARATE_LISTS_FROM_RESULTS = 20_000_000


@contextlib.contextmanager
def _near_miss_and_gaps_beside(settings: Settings, as_of: date, start: bool):
    """A `reminders.ListsJob` writing the night's 差一项 and 数据缺口 lists while the stage
    syncs the ledger (or None: a small night, one core, or a backfill that rewrites no lists);
    stopped if the stage fails before it takes the job's result."""
    results = settings.matches_path(as_of)
    if not (start and (os.cpu_count() or 1) > 1
            and pq.ParquetFile(results).metadata.num_rows >= SEPARATE_LISTS_FROM_RESULTS):
        yield None
        return
    job = reminders.ListsJob(settings.reminders_dir(as_of), as_of, results, settings.portrait_path(as_of),
                             settings.policies, UNIT, settings.work / "lists")
    try:
        yield job
    finally:
        job.stop()


def _hand_on(settings: Settings, as_of: date, run_id: str, release_holds: Iterable, engine, backfill: bool,
             recorded: dict | None, lists_job: reminders.ListsJob | None) -> dict:
    run_dir = settings.run_dir(as_of)
    # The night's results stay in matches.parquet (the warehouse registers it) and are read
    # piece by piece, never whole: the ledger gets only the eligible rows, the reminder
    # lists the columns they show.
    results = settings.matches_path(as_of)
    days = publicity_days(settings.policies)
    loaded, policy_errors = load_dir(settings.policies)   # once: every list below reads these
    policies = {p.id: p for p in loaded}
    calendar = WorkCalendar(settings.calendar)

    days_of = deadlines.days_of(policies)
    with engine.begin() as conn:
        warehouse.register_matches(conn, as_of, results, run_id)
        _release(conn, release_holds)
        if not backfill:
            # 催办 and 逾期未确认 before tonight's new SMS (a result told tonight owes nothing yet)
            ledger.remind_and_expire(conn, as_of, run_id, calendar, days_of)
            # streamed: a province's first night has millions of eligible rows with their evidence;
            # the new ones enter told (notify=True), as `notify` below would move them
            eligible = ds.dataset(results).to_batches(
                columns=["policy_id", "period", "uscc", "amount", "evidence_version", "evidence_actual",
                         "evidence_result", "policy_name", "department", "name", "over_budget", "outcome", "kind"],
                filter=(ds.field("outcome") == "eligible") & (ds.field("kind") != "manual"))
            ledger.sync_from_matches(conn, as_of, eligible, run_id, days, notify=True)
        # Counted from what is committed, not from what this attempt did: a rerun
        # after a crash finds the work done and must report the same figures.
        synced = ledger.date_counts(conn, as_of, run_id)
        released = len(_requested(release_holds) & ledger.released_holds(conn))

    with engine.begin() as conn:
        notified = (ledger.count(conn, ledger.ledger.c.notified_as_of == as_of) if backfill
                    else ledger.notify(conn, as_of, run_id))
        reminded = ledger.count(conn, ledger.ledger.c.reminded_as_of == as_of)
        expired = conn.execute(sa.select(sa.func.count()).select_from(warehouse.ledger_transitions).where(
            warehouse.ledger_transitions.c.to_status == "expired",
            warehouse.ledger_transitions.c.as_of == as_of)).scalar_one()
    if recorded is not None:
        review_files = _listed(run_dir / "review")
        publicity_files = _listed(run_dir / "publicity")
        confirmed = [None] * int(recorded.get(REPORT_LABELS["review_rows"], 0))
        in_window = [None] * int(recorded.get(REPORT_LABELS["publicity_rows"], 0))
    else:
        with engine.connect() as conn:
            confirmed = ledger.with_evidence(conn, ledger.rows_in(conn, "confirmed"))
            conn.rollback()
        review_files = review.write(run_dir, as_of, confirmed, UNIT)

        with engine.begin() as conn:
            in_window = ledger.in_publicity(conn, as_of) if backfill else ledger.start_publicity(conn, as_of, calendar)
        publicity_files = publicity.write(run_dir, as_of, in_window, UNIT)
        clear_stale(run_dir / "publicity", publicity_files)

    new_batch, rechecked = None, {"resumed": 0, "suspended": 0}
    if not backfill:
        # 再确认: the rows about to be paid and the suspended ones, against tonight's data
        with engine.connect() as conn:
            candidates = ledger.rows_in(conn, "suspended") + ledger.payable(conn, as_of)[0]
            conn.rollback()
        findings = recheck.findings(settings, as_of, candidates, policies)
        if findings is None:
            log.warning("ledger %s: no portrait to re-check against; nothing is scheduled tonight", as_of)
        else:
            with engine.begin() as conn:
                rechecked = ledger.apply_recheck(conn, run_id, findings, as_of)
                new_batch = ledger.schedule_payout(conn, as_of, run_id)
    if recorded is None:
        with engine.connect() as conn:
            suspended = ledger.with_evidence(conn, ledger.rows_in(conn, "suspended"))
            conn.rollback()
        review_files += review.write_recheck(run_dir, as_of, suspended, UNIT)
        clear_stale(run_dir / "review", review_files)
    with engine.begin() as conn:
        items = ledger.batch_rows(conn, as_of)
        _, held = ledger.payable(conn, as_of)
    payout_files = payout.write(run_dir, as_of, items, UNIT, policies)
    clear_stale(run_dir / "payout", payout_files)

    # The night's moves end here; from now on the stage only reads the ledger. So 督导统计 (replayed
    # from the ledger's log up to as_of: a few statements the database runs for a minute at a
    # province's scale, without holding the interpreter) and the SMS outbox (the rows told or
    # reminded tonight, which no later move changes) are each put together in a thread of their
    # own, on a connection of their own, beside the lists below.
    with ThreadPoolExecutor(2, thread_name_prefix="readers") as beside:
        replayed = beside.submit(_oversight_figures, engine, as_of, calendar, days_of)
        outbox = beside.submit(_sms_outbox, settings, as_of, run_dir, engine, notified + reminded, policies,
                               calendar)
        read = _lists_that_only_read(settings, as_of, run_dir, engine, results, loaded, policy_errors, calendar,
                                     recorded, lists_job)
        sms_files, figures = outbox.result(), replayed.result()
    oversight_files = oversight_sheet.write(run_dir, as_of, figures, UNIT)
    overdue = {label: sum(f[f"overdue_{k}"] for f in figures["figures"])
               for k, label in deadlines.OVERDUE_KINDS.items()}

    total = sum((r["amount"] for r in items), Decimal("0.00"))
    summary = {
        "as_of": str(as_of),
        "run_id": run_id,
        "matches": pq.ParquetFile(results).metadata.num_rows,
        "ledger_new": synced["new"],
        "ledger_amount_changed": synced["amount_changed"],
        "holds_released": released,
        "sms": notified,
        "sms_reminders": reminded,
        "expired": expired,
        "overdue": sum(overdue.values()),
        "review_rows": len(confirmed),
        "recheck_suspended": rechecked["suspended"],
        "recheck_resumed": rechecked["resumed"],
        "suspended_rows": len(suspended) if recorded is None else int(
            recorded.get(REPORT_LABELS["suspended_rows"], 0)),
        "review_files": len(review_files),
        "publicity_rows": len(in_window),
        "publicity_files": len(publicity_files),
        "payout_batches": sorted({r["batch_id"] for r in items}),
        "payout_new_batch": new_batch,
        "payout_items": len(items),
        "payout_total": str(total),
        "held_over_budget": len(held),
        "held_policies": sorted({f"{r['policy_id']}:{r['period']}" for r in held}),
        "reminders": read.unclaimed,
        "reminder_lists": read.reminder_summary,
        "supervision_rows": read.watched_rows,
        "files": [str(Path(p).relative_to(run_dir))
                  for p in sms_files + review_files + publicity_files + payout_files
                  + read.supervision_files + read.reminder_paths + read.list_files + oversight_files],
    }
    # The run report shows ledger.json's scalar entries as they are: Chinese labels.
    shown = {label: summary[key] for key, label in REPORT_LABELS.items()}
    shown["拨付批次"] = summary["payout_batches"]
    shown["超预算暂停的政策"] = summary["held_policies"]
    shown["逾期事项（按类别）"] = overdue
    if calendar.warnings:   # a deadline counted without the year's holiday arrangement
        summary["calendar_warnings"] = calendar.warnings
        shown["工作日历提示"] = "；".join(calendar.warnings)
        alerts.send(alerts.Alert(kind="calendar", title="【免申即享】工作日历缺少节假日安排",
                                 text="\n".join(calendar.warnings)))
    summary["backfill"] = backfill
    # Written last (nightly.run_status reads its time); a backfill writes back what was recorded.
    atomic_write_bytes(settings.ledger_summary_path(as_of),
                       json.dumps(shown if recorded is None else recorded, ensure_ascii=False,
                                  indent=2).encode("utf-8"))
    return summary


def _sms_outbox(settings: Settings, as_of: date, run_dir: Path, engine, rows: int, policies: dict,
                calendar: WorkCalendar) -> list[Path]:
    """The night's SMS outbox (first notices, then 催办), read back in batches: a province's first
    night tells millions."""
    sms_files = []
    if rows:
        with warehouse.reader(engine) as conn:
            sms_files = sms.write(run_dir, as_of, _sms_batches(conn, as_of), rows, phones(settings, as_of), UNIT,
                                  policies, calendar)
    clear_stale(run_dir / "sms", sms_files)
    return sms_files


def _oversight_figures(engine, as_of: date, calendar: WorkCalendar, days_of) -> dict:
    with warehouse.reader(engine) as conn:
        return oversight.compute(conn, as_of, calendar, days_of)


class _ReadLists(NamedTuple):
    supervision_files: list[Path]
    reminder_paths: list[Path]
    list_files: list[Path]
    watched_rows: int
    unclaimed: int
    reminder_summary: dict


def _lists_that_only_read(settings: Settings, as_of: date, run_dir: Path, engine, results: Path, loaded,
                          policy_errors, calendar: WorkCalendar, recorded: dict | None,
                          lists_job: reminders.ListsJob | None) -> _ReadLists:
    """The lists that only read the ledger, written after its last move of the night: 事后监管,
    the reminder lists and the published lists."""
    if recorded is None:
        # The lists that show the ledger's state tonight; a backfill keeps what the date's run wrote.
        with warehouse.reader(engine) as conn:
            applied = ledger.applications(conn)
            paid = ledger.paid_since(conn, supervision.since(as_of))
        watched = supervision.rows(paid, recheck.enterprise_facts(settings, as_of, (r["uscc"] for r in paid)))
        supervision_files = supervision.write(run_dir, as_of, watched, UNIT)
        clear_stale(run_dir / "supervision", supervision_files)
        with warehouse.reader(engine) as conn:   # the unanswered rows are read while the lists are written
            unanswered = reminders.Unanswered(ledger.unanswered_groups(conn),
                                              lambda ranks: ledger.stream_unanswered(conn, ranks))
            reminder = reminders.write(settings.reminders_dir(as_of), as_of, results,
                                       settings.portrait_path(as_of), unanswered, loaded, UNIT, calendar, applied,
                                       scratch=settings.work / "lists",
                                       near_miss_and_gaps=lists_job.result if lists_job else None)
        clear_stale(settings.reminders_dir(as_of), reminder.paths)
        watched_rows, reminder_paths = len(watched), reminder.paths
        unclaimed, reminder_summary = reminder.unclaimed_rows, reminder.summary
    else:
        supervision_files, reminder_paths = _listed(run_dir / "supervision"), _listed(settings.reminders_dir(as_of))
        watched_rows = int(recorded.get(REPORT_LABELS["supervision_rows"], 0))
        unclaimed = int(recorded.get(REPORT_LABELS["reminders"], 0))
        reminder_summary = read_json(settings.reminder_summary_path(as_of)) or {}
    list_files = published.publish(settings, as_of, loaded, policy_errors, UNIT)
    return _ReadLists(supervision_files, reminder_paths, list_files, watched_rows, unclaimed, reminder_summary)


def _listed(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []


REPORT_LABELS = {
    "ledger_new": "新增台账（新符合条件）",
    "ledger_amount_changed": "待通知结果金额调整",
    "sms": "短信待发（转为已通知）",
    "sms_reminders": "催办短信",
    "expired": "本次逾期未确认",
    "overdue": "逾期事项（审核、公示、拨付、确认）",
    "review_rows": "待部门审核",
    "recheck_suspended": "再确认未通过（本次暂缓拨付）",
    "recheck_resumed": "再确认恢复（暂缓转审核通过）",
    "suspended_rows": "暂缓拨付待复核",
    "publicity_rows": "公示中",
    "payout_items": "列入拨付清单",
    "payout_total": "拨付金额合计（元）",
    "held_over_budget": "超预算暂停拨付",
    "holds_released": "本次解除超预算暂停",
    "reminders": "应享未享提醒",
    "supervision_rows": "事后监管（已拨付企业现失信或注销、吊销）",
}
