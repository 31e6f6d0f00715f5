"""Warehouse schema, migrations and the database's own guards, on SQLite and PostgreSQL."""
from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from h5_support import db_url, engine, match, table  # noqa: F401  (fixtures)
from pipelines.files import sha256_file
from pipelines import ledger, warehouse
from pipelines.warehouse import ledger as ledger_t, ledger_transitions

AS_OF = date(2026, 11, 26)
MIGRATIONS = warehouse.MIGRATIONS / "versions"


def _head() -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(warehouse.MIGRATIONS))
    return ScriptDirectory.from_config(cfg).get_current_head()


def test_migrations_are_frozen_as_written():
    """A migration never imports the live package: a later edit of a constant there would
    change what an old migration does (history rewritten)."""
    import ast

    for path in sorted(MIGRATIONS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n == "pipelines" or n.startswith("pipelines.") for n in names), path.name


def test_a_warehouse_of_the_first_release_upgrades_to_head(tmp_path):
    """Rows written under migration 0001 survive the upgrade; the unused inbox table is gone."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    warehouse.migrate(url, "0001")
    old = sa.create_engine(url)
    with old.begin() as conn:
        conn.execute(sa.text("INSERT INTO runs (run_id, as_of, started_at, status) "
                             "VALUES ('r0', '2026-11-01', '2026-11-01 02:00:00', 'success')"))
    old.dispose()
    warehouse.migrate(url)
    with sa.create_engine(url).connect() as conn:
        assert conn.execute(sa.text("select run_id from runs")).scalar_one() == "r0"
        assert "inbox_files" not in sa.inspect(conn).get_table_names()
        assert conn.execute(sa.text("select version_num from alembic_version")).scalar() == _head()


def test_migrated_schema_is_the_metadata_and_migrate_is_repeatable(db_url, engine):
    warehouse.migrate(db_url)  # second upgrade: nothing to do, no error
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(ctx, warehouse.metadata) == []
        assert conn.execute(sa.text("select version_num from alembic_version")).scalar() == _head()
        pairs = set(conn.execute(sa.select(warehouse.allowed_transitions)).all())
    assert pairs == set(warehouse.TRANSITIONS)


def _night(tmp_path, name: str, rows) -> "Path":
    import pyarrow.parquet as pq

    path = tmp_path / name
    pq.write_table(table(rows), path)
    return path


def test_money_is_exact_on_both_databases(engine, tmp_path):
    big = Decimal("123456789012345678.91")
    night = _night(tmp_path, "m.parquet", [match(amount=str(big)), match(n=2, amount="0.09")])
    with engine.begin() as conn:
        assert warehouse.register_matches(conn, AS_OF, night, "r1") == 2
    with engine.connect() as conn:
        assert conn.execute(sa.select(warehouse.match_counts.c.amount)).scalar_one() == big + Decimal("0.09")
    with pytest.raises(TypeError):
        warehouse.to_money(0.1)


def test_the_warehouse_registers_the_nights_file_not_its_rows(engine, tmp_path):
    """Path, hash and counts per policy and outcome; registering a date again replaces it."""
    first = _night(tmp_path, "a.parquet", [match(n=1), match(n=2), match(n=3, outcome="near_miss", amount=None)])
    with engine.begin() as conn:
        warehouse.register_matches(conn, AS_OF, first, "r1")
    again = _night(tmp_path, "b.parquet", [match(n=3)])
    other = _night(tmp_path, "c.parquet", [match(n=4, policy_id="WL-KJ-2026-01")])
    with engine.begin() as conn:
        warehouse.register_matches(conn, AS_OF, again, "r2")
        warehouse.register_matches(conn, date(2026, 11, 27), other, "r3")
    with engine.connect() as conn:
        files = conn.execute(sa.select(warehouse.match_files.c.as_of, warehouse.match_files.c.path,
                                       warehouse.match_files.c.sha256, warehouse.match_files.c.rows,
                                       warehouse.match_files.c.run_id).order_by("as_of")).all()
        counts = conn.execute(sa.select(warehouse.match_counts).order_by("as_of")).all()
        assert warehouse.newest_night(conn) == date(2026, 11, 27)
        assert warehouse.newest_night(conn, other_than=date(2026, 11, 27)) == AS_OF
        stored = conn.execute(sa.select(sa.func.count()).select_from(warehouse.matches)).scalar_one()
        versions = conn.execute(sa.select(warehouse.evidence_versions.c.policy_id)).scalars().all()
    assert files == [(AS_OF, str(again), sha256_file(again), 1, "r2"),
                     (date(2026, 11, 27), str(other), sha256_file(other), 1, "r3")]
    assert [(c.as_of, c.policy_id, c.outcome, c.rows, c.amount) for c in counts] == [
        (AS_OF, "WL-RS-2026-01", "eligible", 1, Decimal("5000.00")),
        (date(2026, 11, 27), "WL-KJ-2026-01", "eligible", 1, Decimal("5000.00"))]
    assert stored == 0                       # no result row is copied into the warehouse
    assert sorted(versions) == ["WL-KJ-2026-01", "WL-RS-2026-01"]   # one template per policy version


def test_a_warehouse_with_stored_matches_upgrades_to_the_lean_model(tmp_path):
    """0004 -> head: the nights stored row by row stay (with their evidence), are registered
    and counted; a ledger row keeps its full evidence text and still shows it."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    warehouse.migrate(url, "0004")
    old = sa.create_engine(url)
    evidence = '[{"path": "0", "field": "employees", "op": "ge", "value": 10, "actual": 12, "result": true}]'
    with old.begin() as conn:
        for n, (outcome, amount) in enumerate([("eligible", "1000.10"), ("eligible", "2000.25"),
                                               ("near_miss", None)]):
            conn.execute(sa.text(
                "INSERT INTO matches (as_of, policy_id, period, uscc, policy_name, department, kind, outcome, "
                "amount, over_budget, evidence, run_id) VALUES ('2026-11-20', 'P1', '2026', :u, '政策', '部门', "
                "'condition', :o, :a, 0, :e, 'r0')"), {"u": f"U{n}", "o": outcome, "a": amount, "e": evidence})
        conn.execute(sa.text(
            "INSERT INTO ledger (policy_id, period, uscc, status, amount, evidence, policy_name, department, "
            "over_budget, first_run, last_run, first_as_of, last_as_of, updated_at) VALUES ('P1', '2026', 'U0', "
            "'eligible', '1000.10', :e, '政策', '部门', 0, 'r0', 'r0', '2026-11-20', '2026-11-20', "
            "'2026-11-20 02:00:00')"), {"e": evidence})
    old.dispose()
    warehouse.migrate(url)
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(warehouse.matches)).scalar_one() == 3
        assert conn.execute(sa.select(warehouse.match_files.c.as_of, warehouse.match_files.c.path,
                                      warehouse.match_files.c.rows)).all() == [(date(2026, 11, 20), None, 3)]
        counts = {(c.outcome, c.rows, c.amount) for c in conn.execute(sa.select(warehouse.match_counts))}
        assert counts == {("eligible", 2, Decimal("3000.35")), ("near_miss", 1, None)}
        row = ledger.with_evidence(conn, ledger.rows_in(conn, "eligible"))[0]
        assert row["evidence"] == evidence and row["evidence_version"] is None
        assert warehouse.newest_night(conn) == date(2026, 11, 20)
    engine.dispose()


