"""Shared fixtures and builders for the warehouse / ledger / outputs / returns tests.

Test modules import the fixtures they use (`from h5_support import db_url, ...`).
db_url runs each test on SQLite (a temp file) and on PostgreSQL (a fresh
schema on postgresql+psycopg2://postgres@127.0.0.1:5432/test, dropped after
the test); PostgreSQL is skipped when unreachable unless CI=true.
"""
from __future__ import annotations

import json
import os
import uuid
from datetime import date
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from pipelines import uscc as uscc_mod
from pipelines import evidence, warehouse
from pipelines.config import Settings

PG_ADMIN = os.environ.get("MIANSHEN_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")

MATCH_SCHEMA = pa.schema([
    ("as_of", pa.date32()), ("policy_id", pa.string()), ("policy_name", pa.string()),
    ("department", pa.string()), ("kind", pa.string()), ("period", pa.string()),
    ("uscc", pa.string()), ("name", pa.string()), ("outcome", pa.string()),
    ("amount", pa.decimal128(38, 2)), ("failed_item", pa.int64()), ("failed_guard", pa.string()),
    ("excluded_by", pa.string()), ("exclusive_group", pa.string()), ("over_budget", pa.bool_()),
    ("evidence_version", pa.string()), ("evidence_actual", pa.string()), ("evidence_result", pa.string()),
])

_pg_state: dict[str, object] = {}


def _pg_admin_engine():
    if "engine" not in _pg_state:
        engine = sa.create_engine(PG_ADMIN, poolclass=sa.pool.NullPool,
                                  connect_args={"connect_timeout": 3})
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("select 1"))
            _pg_state["engine"] = engine
        except Exception as exc:  # unreachable server
            _pg_state["engine"] = None
            _pg_state["error"] = exc
    return _pg_state["engine"]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'warehouse.db'}"
        yield url
        warehouse.dispose_all()
        return
    admin = _pg_admin_engine()
    if admin is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL unreachable in CI: {_pg_state.get('error')}")
        pytest.skip("PostgreSQL not reachable on 127.0.0.1:5432")
    schema = f"h5_{uuid.uuid4().hex[:12]}"
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    yield f"{PG_ADMIN}?options=-csearch_path%3D{schema}"
    warehouse.dispose_all()
    with admin.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))


@pytest.fixture
def engine(db_url):
    return warehouse.connect(db_url)


@pytest.fixture
def settings(tmp_path, db_url):
    s = Settings(landing=tmp_path / "landing", inbox=tmp_path / "inbox",
                 policies=tmp_path / "policies", output=tmp_path / "output",
                 work=tmp_path / "work", warehouse_url=db_url, expectations=tmp_path / "gx")
    s.policies.mkdir(parents=True)
    return s


def code(n: int) -> str:
    return uscc_mod.complete(f"91411303MA{n:07d}")


def match(policy_id="WL-RS-2026-01", uscc=None, outcome="eligible", amount="5000.00", *,
          n=1, name=None, kind="condition", period="2026", policy_name="小微企业稳岗奖励",
          department="区人力资源和社会保障局", over_budget=False, failed_item=None,
          evidence=None, as_of=date(2026, 11, 26)) -> dict:
    return {
        "as_of": as_of, "policy_id": policy_id, "policy_name": policy_name,
        "department": department, "kind": kind, "period": period, "uscc": uscc or code(n),
        "name": name or f"南阳市卧龙区示范{n}有限公司", "outcome": outcome,
        "amount": None if amount is None else Decimal(amount), "failed_item": failed_item,
        "failed_guard": None, "excluded_by": None, "exclusive_group": None,
        "over_budget": over_budget,
        "evidence": json.dumps(evidence if evidence is not None else [
            {"path": "0", "field": "insured_avg_12m", "op": "ge", "value": 10, "actual": "12.5",
             "result": True}], ensure_ascii=False),
    }


def table(rows: list[dict]) -> pa.Table:
    """Result rows as the engine writes them: each row's evidence (a JSON list, as `match`
    makes it) split into its policy version's template and its own values."""
    templates, lean = {}, []
    for r in rows:
        r = dict(r)
        template, actual, result = evidence.split(json.loads(r.pop("evidence")))
        version = evidence.version_of(r["policy_id"], template)
        templates[version] = template
        lean.append({**r, "evidence_version": version, "evidence_actual": actual, "evidence_result": result})
    return evidence.with_templates(pa.Table.from_pylist(lean, schema=MATCH_SCHEMA), templates)


def write_matches(settings: Settings, as_of: date, rows: list[dict]) -> Path:
    path = settings.run_dir(as_of) / "matches.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table([{**r, "as_of": as_of} for r in rows]), path)
    return path


def write_portrait(settings: Settings, as_of: date, people: dict[str, tuple[str, str]],
                   status: dict[str, str] | None = None, dishonest: set[str] = frozenset()) -> None:
    """people: uscc -> (phone, legal_rep); every enterprise registered, 存续 unless
    `status` says otherwise, listed as dishonest when in `dishonest` (the guards' fields)."""
    settings.portraits.mkdir(parents=True, exist_ok=True)
    status = {u: (status or {}).get(u, "存续") for u in people}
    t = pa.table({"uscc": list(people), "name": [f"企业{u[-4:]}" for u in people],
                  "phone": [p for p, _ in people.values()],
                  "legal_rep": [l for _, l in people.values()],
                  "registered": [True] * len(people), "status": list(status.values()),
                  "active": [s in ("存续", "在业") for s in status.values()],
                  "dishonest": [u in dishonest for u in people]})
    pq.write_table(t, settings.portrait_path(as_of))


def write_policy(settings: Settings, policy_id: str, publicity_days: int | None) -> None:
    extra = f"publicity_days: {publicity_days}\n" if publicity_days else ""
    (settings.policies / f"{policy_id}.yaml").write_text(
        f"id: {policy_id}\nname: 测试政策\n{extra}", encoding="utf-8")
