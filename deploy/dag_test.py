"""`make run`'s way of running a DAG for one date: `airflow dags test`, but the
run reads true in the UI.

Airflow's dag.test() records the run's start as its logical date (a night
run a week later showed a duration of days, or a negative one). This runs the
same dag.test(), then records when the run really started, and writes the path
of the run report (the return value of the DAG's `run_report` task) into the
run's note, so the operator finds the report from the run in the UI.

    python deploy/dag_test.py mianshen_nightly 2026-11-26 [--conf JSON]

Exits 1 when the run failed, like `airflow dags test`.
"""
from __future__ import annotations

import argparse
import json
import sys
from datetime import date, datetime, time, timezone

REPORT_TASK = "run_report"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dag_id")
    parser.add_argument("logical_date", type=date.fromisoformat)
    parser.add_argument("--conf", type=json.loads, default=None, help="the run's conf as JSON")
    args = parser.parse_args(argv)

    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag()                                   # the configured dags_folder
    dag = bag.get_dag(args.dag_id)
    if dag is None:
        print(f"DAG {args.dag_id!r} not found; import errors: {bag.import_errors}", file=sys.stderr)
        return 2
    started = datetime.now(timezone.utc)
    run = dag.test(logical_date=datetime.combine(args.logical_date, time(), timezone.utc),
                   run_after=started, run_conf=args.conf)
    note = record_true_start(run.dag_id, run.run_id, started)
    print(f"{run.dag_id} {run.run_id}: {run.state}" + (f"; {note}" if note else ""))
    return 0 if str(run.state) == "success" else 1


def record_true_start(dag_id: str, run_id: str, started: datetime) -> str | None:
    """Set the run's start (and queued time) to `started` and its note to the report's path; the note written."""
    from sqlalchemy import select

    from airflow.models.dagrun import DagRun
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        run = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
        run.start_date = started
        run.queued_at = run.queued_at or started
        report = session.scalar(XComModel.get_many(run_id=run_id, dag_ids=dag_id, task_ids=REPORT_TASK,
                                                   key="return_value"))
        if report is None:
            return None
        run.note = f"运行报告 (run report): {XComModel.deserialize_value(report)}"
        return run.note


if __name__ == "__main__":
    sys.exit(main())