def _one_row(engine):
    with engine.begin() as conn:
        ledger.sync_from_matches(conn, AS_OF, table([match()]), "r1")
    with engine.connect() as conn:
        return conn.execute(sa.select(ledger_t.c.id)).scalar_one()


def _refused(engine, statement, params):
    with pytest.raises(sa.exc.DBAPIError):
        with engine.begin() as conn:
            conn.execute(sa.text(statement), params)


def test_database_refuses_an_illegal_transition(engine):
    lid = _one_row(engine)
    _refused(engine, "UPDATE ledger SET status = 'paid' WHERE id = :id", {"id": lid})
    _refused(engine, "UPDATE ledger SET status = 'bogus' WHERE id = :id", {"id": lid})
    _refused(engine, "DELETE FROM ledger WHERE id = :id", {"id": lid})
    with engine.begin() as conn:  # an allowed one passes the trigger
        conn.execute(sa.text("UPDATE ledger SET status = 'notified' WHERE id = :id"), {"id": lid})
    # once notified the amount is fixed
    _refused(engine, "UPDATE ledger SET amount = '1.00' WHERE id = :id", {"id": lid})
    with engine.connect() as conn:
        row = conn.execute(sa.select(ledger_t.c.status, ledger_t.c.amount)).one()
    assert row == ("notified", Decimal("5000.00"))


NEW_ROW = ("INSERT INTO ledger (policy_id, period, uscc, status, notified_as_of, amount, policy_name, department, "
           "over_budget, first_run, last_run, first_as_of, last_as_of, updated_at) VALUES ('P1', '2026', :u, "
           ":s, :told, '5.00', '政策', '部门', false, 'r1', 'r1', '2026-11-26', '2026-11-26', '2026-11-26 02:00:00')")


