"""The nightly pipeline: its stage functions, and the whole night as one call.

`mianshen run` calls `run`, which calls the stage functions in order; the DAG
`mianshen_nightly` calls each of the very same functions from one task (per
feed where a stage is per feed), so a run through the CLI and a run through
Airflow send the same alerts and produce the same files and ledger.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from datetime import date, datetime, timezone
from pathlib import Path

from pipelines.config import Settings
from pipelines.contracts import FEED_ORDER
from pipelines.files import read_json

log = logging.getLogger(__name__)


class StageMeter:
    """Wall time and peak resident memory of each stage of one run, in this process.

    A thread samples the resident set size every 20 ms while a stage runs; the
    peak includes what earlier stages still hold, which is what the machine
    sees. Used by `mianshen run --timings` and the benchmark."""

    def __init__(self):
        self.stages: dict[str, dict] = {}

    @staticmethod
    def rss() -> int:
        """This process's resident set, and its child processes' (the feeds' workers)."""
        import psutil

        me = psutil.Process()
        total = me.memory_info().rss
        for child in me.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:   # it ended meanwhile
                pass
        return total

    @contextlib.contextmanager
    def stage(self, name: str):
        import gc

        import pyarrow as pa

        gc.collect()
        pa.default_memory_pool().release_unused()   # what the last stage freed goes back first
        peak = [self.rss()]
        stop = threading.Event()

        def sample():
            while not stop.wait(0.02):
                peak[0] = max(peak[0], self.rss())

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.perf_counter()
        try:
            yield
        finally:
            stop.set()
            sampler.join()
            self.stages[name] = {"seconds": round(time.perf_counter() - started, 2),
                                 "peak_mib": round(max(peak[0], self.rss()) / 2**20)}


def _stage(meter: "StageMeter | None", name: str):
    return meter.stage(name) if meter is not None else contextlib.nullcontext()


def _ingest_one(settings: Settings, feed: str, as_of: date) -> dict:
    from pipelines import ingest

    return ingest.ingest_feed(settings, feed, as_of)


def _validate_one(settings: Settings, feed: str, as_of: date, accept_drift: bool) -> dict:
    from pipelines import validate

    return validate.validate_feed(settings, feed, as_of, accept_drift=accept_drift)


def feed_pool(settings: Settings):
    """Worker processes for the feeds (settings.feed_workers), or None to work in this process.
    forkserver: the workers do not inherit the meter's sampling thread."""
    if settings.feed_workers <= 1:
        return contextlib.nullcontext(None)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(max_workers=min(settings.feed_workers, len(FEED_ORDER)),
                               mp_context=multiprocessing.get_context("forkserver"))


def _each(pool, work, feeds, *args) -> dict[str, dict]:
    if pool is None:
        return {feed: work(*args[:1], feed, *args[1:]) for feed in feeds}
    futures = {feed: pool.submit(work, *args[:1], feed, *args[1:]) for feed in feeds}
    return {feed: future.result() for feed, future in futures.items()}


def ingest_all(settings: Settings, as_of: date, pool=None) -> dict[str, dict]:
    """Every feed's ingest; in `pool`'s processes when given (feeds are independent, as the
    DAG's ingest tasks are)."""
    return _each(pool, _ingest_one, FEED_ORDER, settings, as_of)


def validate_all(settings: Settings, as_of: date, accept_drift: bool = False, pool=None) -> dict[str, dict]:
    # The registry first: every other feed's referential check reads it (the DAG's order).
    out = _each(pool, _validate_one, FEED_ORDER[:1], settings, as_of, accept_drift)
    out.update(_each(pool, _validate_one, FEED_ORDER[1:], settings, as_of, accept_drift))
    if pool is not None:
        from pipelines import gx_suites

        gx_suites.rebuild_index(settings.quality_dir(as_of))
    return out


# ---------------------------------------------------------------- the stages after validation
#
# One function per DAG task, called by that task and by `run` alike, so the CLI and
# Airflow send the same alerts and write the same files.

def quality_gate(settings: Settings, as_of: date) -> dict:
    """The gate over the night's verdicts. When it closes, each department whose feed is
    missing, stale or rejected is alerted, then validate.GateClosed propagates: stale or
    rejected data never reaches matching."""
    from pipelines import alerts, report, validate

    try:
        return validate.gate(settings, as_of)
    except validate.GateClosed:
        for alert in alerts.gate_alerts(report.feed_verdicts(settings, as_of)):
            alerts.send(alert)
        raise


def match_policies(settings: Settings, as_of: date, release_holds=()) -> dict:
    """Matching in one process (`mianshen run`), then the over-budget alerts."""
    from pipelines import alerts, match

    summary = match.run(settings, as_of)
    alerts.alert_over_budget(settings, summary, release_holds)
    return summary


def merge_matches(settings: Settings, as_of: date, shards: int, release_holds=()) -> dict:
    """The DAG's matching: merge the shards (budgets applied once), then the over-budget alerts."""
    from pipelines import alerts, match

    summary = match.merge(settings, as_of, shards)
    alerts.alert_over_budget(settings, summary, release_holds)
    return summary


def finish_run(settings: Settings, as_of: date, run_id: str, started_at: datetime) -> Path:
    """Whatever happened before: record the run's audit (inputs, status, true start and end)
    and write the run report; returns the report's path."""
    from pipelines import report

    record_audit(settings, as_of, run_id, run_status(settings, as_of, started_at), started_at)
    return report.write(settings, as_of, run_id)


def downstream(settings: Settings, as_of: date, run_id: str, release_holds=(),
               meter: StageMeter | None = None, started_at: datetime | None = None) -> dict:
    """Everything after the gate: portrait, match, ledger and the lists handed on, the report."""
    # Every module of the stages below is loaded before the first of them is timed, so a
    # stage's time is its work, as the benchmark's DuckDB reference is timed (it loads DuckDB
    # first): at 100k enterprises, loading them was a third of the match stage.
    from pipelines import alerts, handoff, match, portrait, report  # noqa: F401

    started_at = started_at or datetime.now(timezone.utc)
    with _stage(meter, "portrait"):
        portrait_path = portrait.build(settings, as_of)
    with _stage(meter, "match"):
        match_summary = match_policies(settings, as_of, release_holds)
    with _stage(meter, "ledger_outputs"):
        ledger_summary = handoff.ledger_and_outputs(settings, as_of, run_id, release_holds=release_holds)
        report_path = finish_run(settings, as_of, run_id, started_at)
    return {
        "portrait": str(portrait_path),
        "match": match_summary,
        "ledger": ledger_summary,
        "report": str(report_path),
    }


def run(settings: Settings, as_of: date, run_id: str | None = None, accept_drift: bool = False,
        release_holds=(), meter: StageMeter | None = None) -> dict:
    """The whole night in one process: ingest, validate, gate, then everything downstream.
    Raises validate.GateClosed (after the alerts and the report).
    `meter` (optional) records each stage's wall time and peak memory."""
    from pipelines import validate, warehouse

    run_id = run_id or f"cli__{as_of.isoformat()}"
    started_at = datetime.now(timezone.utc)
    # The warehouse first (reached, its schema brought up to date): a night whose warehouse is
    # unreachable stops before the feeds are read, and no stage's time holds the migration check.
    warehouse.connect(settings.warehouse_url)
    with feed_pool(settings) as pool:
        with _stage(meter, "ingest"):
            ingest_all(settings, as_of, pool)
        try:
            with _stage(meter, "validate"):
                validate_all(settings, as_of, accept_drift=accept_drift, pool=pool)
                quality_gate(settings, as_of)
        except validate.GateClosed:
            finish_run(settings, as_of, run_id, started_at)
            raise
    return downstream(settings, as_of, run_id, release_holds, meter, started_at)


def record_audit(settings: Settings, as_of: date, run_id: str, status: str,
                 started_at: datetime | None = None) -> None:
    """What the run read (each delivery file with its sha256, each policy file and each
    name list that joined it, with its hash), when it started and how it ended, so any
    result can be explained later."""
    from pipelines import match, warehouse

    feeds = []
    for feed in FEED_ORDER:
        summary = read_json(settings.ingest_summary_path(feed, as_of))
        verdict = read_json(settings.verdict_path(feed, as_of))
        if summary is None or verdict is None:
            continue
        delivered = summary.get("delivery_date")
        for info in summary.get("files") or []:
            feeds.append({
                "name": f"{feed}/{info['name']}",
                "delivered_on": date.fromisoformat(delivered) if delivered else None,
                "sha256": info["sha256"],
                "accepted": verdict.get("status") == "accepted",
            })
    policy_files = sorted(settings.policies.glob("*.y*ml")) if settings.policies.exists() else []
    name_lists = match.name_lists_used(settings, as_of) if status == "success" else []
    started = started_at.astimezone(timezone.utc).replace(tzinfo=None) if started_at else None
    engine = warehouse.connect(settings.warehouse_url)
    with engine.begin() as conn:
        warehouse.record_run(conn, run_id, as_of, status, started_at=started, finished_at=warehouse.utcnow())
        warehouse.record_inputs(conn, run_id, feeds=feeds, policy_files=policy_files, name_lists=name_lists)
        portrait_path = settings.portrait_path(as_of)
        if status == "success" and portrait_path.exists():
            import pyarrow.parquet as pq

            warehouse.record_portrait(conn, as_of, portrait_path, pq.ParquetFile(portrait_path).metadata.num_rows,
                                      run_id=run_id)


def run_status(settings: Settings, as_of: date, started_at) -> str:
    """'success' when this run got as far as the ledger (it writes ledger.json last)."""
    ledger_json = settings.ledger_summary_path(as_of)
    if not ledger_json.exists() or started_at is None:
        return "failed"
    return "success" if ledger_json.stat().st_mtime >= started_at.timestamp() else "failed"
