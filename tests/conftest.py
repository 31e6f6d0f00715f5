"""Shared fixtures. Airflow settings default to the project's own Airflow home
(the Makefile exports the same values), so tests also run as plain pytest."""
from __future__ import annotations

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
