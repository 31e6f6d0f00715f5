"""Settings from the environment, in one place.

In production the same variables are set on the Airflow workers (or read from
Airflow Variables by the DAGs); nothing else in the package reads os.environ.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from pipelines.files import restrict_umask

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = PROJECT_ROOT / "data"


@dataclass(frozen=True)
class Settings:
    landing: Path          # <landing>/<feed>/<YYYY-MM-DD>/ as departments deliver
    inbox: Path            # <inbox>/<policy_id>/ name lists, <inbox>/_confirmations/ ...
    policies: Path         # one YAML file per policy
    output: Path           # <output>/<as_of>/ everything a run hands on
    work: Path             # staged/, quarantine/, portrait/, archive/ ...: the pipeline's own layers
    warehouse_url: str     # SQLAlchemy URL
    expectations: Path     # GX suites
    # Operator's working-day calendars <calendar>/<year>.yaml for years the holiday
    # library does not know yet (pipelines/workdays.py).
    calendar: Path = DEFAULT_DATA / "calendar"
    landing_configured: bool = True  # False when falling back to the demo landing folder
    # feed -> (SQLAlchemy URL or airflow://<conn_id>, table name or SELECT): feeds
    # pulled from a department's exchange database instead of the file drop.
    sources: dict[str, tuple[str, str]] = field(default_factory=dict)
    # Resource limits for received files (pipelines/received.py): file size,
    # declared uncompressed size of an .xlsx, rows of one sheet.
    max_file_mb: int = 100
    max_unzipped_mb: int = 500
    max_rows: int = 1_048_576
    # Shards of enterprises the nightly DAG's matching is mapped over (MIANSHEN_MATCH_SHARDS).
    match_shards: int = 1
    # Processes `mianshen run` ingests and validates the feeds in, as the DAG's parallel
    # tasks do (MIANSHEN_FEED_WORKERS; 1: one after the other in the run's own process).
    feed_workers: int = 1

    # The address of every layer, in one place: nothing else in the package
    # spells out a layer's folder or file name.
    @property
    def staged(self) -> Path:
        return self.work / "staged"

    @property
    def quarantine(self) -> Path:
        return self.work / "quarantine"

    @property
    def portraits(self) -> Path:
        return self.work / "portrait"

    @property
    def namelists(self) -> Path:
        """Accepted name lists (one Parquet file per accepted workbook)."""
        return self.work / "namelists"

    @property
    def gx_root(self) -> Path:
        return self.work / "gx"

    def validation_cache_dir(self, feed: str) -> Path:
        """GX results of deliveries already validated, kept so the same delivery under the
        same suite is not validated again (pipelines/gx_reuse.py)."""
        return self.work / "validation_cache" / feed

    def validation_cache_path(self, feed: str, key: str) -> Path:
        """One cached GX run: the rule results and what they were computed from."""
        return self.validation_cache_dir(feed) / f"{key}.json"

    def validation_cache_result_path(self, feed: str, key: str) -> Path:
        """The cached run's GX validation result as its results store wrote it (Data Docs are rebuilt from it)."""
        return self.validation_cache_dir(feed) / f"{key}.gx.json"

    def staged_path(self, feed: str, delivery) -> Path:
        return self.staged / feed / f"{delivery}.parquet"

    def quarantine_path(self, feed: str, delivery) -> Path:
        return self.quarantine / feed / f"{delivery}.parquet"

    def validated_dir(self, feed: str) -> Path:
        """Accepted deliveries of a feed, kept for the nights after (`<delivery>.parquet` + `.json`)."""
        return self.work / "validated" / feed

    def validated_path(self, feed: str, delivery) -> Path:
        return self.validated_dir(feed) / f"{delivery}.parquet"

    def portrait_path(self, as_of) -> Path:
        return self.portraits / f"{as_of}.parquet"

    def portrait_dates(self) -> list[date]:
        """The run dates that have a portrait, oldest first."""
        found = []
        for path in self.portraits.glob("*.parquet") if self.portraits.is_dir() else ():
            try:
                found.append(date.fromisoformat(path.stem))
            except ValueError:
                continue
        return sorted(found)

    def run_dir(self, as_of) -> Path:
        return self.output / str(as_of)

    def quality_dir(self, as_of) -> Path:
        return self.run_dir(as_of) / "quality"

    def suite_path(self, feed: str) -> Path:
        """The feed's Great Expectations suite (expectations/<feed>.json)."""
        return self.expectations / f"{feed}.json"

    def ingest_summary_path(self, feed: str, as_of) -> Path:
        return self.quality_dir(as_of) / f"{feed}.ingest.json"

    def verdict_path(self, feed: str, as_of) -> Path:
        return self.quality_dir(as_of) / f"{feed}.json"

    def gate_path(self, as_of) -> Path:
        return self.quality_dir(as_of) / "gate.json"

    def data_docs_dir(self, as_of) -> Path:
        return self.quality_dir(as_of) / "data_docs"

    def matches_path(self, as_of) -> Path:
        return self.run_dir(as_of) / "matches.parquet"

    def policy_errors_path(self, as_of) -> Path:
        return self.run_dir(as_of) / "policy_errors.json"

    def shard_dir(self, as_of) -> Path:
        return self.work / "match_shards" / str(as_of)

    def shard_path(self, as_of, shard: int, shards: int) -> Path:
        return self.shard_dir(as_of) / f"shard-{shard}-of-{shards}.parquet"

    def ledger_summary_path(self, as_of) -> Path:
        return self.run_dir(as_of) / "ledger.json"

    def report_path(self, as_of) -> Path:
        return self.run_dir(as_of) / "report.html"

    def report_figures_path(self, as_of) -> Path:
        return self.run_dir(as_of) / "report.json"

    def reminders_dir(self, as_of) -> Path:
        """The three reminder lists per department."""
        return self.run_dir(as_of) / "reminders"

    def reminder_summary_path(self, as_of) -> Path:
        return self.reminders_dir(as_of) / "summary.json"

    def lists_dir(self, as_of) -> Path:
        """The published 惠企政策清单 and 办事指南清单 (and the manifest the next publication compares with)."""
        return self.run_dir(as_of) / "lists"


