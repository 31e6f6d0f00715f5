"""The nightly pipeline as one call: what `mianshen run` does in one process.

The DAG `mianshen_nightly` calls the very same stage functions, one task per
stage (and per feed), so a run through the CLI and a run through Airflow
produce the same files and ledger.
"""
from __future__ import annotations

import logging
from datetime import date

from pipelines.config import Settings
from pipelines.contracts import FEED_ORDER

log = logging.getLogger(__name__)


def ingest_all(settings: Settings, as_of: date) -> dict[str, dict]:
    from pipelines import ingest

    return {feed: ingest.ingest_feed(settings, feed, as_of) for feed in FEED_ORDER}


def validate_all(settings: Settings, as_of: date, accept_drift: bool = False) -> dict[str, dict]:
    from pipelines import validate

    # The registry first: every other feed's referential check reads it.
    return {feed: validate.validate_feed(settings, feed, as_of, accept_drift=accept_drift) for feed in FEED_ORDER}


def downstream(settings: Settings, as_of: date, run_id: str, release_holds=()) -> dict:
    """Everything after the gate: portrait, match, ledger and the lists handed on, the report."""
    from pipelines import ledger, match, portrait, report

    portrait_path = portrait.build(settings, as_of)
    match_summary = match.run(settings, as_of)
    ledger_summary = ledger.ledger_and_outputs(settings, as_of, run_id, release_holds=release_holds)
    report_path = report.write(settings, as_of, run_id)
    return {
        "portrait": str(portrait_path),
        "match": match_summary,
        "ledger": ledger_summary,
        "report": str(report_path),
    }


def run(settings: Settings, as_of: date, run_id: str | None = None, accept_drift: bool = False,
        release_holds=()) -> dict:
    """Ingest, validate, gate, then everything downstream. Raises validate.GateClosed."""
    from pipelines import validate

    run_id = run_id or f"cli__{as_of.isoformat()}"
    ingest_all(settings, as_of)
    validate_all(settings, as_of, accept_drift=accept_drift)
    try:
        validate.gate(settings, as_of)
    except validate.GateClosed:
        from pipelines import report

        report.write(settings, as_of, run_id)
        raise
    return downstream(settings, as_of, run_id, release_holds=release_holds)
