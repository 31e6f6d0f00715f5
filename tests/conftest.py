"""Shared fixtures.

Airflow runs on its own Airflow home for the session (a temporary folder with
a migrated SQLite metadata DB), never on the operator's `.airflow`: whatever
the environment says (the Makefile exports the operator's AIRFLOW_HOME), a test
run writes no DAG run where `make ui` would show it. Migrating takes 10-40 s, so
the migrated, empty DB is cached in `.pytest-airflow/`, keyed by the hash of the
lock file (the Airflow version decides the schema), and copied per session."""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
AIRFLOW_CACHE = ROOT / ".pytest-airflow"


def _migrated_airflow_db() -> Path:
    """The cached migrated, empty metadata DB for this lock file (migrated on first use)."""
    key = hashlib.sha256((ROOT / "requirements-lock.txt").read_bytes()).hexdigest()[:16]
    cached = AIRFLOW_CACHE / f"airflow-{key}.db"
    if not cached.exists():
        AIRFLOW_CACHE.mkdir(exist_ok=True)
        with tempfile.TemporaryDirectory(dir=AIRFLOW_CACHE) as scratch:
            env = {**os.environ, **_airflow_home_env(Path(scratch))}
            env.pop("AIRFLOW_CONFIG", None)
            done = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env,
                                  capture_output=True, text=True, timeout=600)
            if done.returncode:
                raise RuntimeError(f"airflow db migrate failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
            os.replace(Path(scratch) / "airflow.db", cached)    # atomic: parallel sessions race safely
        for stale in AIRFLOW_CACHE.glob("airflow-*.db"):           # earlier lock files' schemas
            if stale != cached:
                stale.unlink(missing_ok=True)
    return cached


def _airflow_home_env(home: Path) -> dict[str, str]:
    return {"AIRFLOW_HOME": str(home), "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}"}


def fresh_airflow_home(home: Path) -> dict[str, str]:
    """A new Airflow home at `home` with a migrated, empty metadata DB; the
    environment variables that select it (for a subprocess's environment)."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_migrated_airflow_db(), home / "airflow.db")
    return _airflow_home_env(home)


# Before anything imports Airflow, which reads its home once. This module is
# imported twice (as pytest's conftest and as tests.conftest): one home a session.
if "MIANSHEN_TEST_AIRFLOW_HOME" not in os.environ:
    os.environ["MIANSHEN_TEST_AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="mianshen-test-airflow-")
    os.environ.update(fresh_airflow_home(Path(os.environ["MIANSHEN_TEST_AIRFLOW_HOME"])))
    os.environ.pop("AIRFLOW_CONFIG", None)
AIRFLOW_TEST_HOME = Path(os.environ["MIANSHEN_TEST_AIRFLOW_HOME"])
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(ROOT / "dags"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")


def pytest_unconfigure(config):
    shutil.rmtree(AIRFLOW_TEST_HOME, ignore_errors=True)


from pipelines.config import Settings, load_settings  # noqa: E402

PG_URL = os.environ.get("MIANSHEN_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")


def make_settings(base: Path, **overrides) -> Settings:
    env = {
        "MIANSHEN_DATA": str(base),
        "MIANSHEN_LANDING": str(base / "landing"),
        "MIANSHEN_POLICIES": str(overrides.pop("policies", ROOT / "data" / "policies")),
    }
    env.update({k: str(v) for k, v in overrides.items()})
    return load_settings(env)


@pytest.fixture
def settings(tmp_path) -> Settings:
    """Settings whose every folder and the SQLite warehouse live under tmp_path."""
    return make_settings(tmp_path)


def postgres_available(url: str = PG_URL) -> bool:
    import sqlalchemy as sa

    try:
        with sa.create_engine(url).connect():
            return True
    except Exception:
        return False


def require_postgres() -> str:
    """The PostgreSQL URL, or skip — except in CI, where a missing server is a failure."""
    if postgres_available():
        return PG_URL
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but PostgreSQL is not reachable at {PG_URL}")
    pytest.skip("PostgreSQL not reachable")


def require_chromium() -> str:
    """Debian's Chromium for the browser checks, or skip — except in CI, where .ci/run
    installs it and a missing one is a failure."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("CI") == "true":
        pytest.fail("CI=true but Chromium is not installed (.ci/run installs Debian's chromium)")
    pytest.skip("Debian's chromium is not installed (apt-get install chromium fonts-noto-cjk)")


@contextlib.contextmanager
def postgres_schema(prefix: str):
    """A fresh PostgreSQL schema for one test: yields a URL whose search_path is
    that schema, and drops it afterwards (skips, or fails under CI, without a server)."""
    import uuid

    import sqlalchemy as sa

    from pipelines import warehouse

    admin_url = require_postgres()
    admin = sa.create_engine(admin_url, poolclass=sa.pool.NullPool)
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{admin_url}?options=-csearch_path%3D{schema}"
    finally:
        warehouse.dispose_all()
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def webhook():
    """A loopback HTTP receiver for alerts: yields (url, list of the JSON bodies it received)."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hook", received
    finally:
        server.shutdown()
        server.server_close()
