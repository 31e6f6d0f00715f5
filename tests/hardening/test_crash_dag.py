"""Crash safety through Airflow itself (issue 8 item 3, issue 6 item 4): the
ledger_and_outputs task of mianshen_nightly dies after its first commit; the
operator clears it (and what follows) and reruns the run; the outputs and
the warehouse end exactly as after a clean run of the stages (slow)."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from tests.conftest import ROOT
from tests.hardening import pipeline_state as ps

pytestmark = pytest.mark.slow
UPSTREAM = r"^(ingest_|validate_|quality_gate|build_portrait|match_shard|merge_matches)"


@pytest.fixture(scope="session")
def ref(tmp_path_factory):
    return ps.reference(tmp_path_factory.getbasetemp() / "hardening_reference")


@pytest.fixture
def nightly_dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags" / "mianshen_nightly.py"))
    assert bag.import_errors == {}
    dag = bag.get_dag("mianshen_nightly")
    dag.get_task("ledger_and_outputs").retries = 0   # fail now, not after a 5-minute retry delay
    return dag


def test_clear_and_rerun_of_a_task_that_died_midway(ref, nightly_dag, monkeypatch):
    from pipelines import ledger, warehouse

    settings = ref.checkout(0)                       # the landing of both nights, nothing run
    for key, value in {"MIANSHEN_DATA": ref.live, "MIANSHEN_LANDING": ref.live / "landing",
                       "MIANSHEN_POLICIES": ROOT / "data" / "policies"}.items():
        monkeypatch.setenv(key, str(value))
    for key in ("MIANSHEN_WAREHOUSE_URL", "MIANSHEN_ALERT_WEBHOOK", "MIANSHEN_ALERT_EMAIL"):
        monkeypatch.delenv(key, raising=False)
    logical = datetime(ps.N1.year, ps.N1.month, ps.N1.day, tzinfo=timezone.utc)

    real_notify = ledger.notify

    def died(*a, **k):                               # matches stored and the ledger synced, then death
        raise RuntimeError("worker killed after the first commit")

    monkeypatch.setattr(ledger, "notify", died)
    run = nightly_dag.test(logical_date=logical, run_after=logical, run_conf={"release_holds": []})
    assert str(run.state) == "failed"
    assert run.run_id == ps.run_id(ps.N1)
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert states["ledger_and_outputs"] == "failed" and states["run_report"] == "success"
    assert warehouse_rows(settings) > 0              # the first commit is in

    monkeypatch.setattr(ledger, "notify", real_notify)
    # "Clear" ledger_and_outputs and what follows, and rerun: dag.test replaces the
    # date's run with a new one (it cannot keep the run id), running only those
    # tasks; the upstream ones are marked success, as a clear leaves them.
    rerun_after = datetime.now(timezone.utc)
    run = nightly_dag.test(logical_date=logical, run_after=rerun_after, run_conf={"release_holds": []},
                           mark_success_pattern=UPSTREAM)
    assert str(run.state) == "success"
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert states["ledger_and_outputs"] == states["run_report"] == "success"
    warehouse.dispose_all()
    got = ps.picture(settings)
    # the DAG matches in shards (work/match_shards/, kept so that merge_matches can be rerun
    # alone); the clean reference ran the stages unsharded, which writes no shard files
    shard_files = [k for k in got["files"] if k.startswith("work/match_shards/")]
    assert shard_files == [f"work/match_shards/{ps.N1}/shard-0-of-1.parquet"]
    for k in shard_files:
        del got["files"][k]
    # the same files and warehouse as a clean run, but for the run ids: the rows
    # the first attempt committed carry its id, the later moves the rerun's
    assert sorted(r[0] for r in got["warehouse"].pop("runs")) == sorted([ps.run_id(ps.N1), run.run_id])
    got["warehouse"].pop("run_inputs")
    expected = ref.picture_before(ref.index("ingest_registry", ps.N2))   # night 1, clean
    expected = {"files": expected["files"], "warehouse": dict(expected["warehouse"])}
    expected["warehouse"].pop("runs"), expected["warehouse"].pop("run_inputs")
    ids = {ps.run_id(ps.N1): "<run>", run.run_id: "<run>"}
    problems = ps.diff(_runs(expected, ids), _runs(got, ids))
    assert not problems, "\n".join(problems[:25])


def _runs(value, ids):
    """`value` with every run id replaced by a placeholder."""
    if isinstance(value, dict):
        return {_runs(k, ids): _runs(v, ids) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_runs(v, ids) for v in value)
    if isinstance(value, str):
        for run_id, placeholder in ids.items():
            value = value.replace(run_id, placeholder)
    return value


def warehouse_rows(settings) -> int:
    import sqlalchemy as sa

    from pipelines import warehouse

    with warehouse.connect(settings.warehouse_url).connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(warehouse.ledger)).scalar_one()