def test_database_lets_a_new_row_start_notified_only_when_told_the_night_it_is_found(engine):
    _refused(engine, NEW_ROW, {"u": "U1", "s": "notified", "told": None})
    _refused(engine, NEW_ROW, {"u": "U1", "s": "notified", "told": "2026-11-25"})
    _refused(engine, NEW_ROW, {"u": "U1", "s": "confirmed", "told": "2026-11-26"})   # no application
    _refused(engine, NEW_ROW, {"u": "U1", "s": "approved", "told": "2026-11-26"})
    with engine.begin() as conn:
        conn.execute(sa.text(NEW_ROW), {"u": "U2", "s": "notified", "told": "2026-11-26"})
    with engine.connect() as conn:
        assert conn.execute(sa.select(ledger_t.c.uscc, ledger_t.c.status)).all() == [("U2", "notified")]


def test_database_refuses_to_edit_the_transition_log(engine):
    _one_row(engine)
    _refused(engine, "UPDATE ledger_transitions SET note = 'x'", {})
    _refused(engine, "DELETE FROM ledger_transitions", {})
    _refused(engine, "INSERT INTO allowed_transitions VALUES ('paid', 'eligible')", {})
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(ledger_transitions)).scalar() == 1


def test_run_audit_records_inputs_with_hashes(engine, tmp_path):
    policy = tmp_path / "p.yaml"
    policy.write_text("id: X\n", encoding="utf-8")
    with engine.begin() as conn:
        warehouse.record_run(conn, "run-1", AS_OF, "running")
        warehouse.record_inputs(conn, "run-1", feeds=[{"name": "registry", "delivered_on": AS_OF,
                                                       "sha256": "ab" * 32}], policy_files=[policy])
        warehouse.record_run(conn, "run-1", AS_OF, "success", finished_at=warehouse.utcnow())
    with engine.connect() as conn:
        assert conn.execute(sa.select(warehouse.runs.c.status)).scalar_one() == "success"
        inputs = conn.execute(sa.select(warehouse.run_inputs.c.kind, warehouse.run_inputs.c.sha256)
                              .order_by(warehouse.run_inputs.c.kind)).all()
    assert inputs == [("feed", "ab" * 32), ("policy", sha256_file(policy))]


def test_0003_upgrades_a_warehouse_made_by_0001_and_keeps_its_guards(db_url):
    """A warehouse of the previous release, with rows in it, upgraded by the usual path."""
    warehouse.migrate(db_url, "0001")
    old = warehouse.engine_for(db_url)
    with old.begin() as conn:   # rows as 0001's code wrote them (no new columns yet)
        conn.execute(sa.text(
            "INSERT INTO ledger (policy_id, period, uscc, status, amount, policy_name, department, "
            "over_budget, first_run, last_run, first_as_of, last_as_of, updated_at) VALUES "
            "('P', '2026', :u, 'eligible', '5000.00', '测试', '区人社局', false, 'r1', 'r1', "
            "'2026-11-26', '2026-11-26', '2026-11-26 00:00:00')"), {"u": "9" * 18})
        lid = conn.execute(sa.text("SELECT id FROM ledger")).scalar_one()
        conn.execute(sa.text("INSERT INTO ledger_transitions (ledger_id, to_status, at) "
                             "VALUES (:id, 'eligible', '2026-11-26 00:00:00')"), {"id": lid})
        for to in ("notified", "confirmed", "approved"):
            conn.execute(sa.text("UPDATE ledger SET status = :to WHERE id = :id"), {"to": to, "id": lid})
    warehouse.migrate(db_url)
    engine = warehouse.connect(db_url)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(ctx, warehouse.metadata) == []
        assert conn.execute(sa.text("select version_num from alembic_version")).scalar() == _head()
        assert set(conn.execute(sa.select(warehouse.allowed_transitions)).all()) == set(warehouse.TRANSITIONS)
        row = conn.execute(sa.select(ledger_t)).one()
        assert (row.id, row.status, row.amount, row.bank_account) == (lid, "approved", Decimal("5000.00"), None)
        assert conn.execute(sa.select(sa.func.count()).select_from(ledger_transitions)).scalar() == 1
    # the new moves pass the database's guard, the old refusals still hold
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE ledger SET status = 'suspended', bank_account = '6222' WHERE id = :id"),
                     {"id": lid})
    _refused(engine, "UPDATE ledger SET status = 'paid' WHERE id = :id", {"id": lid})
    _refused(engine, "UPDATE ledger SET status = 'bogus' WHERE id = :id", {"id": lid})
    _refused(engine, "UPDATE ledger SET amount = '1.00' WHERE id = :id", {"id": lid})
    _refused(engine, "DELETE FROM ledger WHERE id = :id", {"id": lid})
    _refused(engine, "INSERT INTO allowed_transitions VALUES ('recovered', 'paid')", {})
    _refused(engine, "INSERT INTO ledger (policy_id, period, uscc, status, policy_name, department, first_run, "
                     "last_run, first_as_of, last_as_of, updated_at) VALUES ('P', '2026', 'x', 'paid', 'n', 'd', "
                     "'r', 'r', '2026-11-26', '2026-11-26', '2026-11-26 00:00:00')", {})
    _refused(engine, "UPDATE ledger_transitions SET note = 'x'", {})
    with engine.begin() as conn:
        for to in ("approved", "scheduled", "paid", "recovering", "recovered"):
            conn.execute(sa.text("UPDATE ledger SET status = :to WHERE id = :id"), {"to": to, "id": lid})
        conn.execute(sa.insert(warehouse.recoveries).values(
            ledger_id=lid, amount=Decimal("5000.00"), reason="虚报", requested_at=warehouse.utcnow()))
    _refused(engine, "UPDATE ledger SET status = 'paid' WHERE id = :id", {"id": lid})


