"""`make run`'s way of running a DAG for one date: `airflow dags test`, but the
run reads true in the UI.

Airflow 3.3's dag.test() records the run's start as its logical date (a night
run a week later showed a duration of days, or a negative one), and the tasks
see that start too (the run's audit and status in the warehouse take it). This
runs the same dag.test() with the run starting when it really starts, and
writes the path of the run report (the return value of the DAG's `run_report`
task) into the run's note, so the operator finds the report from the run in
the UI (dag.test() keeps no task logs for the UI to show).

    python deploy/dag_test.py mianshen_nightly 2026-11-26 [--conf JSON]

Exits 1 when the run failed, like `airflow dags test`.
"""
from __future__ import annotations

import argparse
import json
import sys
from datetime import date, datetime, time, timezone
from unittest import mock

REPORT_TASK = "run_report"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dag_id")
    parser.add_argument("logical_date", type=date.fromisoformat)
    parser.add_argument("--conf", type=json.loads, default=None, help="the run's conf as JSON")
    args = parser.parse_args(argv)

    from airflow.dag_processing.dagbag import DagBag
    from airflow.models import dagrun

    bag = DagBag()                                   # the configured dags_folder
    dag = bag.get_dag(args.dag_id)
    if dag is None:
        print(f"DAG {args.dag_id!r} not found; import errors: {bag.import_errors}", file=sys.stderr)
        return 2
    create_run = dagrun.get_or_create_dagrun

    def starting_when_it_runs(**kwargs):
        # dag.test() passes start_date=logical_date to its run-creating helper
        return create_run(**{**kwargs, "start_date": kwargs["run_after"]})

    with mock.patch.object(dagrun, "get_or_create_dagrun", starting_when_it_runs):
        run = dag.test(logical_date=datetime.combine(args.logical_date, time(), timezone.utc),
                       run_after=datetime.now(timezone.utc), run_conf=args.conf)
    note = note_report(run.dag_id, run.run_id)
    print(f"{run.dag_id} {run.run_id}: {run.state}" + (f"; {note}" if note else ""))
    return 0 if str(run.state) == "success" else 1


def note_report(dag_id: str, run_id: str) -> str | None:
    """Write the run report's path into the run's note; the note written."""
    from sqlalchemy import select

    from airflow.models.dagrun import DagRun
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        run = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
        run.queued_at = run.queued_at or run.start_date      # dag.test() queues nothing
        report = session.scalar(XComModel.get_many(run_id=run_id, dag_ids=dag_id, task_ids=REPORT_TASK,
                                                   key="return_value"))
        if report is None:
            return None
        run.note = f"运行报告 (run report): {XComModel.deserialize_value(report)}"
        return run.note


if __name__ == "__main__":
    sys.exit(main())
