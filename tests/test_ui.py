"""The operator's seat on one machine: `make ui` (deploy/ui.py), and tests that
keep out of the operator's Airflow metadata DB. (`make run`'s DAG runs as the
UI shows them: tests/test_nightly_e2e.py.)"""
from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
from pathlib import Path

import psutil
import pytest

from deploy import ui
from tests.conftest import AIRFLOW_TEST_HOME, ROOT, fresh_airflow_home, make_settings
from tests.test_scheduler_e2e import AS_OF, BIN, PASSWORD, Api, _run_nightly, pipeline_env


def test_tests_run_airflow_on_their_own_home_not_the_operators():
    from airflow.configuration import conf

    database = Path(conf.get("database", "sql_alchemy_conn").removeprefix("sqlite:///")).resolve()
    assert database == (AIRFLOW_TEST_HOME / "airflow.db").resolve()
    assert not database.is_relative_to(ROOT / ".airflow")


def test_every_address_of_make_ui_follows_its_port():
    env = ui.airflow_environment({"PATH": "/usr/bin"}, Path("/h"), 8181, Path("/venv/bin"))
    assert env["AIRFLOW__API__PORT"] == "8181" and env["AIRFLOW__API__BASE_URL"] == "http://127.0.0.1:8181"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:8181/execution/"
    assert env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] == "18181"
    assert env["AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"] == "28181"
    assert env["PATH"].startswith("/venv/bin") and env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    # two side by side on neighbouring ports share no port
    assert not set(ui.ports(8080).values()) & set(ui.ports(8081).values())


@pytest.mark.slow
def test_make_ui_runs_a_triggered_night_and_leaves_no_process(tmp_path):
    from pipelines import demo_data

    data = tmp_path / "mianshen"
    demo_data.generate(make_settings(data).landing, AS_OF, 300, 5)
    home = tmp_path / "airflow"
    port = _free_ports_for_make_ui()
    passwords = tmp_path / "passwords.json"
    passwords.write_text(json.dumps({"admin": PASSWORD}))
    env = {**os.environ, **fresh_airflow_home(home), **pipeline_env(data), "AIRFLOW_PORT": str(port),
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
           # only the run triggered here: no scheduled night when the DAG is unpaused
           "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False"}
    output = tmp_path / "make-ui.out"
    # as an operator types it, on this test's Airflow home; -o: the virtual
    # environment is there already, make must not rebuild it
    with open(output, "wb") as out:
        make = subprocess.Popen(["make", "-o", f"{BIN}/.installed", "ui", f"BIN={BIN}", f"AIRFLOW_HOME={home}"],
                                cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    api = Api(f"http://127.0.0.1:{port}")
    started: list[psutil.Process] = []
    try:
        api.wait_until(lambda: ui.all_healthy(ui.health(api.base)), 180, "every component healthy")
        api.wait_until(lambda: "admin" in output.read_text(), 10, "the login printed")
        assert f"http://127.0.0.1:{port}" in output.read_text() and PASSWORD in output.read_text()

        run_id = _run_nightly(api, home / "logs" / "ui")
        run = api.call("GET", f"/api/v2/dags/mianshen_nightly/dagRuns/{run_id}")
        assert run["start_date"] < run["end_date"]

        started = psutil.Process(make.pid).children(recursive=True)
        assert len(started) >= 5                      # the launcher and its four components, at least
        assert len(_processes_on(home)) >= 5          # which the check after the stop sees
    finally:
        os.killpg(make.pid, signal.SIGINT)            # Ctrl+C in the operator's terminal
        make.wait(timeout=90)
    assert "已全部停止" in output.read_text(), output.read_text()[-3000:]
    assert [p for p in started if _alive(p)] == []
    assert _processes_on(home) == []


def _free_ports_for_make_ui() -> int:
    """An AIRFLOW_PORT whose every derived port is free."""
    for _ in range(50):
        port = random.randint(20000, 45000)
        if not ui.busy_ports(ui.ports(port).values()):
            return port
    raise AssertionError("no free ports")


def _alive(process: psutil.Process) -> bool:
    with contextlib.suppress(psutil.NoSuchProcess):
        return process.status() != psutil.STATUS_ZOMBIE
    return False


def _processes_on(home: Path) -> list[str]:
    """Every process whose environment names `home` as its Airflow home."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if process.environ().get("AIRFLOW_HOME") in (str(home), str(home.resolve())):
                found.append(" ".join(process.info["cmdline"] or []))
    return found
