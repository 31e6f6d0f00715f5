"""mianshen_nightly: feeds → quality gate → portrait → matches → ledger and lists.

Thin wiring only: every task calls one function of the `pipelines` package
with the run date, and passes small JSON summaries, never tables.
"""
from __future__ import annotations

import pendulum
from airflow.sdk import CronDataIntervalTimetable, Param, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from pipelines.alerts import task_failure_callback
from pipelines.contracts import FEED_ORDER
from pipelines.orchestration import DAG_TIMEZONE

DEFAULT_ARGS = {
    "retries": 1,
    "retry_delay": pendulum.duration(minutes=5),
    "on_failure_callback": task_failure_callback,
}


def _ctx():
    from pipelines.config import load_settings
    from pipelines.orchestration import as_of_from_context

    context = get_current_context()
    return load_settings(), as_of_from_context(context), context


@task
def ingest_feed(feed: str) -> dict:
    from pipelines import ingest

    settings, as_of, _ = _ctx()
    return ingest.ingest_feed(settings, feed, as_of)


@task
def validate_feed(feed: str) -> dict:
    from pipelines import validate

    settings, as_of, context = _ctx()
    return validate.validate_feed(settings, feed, as_of, accept_drift=bool(context["params"]["accept_drift"]))


@task(retries=0)
def quality_gate() -> dict:
    from pipelines import nightly, validate

    settings, as_of, _ = _ctx()
    try:
        return nightly.quality_gate(settings, as_of)
    except validate.GateClosed as closed:
        # Stale or rejected data must never reach matching: fail without retry.
        raise AirflowFailException(str(closed)) from None


@task
def build_portrait() -> str:
    from pipelines import portrait

    settings, as_of, _ = _ctx()
    return str(portrait.build(settings, as_of))


@task
def match_shards() -> list[int]:
    """The shard indices, read at run time (MIANSHEN_MATCH_SHARDS), that match_shard is mapped over."""
    settings, _, _ = _ctx()
    return list(range(settings.match_shards))


@task(map_index_template="{{ shard_label }}")
def match_shard(shard: int, shards: list[int]) -> str:
    from pipelines import match

    settings, as_of, context = _ctx()
    context["shard_label"] = f"shard {shard} of {len(shards)}"
    return match.run_shard(settings, as_of, shard, len(shards))


@task
def merge_matches(shards: list[int]) -> dict:
    from pipelines import nightly
    from pipelines.orchestration import parse_holds

    settings, as_of, context = _ctx()
    try:
        releasing = parse_holds(context["params"]["release_holds"])
    except ValueError:
        releasing = ()  # ledger_and_outputs fails the run with the reason
    return nightly.merge_matches(settings, as_of, len(shards), releasing)


@task
def ledger_and_outputs() -> dict:
    from pipelines import handoff
    from pipelines.orchestration import parse_holds, run_id_from_context

    settings, as_of, context = _ctx()
    holds = parse_holds(context["params"]["release_holds"])
    return handoff.ledger_and_outputs(settings, as_of, run_id_from_context(context), release_holds=holds)


@task(trigger_rule="all_done")
def run_report() -> str:
    from pipelines import nightly
    from pipelines.orchestration import run_id_from_context

    settings, as_of, context = _ctx()
    started_at = context["dag_run"].start_date
    path = nightly.finish_run(settings, as_of, run_id_from_context(context), started_at).resolve()
    print(f"运行报告 (run report): {path}")
    return str(path)


@task(trigger_rule="one_failed", retries=0, on_failure_callback=None)
def run_failed() -> None:
    """The run report runs whatever happened, so it cannot decide the run's
    state; this watcher fails the run whenever any task failed."""
    raise AirflowFailException("本次运行有任务失败，详见各任务日志与运行报告。")


@dag(
    dag_id="mianshen_nightly",
    schedule=CronDataIntervalTimetable("0 2 * * *", timezone=DAG_TIMEZONE),
    start_date=pendulum.datetime(2026, 1, 1, tz=DAG_TIMEZONE),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["mianshen", "免申即享"],
    params={
        "as_of": Param(None, type=["null", "string"], format="date",
                       description="运行日期（留空则为本次调度的数据日期）"),
        "accept_drift": Param(False, type="boolean",
                              description="本次运行接受数据量较上次交付波动超过 ±20%"),
        "release_holds": Param([], type="array", items={"type": "string"},
                               description="解除超预算暂停拨付，每项写作 政策编号:期次"),
    },
    doc_md=__doc__,
)
def mianshen_nightly():
    ingested = {feed: ingest_feed.override(task_id=f"ingest_{feed}")(feed) for feed in FEED_ORDER}
    validated = {feed: validate_feed.override(task_id=f"validate_{feed}")(feed) for feed in FEED_ORDER}
    for feed in FEED_ORDER:
        ingested[feed] >> validated[feed]
        if feed != "registry":
            # Referential integrity of every feed is checked against the registry.
            validated["registry"] >> validated[feed]
    gate = quality_gate()
    list(validated.values()) >> gate
    portrait = build_portrait()
    # Matching in shards of enterprises (MIANSHEN_MATCH_SHARDS), spread over the workers, then one
    # cheap merge that applies the budgets (they are per policy over all enterprises).
    shards = match_shards()
    sharded = match_shard.partial(shards=shards).expand(shard=shards)
    matched, outputs = merge_matches(shards), ledger_and_outputs()
    gate >> portrait >> shards >> sharded >> matched >> outputs
    report = run_report()
    [gate, outputs] >> report
    all_tasks = [*ingested.values(), *validated.values(), gate, portrait, shards, sharded, matched, outputs, report]
    all_tasks >> run_failed()


mianshen_nightly()
