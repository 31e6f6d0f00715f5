"""Shared fixtures. Airflow settings default to the project's own Airflow home
(the Makefile exports the same values), so tests also run as plain pytest."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("AIRFLOW_HOME", str(ROOT / ".airflow"))
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(ROOT / "dags"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")

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
    import shutil

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
