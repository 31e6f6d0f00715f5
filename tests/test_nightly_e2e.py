"""The nightly DAG end to end through dag.test() on generated data (slow)."""
from __future__ import annotations

import json
import shutil
from datetime import date, datetime, timezone

import pyarrow.parquet as pq
import pytest

from deploy import dag_test
from tests.conftest import ROOT, make_settings

AS_OF = date(2026, 11, 26)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def nightly_dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags" / "mianshen_nightly.py"))
    assert bag.import_errors == {}
    return bag.get_dag("mianshen_nightly")


def _environment(monkeypatch, base):
    for key, value in {
        "MIANSHEN_DATA": base,
        "MIANSHEN_LANDING": base / "landing",
        "MIANSHEN_POLICIES": ROOT / "data" / "policies",
    }.items():
        monkeypatch.setenv(key, str(value))
    return make_settings(base)


def _recorded(as_of: date) -> tuple[str, datetime, datetime, str | None]:
    """Run id, start, end and note of the DAG run of as_of, as the UI reads them."""
    from sqlalchemy import select

    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    logical = datetime(as_of.year, as_of.month, as_of.day, tzinfo=timezone.utc)
    with create_session() as session:
        run = session.scalar(select(DagRun).where(DagRun.dag_id == "mianshen_nightly", DagRun.logical_date == logical))
        return run.run_id, run.start_date, run.end_date, run.note


def _run(dag, as_of=AS_OF, **conf):
    logical = datetime(as_of.year, as_of.month, as_of.day, tzinfo=timezone.utc)
    return dag.test(logical_date=logical, run_conf=conf or None)


def test_nightly_produces_matches_lists_and_report(tmp_path, monkeypatch):
    """Run as `make run` runs it (deploy/dag_test.py), which the UI then shows
    with its true start and end and the report's path in its note."""
    import sqlalchemy as sa

    from pipelines import demo_data, warehouse

    settings = _environment(monkeypatch, tmp_path)
    demo_data.generate(settings.landing, AS_OF, 400, 7)
    before = datetime.now(timezone.utc)
    assert dag_test.main(["mianshen_nightly", str(AS_OF)]) == 0
    run_id, start, end, note = _recorded(AS_OF)
    assert before <= start < end <= datetime.now(timezone.utc)
    assert note.endswith(str((settings.run_dir(AS_OF) / "report.html").resolve()))
    # the tasks saw that start too: the run's audit in the warehouse
    with warehouse.engine_for(settings.warehouse_url).connect() as conn:
        audited = conn.execute(sa.select(warehouse.runs.c.started_at).where(warehouse.runs.c.run_id == run_id)).scalar_one()
    assert audited >= before.replace(tzinfo=None)

    run_dir = settings.run_dir(AS_OF)
    verdicts = {f: json.loads((run_dir / "quality" / f"{f}.json").read_text()) for f in
                ("registry", "tax", "social_insurance", "tech", "credit")}
    assert all(v["status"] == "accepted" for v in verdicts.values()), verdicts
    matches = pq.read_table(run_dir / "matches.parquet")
    assert matches.num_rows > 0
    assert "eligible" in set(matches.column("outcome").to_pylist())
    assert (run_dir / "report.html").exists()
    assert (settings.portraits / f"{AS_OF}.parquet").exists()


def _gate_alerts(received: list[dict]) -> list[tuple]:
    return sorted((a["kind"], a["department"], a["title"], a["text"]) for a in received if a["kind"].startswith("feed_"))


def test_stale_feed_closes_the_gate_and_nothing_downstream_runs(nightly_dag, tmp_path, monkeypatch, webhook):
    """…and the departments are alerted, the same alerts whether the night runs as the DAG
    or as `mianshen run`."""
    from pipelines import cli, demo_data

    url, received = webhook
    monkeypatch.setenv("MIANSHEN_ALERT_WEBHOOK", url)
    monkeypatch.delenv("MIANSHEN_ALERT_EMAIL", raising=False)
    settings = _environment(monkeypatch, tmp_path / "dag")
    demo_data.generate(settings.landing, AS_OF, 200, 3)
    # the tax office's deliveries are all older than its 35-day window
    for i, delivery in enumerate(sorted((settings.landing / "tax").iterdir())):
        shutil.move(delivery, settings.landing / "tax" / f"2026-08-0{i + 1}")
    shutil.copytree(settings.landing, tmp_path / "cli" / "landing")
    run = _run(nightly_dag)
    assert str(run.state) == "failed"
    run_dir = settings.run_dir(AS_OF)
    assert json.loads((run_dir / "quality" / "tax.json").read_text())["status"] == "stale"
    assert not (run_dir / "matches.parquet").exists()
    assert not (settings.portraits / f"{AS_OF}.parquet").exists()
    report = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "未通过" in report and "区税务局" in report
    from_dag = _gate_alerts(received)
    assert [(kind, department) for kind, department, *_ in from_dag] == [("feed_stale", "区税务局")]

    received.clear()
    _environment(monkeypatch, tmp_path / "cli")
    assert cli.main(["run", "--as-of", str(AS_OF)]) == 2
    assert _gate_alerts(received) == from_dag