def load_settings(env: dict[str, str] | None = None) -> Settings:
    """The settings; also, once per process, the umask the pipeline writes with.

    Every entry point (CLI command, DAG task, inbox pass) reads its settings
    here before it writes anything, so this is the one place that makes the
    files under output/, work/ and the inbox not world-readable (umask 027:
    folders 0750, files 0640; a stricter umask is kept)."""
    restrict_umask()
    env = os.environ if env is None else env
    data = Path(env.get("MIANSHEN_DATA", DEFAULT_DATA))
    work = Path(env.get("MIANSHEN_WORK", data / "work"))
    warehouse = env.get("MIANSHEN_WAREHOUSE_URL") or f"sqlite:///{work / 'warehouse.db'}"
    return Settings(
        landing=Path(env.get("MIANSHEN_LANDING", data / "landing")),
        inbox=Path(env.get("MIANSHEN_INBOX", data / "inbox")),
        policies=Path(env.get("MIANSHEN_POLICIES", DEFAULT_DATA / "policies")),
        output=Path(env.get("MIANSHEN_OUTPUT", data / "output")),
        work=work,
        warehouse_url=warehouse,
        expectations=Path(env.get("MIANSHEN_EXPECTATIONS", PROJECT_ROOT / "expectations")),
        calendar=Path(env.get("MIANSHEN_CALENDAR", DEFAULT_DATA / "calendar")),
        landing_configured="MIANSHEN_LANDING" in env,
        sources=_sources(env),
        max_file_mb=_positive(env, "MIANSHEN_MAX_FILE_MB", 100),
        max_unzipped_mb=_positive(env, "MIANSHEN_MAX_UNZIPPED_MB", 500),
        max_rows=_positive(env, "MIANSHEN_MAX_ROWS", 1_048_576),
        match_shards=_positive(env, "MIANSHEN_MATCH_SHARDS", 1),
        feed_workers=_positive(env, "MIANSHEN_FEED_WORKERS", min(2, os.cpu_count() or 1)),
    )


def _positive(env, key: str, default: int) -> int:
    raw = env.get(key)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{key}={raw!r} is not a whole number") from None
    if value <= 0:
        raise ValueError(f"{key}={raw!r} must be positive")
    return value


def _sources(env) -> dict[str, tuple[str, str]]:
    """MIANSHEN_SOURCE_<FEED>=<url> with MIANSHEN_SOURCE_<FEED>_QUERY=<table or SELECT>."""
    prefix = "MIANSHEN_SOURCE_"
    out: dict[str, tuple[str, str]] = {}
    for key, url in env.items():
        if key.startswith(prefix) and not key.endswith("_QUERY") and url:
            query = env.get(key + "_QUERY")
            if query:
                out[key[len(prefix):].lower()] = (url, query)
    return out