@pytest.mark.postgres
def test_the_ledger_step_lock_is_per_schema_on_postgresql():
    """Warehouses in two schemas of one database never wait for each other's ledger step;
    a second holder of the same schema does."""
    from tests.conftest import postgres_schema

    with postgres_schema("lock_a") as url_a, postgres_schema("lock_b") as url_b:
        a, b = warehouse.connect(url_a), warehouse.connect(url_b)
        other_a = sa.create_engine(url_a, poolclass=sa.pool.NullPool)
        try_lock = sa.text("SELECT pg_try_advisory_lock(:k, hashtext(current_schema()))")
        unlock = sa.text("SELECT pg_advisory_unlock(:k, hashtext(current_schema()))")
        with warehouse.ledger_step_lock(a):
            with b.connect() as conn:
                assert conn.execute(try_lock, {"k": warehouse.LEDGER_STEP_LOCK}).scalar() is True
                conn.execute(unlock, {"k": warehouse.LEDGER_STEP_LOCK})
            with other_a.connect() as conn:
                assert conn.execute(try_lock, {"k": warehouse.LEDGER_STEP_LOCK}).scalar() is False
        other_a.dispose()


@pytest.mark.parametrize("db_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True)
def test_postgresql_plans_the_sync_and_supervision_on_fresh_statistics(engine):   # noqa: F811
    """A bulk load leaves PostgreSQL's statistics stale (a temporary table never gets any), and
    its planner then takes a million rows for a few hundred: the sync and 督导统计 gather them."""
    from pipelines import oversight
    from pipelines.workdays import WorkCalendar

    def analysed() -> dict[str, int]:
        with engine.connect() as conn:
            return dict(conn.exec_driver_sql(
                "SELECT relname, analyze_count + autoanalyze_count FROM pg_stat_user_tables "
                "WHERE relname IN ('ledger', 'ledger_transitions')").all())

    before = analysed()
    with engine.begin() as conn:
        ledger.sync_from_matches(conn, AS_OF, table([match(n=i) for i in range(50)]), "run-1")
    assert analysed()["ledger"] > before.get("ledger", 0)
    with engine.begin() as conn:
        oversight.compute(conn, AS_OF, WorkCalendar(), {})
    assert analysed()["ledger_transitions"] > before.get("ledger_transitions", 0)


def test_readers_beside_the_stage_leave_it_the_write_lock(tmp_path):
    """`warehouse.reader` (the stage's SMS outbox and 督导统计, read in threads after the night's
    moves) takes no write lock on SQLite: two readers and one ordinary transaction, whose
    start takes the write lock, are open at once, and none of them waits."""
    engine = warehouse.connect(f"sqlite:///{tmp_path / 'w.db'}")
    count = sa.select(sa.func.count()).select_from(ledger_t)
    with warehouse.reader(engine) as first, warehouse.reader(engine) as second, engine.connect() as stage:
        for conn in (first, second, stage):   # no queueing (the stage's 60 s): a lock taken fails at once
            conn.connection.dbapi_connection.execute("PRAGMA busy_timeout=100")
        assert first.execute(count).scalar_one() == 0
        assert second.execute(count).scalar_one() == 0
        assert stage.execute(count).scalar_one() == 0      # BEGIN IMMEDIATE: the write lock
        stage.rollback()


def test_a_temporary_table_done_with_is_gone_on_every_connection_after(engine):
    """The sync's temporary table of a province's night is not DROPped on SQLite (that walks every
    page of it) but goes with its connection; a pooled connection never carries it on, and a
    second sync on the same connection finds it and starts afresh."""
    rows = table([match(n=1), match(n=2)])
    with engine.begin() as conn:
        assert ledger.sync_from_matches(conn, AS_OF, rows, "r1")["new"] == 2
        assert ledger.sync_from_matches(conn, AS_OF, rows, "r1")["new"] == 0
    for _ in range(2):
        with engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                assert sa.inspect(conn).get_temp_table_names() == []
            assert conn.execute(sa.select(sa.func.count()).select_from(ledger_t)).scalar_one() == 2
