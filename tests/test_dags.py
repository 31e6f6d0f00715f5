"""DAG integrity: every DAG file imports, has no cycles, and wires the stages as designed."""
from __future__ import annotations

import pytest

from tests.conftest import ROOT


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


def test_every_dag_file_imports(dagbag):
    assert dagbag.import_errors == {}
    assert {"mianshen_nightly", "mianshen_inbox"} <= set(dagbag.dag_ids)


def test_nightly_gate_guards_everything_downstream(dagbag):
    dag = dagbag.get_dag("mianshen_nightly")
    gate = dag.get_task("quality_gate")
    assert {f"validate_{f}" for f in ("registry", "tax", "social_insurance", "tech", "credit")} <= gate.upstream_task_ids
    downstream = gate.get_flat_relative_ids(upstream=False)
    assert {"build_portrait", "match_shards", "match_shard", "merge_matches", "ledger_and_outputs"} <= downstream
    assert dag.get_task("quality_gate").retries == 0
    # every feed is validated after the registry (referential integrity)
    assert "validate_registry" in dag.get_task("validate_tax").upstream_task_ids


def test_nightly_parameters_are_documented(dagbag):
    dag = dagbag.get_dag("mianshen_nightly")
    assert set(dag.params) == {"as_of", "accept_drift", "release_holds"}
    assert dag.catchup is False
