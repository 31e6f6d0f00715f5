"""mianshen_inbox: take every file dropped into the inbox, exactly once, and answer it.

Why a five-minute schedule and not a sensor or an asset watcher: Airflow 3's
event-driven scheduling (AssetWatcher) needs a trigger that fires on "any new
file in this folder", and none ships for a local or mounted folder; a
FileSensor would hold a worker slot (or a triggerer) waiting, and still needs
to know a file name. A poll every five minutes costs one directory listing
when nothing arrived, survives restarts with nothing to resume (the state is
the folder and the journal), and is idempotent by content hash: a run that
overlaps, is retried or is cleared takes nothing twice (`pipelines.inbox`
serialises passes with a file lock and journals every hash it processed).
`max_active_runs=1` keeps the runs from queueing behind each other anyway.

Thin wiring only: the task calls `pipelines.inbox.process` and returns
counts, never the files' contents.
"""
from __future__ import annotations

from collections import Counter

import pendulum
from airflow.sdk import dag, task

from pipelines.alerts import task_failure_callback
from pipelines.orchestration import DAG_TIMEZONE


@task(retries=1, retry_delay=pendulum.duration(minutes=1))
def process_inbox() -> dict:
    from pipelines import inbox
    from pipelines.config import load_settings

    results = inbox.process(load_settings())
    counts = Counter(r["status"] for r in results)
    return {"files": len(results), **dict(sorted(counts.items()))}


@dag(
    dag_id="mianshen_inbox",
    description="收件箱：名单与回执文件的受理（每个文件按内容只处理一次）",
    schedule="*/5 * * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz=DAG_TIMEZONE),
    catchup=False,
    max_active_runs=1,
    default_args={"on_failure_callback": task_failure_callback},
    tags=["mianshen", "inbox"],
)
def mianshen_inbox():
    process_inbox()


dag = mianshen_inbox()
