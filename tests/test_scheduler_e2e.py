"""A real scheduler end to end (slow): Airflow's api-server, scheduler and
dag-processor on loopback with the project's DAGs and a PostgreSQL metadata
database, on CeleryExecutor with Redis and two workers; `mianshen_nightly`
(matching in 4 shards; the night's tasks spread over both workers) is triggered through the REST API v2 with a token
and must succeed; a cleared task reruns to the same result; a backfill of the
day before runs through Airflow's own backfill and moves nothing in the
ledger; then a dropped name list must be picked up by `mianshen_inbox`.
Everything started here is stopped here."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from datetime import date
from pathlib import Path

import pytest

from tests.conftest import ROOT, make_settings, require_postgres

pytestmark = pytest.mark.slow
AS_OF = date(2026, 11, 26)
BIN = Path(sys.executable).parent
PASSWORD = "e2e-secret"      # the simple auth manager's admin, from the passwords file written here


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Api:
    def __init__(self, base: str):
        self.base, self.token = base, None

    def call(self, method: str, path: str, body=None, auth=True):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        if auth:
            request.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")

    def wait_until(self, predicate, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = predicate()
                if last:
                    return last
            except (urllib.error.URLError, ConnectionError, OSError) as exc:
                last = exc
            time.sleep(2)
        raise AssertionError(f"timed out waiting for {what}: {last!r}")


def pipeline_env(data: Path, shards: int = 1) -> dict[str, str]:
    """The environment the Airflow components need for the project's DAGs on
    demo data under `data`, picked up by the dag-processor within seconds."""
    return {
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "5",
        "PYTHONPATH": str(ROOT),
        "MIANSHEN_DATA": str(data),
        "MIANSHEN_LANDING": str(data / "landing"),
        "MIANSHEN_POLICIES": str(ROOT / "data" / "policies"),
        "MIANSHEN_MATCH_SHARDS": str(shards),
    }


@pytest.fixture
def airflow_stack(tmp_path):
    # The compose file's Celery profile in miniature: CeleryExecutor, Redis, two workers, and
    # matching mapped over 4 shards (LocalExecutor, the compose default, runs the same DAG).
    with _airflow(tmp_path, executor="CeleryExecutor", workers=("w1", "w2"), shards=4) as stack:
        yield stack


@contextlib.contextmanager
def _airflow(tmp_path, executor: str = "LocalExecutor", workers: tuple[str, ...] = (), shards: int = 1):
    """api-server, scheduler, dag-processor (and, for CeleryExecutor, one Celery worker per name
    in `workers`, each reporting that name as its hostname) on a fresh metadata database."""
    import sqlalchemy as sa

    pg = require_postgres()
    db_name = f"airflow_e2e_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(pg, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{db_name}"'))
    port = _free_port()
    home = tmp_path / "airflow"
    home.mkdir()
    (home / "passwords.json").write_text(json.dumps({"admin": PASSWORD}))
    data = tmp_path / "mianshen"
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": executor,
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": pg.rsplit("/", 1)[0] + f"/{db_name}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__API_AUTH__JWT_SECRET": uuid.uuid4().hex,
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        **pipeline_env(data, shards),
    }
    if executor == "CeleryExecutor":
        queue = f"e2e_{uuid.uuid4().hex[:8]}"       # this test's own queue on the shared Redis
        env.update({
            "AIRFLOW__CELERY__BROKER_URL": "redis://127.0.0.1:6379/0",
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"],
            "AIRFLOW__OPERATORS__DEFAULT_QUEUE": queue,
            "AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER": "1",
        })
    subprocess.run([BIN / "airflow", "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    procs = []
    logs = []
    try:
        components = [(["api-server", "--port", str(port), "--host", "127.0.0.1"], env), (["scheduler"], env),
                      (["dag-processor"], env)]
        for name in workers:
            components.append((["celery", "worker", "--celery-hostname", f"{name}@%h", "--concurrency", "1",
                                "--queues", env["AIRFLOW__OPERATORS__DEFAULT_QUEUE"], "--skip-serve-logs"],
                               {**env, "E2E_WORKER_NAME": name,
                                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.worker_name.hostname"}))
        for component, component_env in components:
            label = component[0] if component[0] != "celery" else f"worker-{component_env['E2E_WORKER_NAME']}"
            log = open(tmp_path / f"{label}.log", "wb")
            logs.append(log)
            procs.append(subprocess.Popen([BIN / "airflow", *component], env=component_env, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True))
        deadline = time.monotonic() + 180
        for name in workers:     # both workers take tasks only once both are up
            log_path = tmp_path / f"worker-{name}.log"
            while b" ready." not in log_path.read_bytes():
                if time.monotonic() > deadline:
                    raise AssertionError(f"celery worker {name} did not start:\n{log_path.read_text(errors='replace')[-3000:]}")
                time.sleep(1)
        yield Api(f"http://127.0.0.1:{port}"), make_settings(data), tmp_path
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for log in logs:
            log.close()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)'))
        admin.dispose()


def test_scheduler_runs_nightly_and_inbox_through_the_rest_api(airflow_stack):
    import pyarrow.parquet as pq

    from pipelines import demo_data, match

    api, settings, tmp_path = airflow_stack
    demo_data.generate(settings.landing, AS_OF, 300, 5, inbox=settings.inbox)
    # the inbox leaves files younger than its settle time alone (they may still be copying)
    an_hour_ago = time.time() - 3600
    for dropped in settings.inbox.rglob("*"):
        os.utime(dropped, (an_hour_ago, an_hour_ago))

    run_id = _run_nightly(api, tmp_path, logs=("scheduler", "worker-w1", "worker-w2"))
    matches = pq.read_table(settings.run_dir(AS_OF) / "matches.parquet")
    assert matches.num_rows > 0

    # The 4 match shards ran on the Celery workers, both workers took tasks of the night, and
    # the shards' merge is the unsharded result. Which worker takes which shard is Celery's
    # choice: a worker still finishing the task before them (under load, seconds) can leave
    # all four to the other, so the night as a whole is what must reach both.
    tis = api.call("GET", f"/api/v2/dags/mianshen_nightly/dagRuns/{run_id}/taskInstances?limit=100")
    shards = [ti for ti in tis["task_instances"] if ti["task_id"] == "match_shard"]
    assert sorted(ti["map_index"] for ti in shards) == [0, 1, 2, 3]
    assert {ti["hostname"] for ti in shards} <= {"w1", "w2"}, [ti["hostname"] for ti in shards]
    hosts = {ti["hostname"] for ti in tis["task_instances"] if ti["state"] == "success"}
    assert hosts == {"w1", "w2"}, hosts
    assert pq.read_table(match.run(settings, AS_OF)["matches"]).equals(matches)

    # Clearing a task through the API reruns it and everything after it: the
    # same matches and the same ledger as the clean run.
    ledger_before = _ledger(settings)
    api.call("POST", "/api/v2/dags/mianshen_nightly/clearTaskInstances",
             {"dag_run_id": run_id, "task_ids": ["match_shards"], "include_downstream": True,
              "only_failed": False, "dry_run": False, "reset_dag_runs": True})

    def rerun_done():
        ti = api.call("GET", f"/api/v2/dags/mianshen_nightly/dagRuns/{run_id}/taskInstances/ledger_and_outputs")
        return ti["state"] == "success" and ti["try_number"] >= 2

    api.wait_until(rerun_done, 600, "the cleared tasks to run again")
    assert _sorted(pq.read_table(settings.run_dir(AS_OF) / "matches.parquet")).equals(_sorted(matches))
    assert _ledger(settings) == ledger_before

    # A backfill of the day before, through Airflow's own backfill: it writes
    # that day's outputs and moves nothing in the ledger (a later date has
    # already been through it).
    backfill = api.call("POST", "/api/v2/backfills", {
        "dag_id": "mianshen_nightly", "from_date": "2026-11-24T12:00:00Z", "to_date": "2026-11-25T00:00:00Z",
        "max_active_runs": 1, "reprocess_behavior": "none", "run_backwards": False, "dag_run_conf": {}})
    api.wait_until(lambda: api.call("GET", f"/api/v2/backfills/{backfill['id']}").get("completed_at"), 600,
                   "the backfill to complete")
    runs = api.call("GET", "/api/v2/dags/mianshen_nightly/dagRuns?run_type=backfill")["dag_runs"]
    assert runs and all(r["state"] == "success" for r in runs), runs
    assert (settings.run_dir(date(2026, 11, 25)) / "matches.parquet").exists()
    assert _ledger(settings) == ledger_before

    # The inbox DAG picks up the dropped name lists on its own schedule
    api.call("PATCH", "/api/v2/dags/mianshen_inbox", {"is_paused": False})
    api.call("POST", "/api/v2/dags/mianshen_inbox/dagRuns", {"logical_date": None, "conf": {}})
    archive = settings.inbox / "_archive"
    api.wait_until(lambda: archive.exists() and any(p.is_file() for p in archive.rglob("*")), 300,
                   "the inbox to archive a name list")


def _run_nightly(api: Api, tmp_path: Path, logs=("scheduler",)) -> str:
    """Log in, unpause and trigger mianshen_nightly for AS_OF; wait for success; its run id."""
    api.wait_until(lambda: api.call("GET", "/api/v2/version", auth=False), 120, "api-server")
    login = urllib.request.Request(api.base + "/auth/token", method="POST",
                                   data=json.dumps({"username": "admin", "password": PASSWORD}).encode(),
                                   headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(login, timeout=30) as response:
        api.token = json.loads(response.read())["access_token"]

    api.wait_until(lambda: api.call("GET", "/api/v2/dags/mianshen_nightly"), 180, "the DAG to be parsed")
    api.call("PATCH", "/api/v2/dags/mianshen_nightly", {"is_paused": False})
    run = api.call("POST", "/api/v2/dags/mianshen_nightly/dagRuns",
                   {"logical_date": f"{AS_OF}T00:00:00Z", "conf": {}})
    run_id = run["dag_run_id"]

    def finished():
        state = api.call("GET", f"/api/v2/dags/mianshen_nightly/dagRuns/{run_id}")["state"]
        return state if state in ("success", "failed") else None

    state = api.wait_until(finished, 600, "mianshen_nightly to finish")
    if state != "success":
        text = "\n".join((tmp_path / f"{c}.log").read_text(errors="replace")[-3000:] for c in logs)
        pytest.fail(f"mianshen_nightly ended {state}\n{text}")
    return run_id


def _sorted(table):
    return table.sort_by([("policy_id", "ascending"), ("uscc", "ascending")])


def _ledger(settings) -> list[tuple]:
    import sqlalchemy as sa

    engine = sa.create_engine(settings.warehouse_url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(
                "SELECT policy_id, period, uscc, status, amount FROM ledger ORDER BY policy_id, period, uscc"))]
    finally:
        engine.dispose()
