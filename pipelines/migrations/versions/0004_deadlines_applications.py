"""Deadlines and online applications (issue 15): `expired` (逾期未确认) and its
transition, the 催办 date, the application date of a `manual` policy's online
application (which enters the ledger at `confirmed`), and the business date of
every logged transition (what the supervision figures are rebuilt from).

Frozen as written: statuses, transitions and triggers are spelled out here, never
imported from pipelines.

SQLite cannot alter a CHECK constraint: the ledger is rebuilt as in 0003, and its
triggers are created again; the insert guard now lets a row start at `confirmed`
when it carries its application date, and every other new row still starts at
`eligible`. PostgreSQL replaces the guard's function.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

STATUSES = ("eligible", "notified", "confirmed", "declined", "approved", "rejected",
            "objected", "scheduled", "paid", "suspended", "recovering", "recovered", "expired")
NEW_TRANSITIONS = (("notified", "expired"),)
NEW_LEDGER_COLUMNS = (("applied_on", sa.Date), ("reminded_as_of", sa.Date))

SQLITE_LEDGER_TRIGGERS = (
    """CREATE TRIGGER ledger_guard_status
BEFORE UPDATE OF status ON ledger
WHEN OLD.status <> NEW.status
 AND NOT EXISTS (SELECT 1 FROM allowed_transitions
                 WHERE from_status = OLD.status AND to_status = NEW.status)
BEGIN
  SELECT RAISE(ABORT, 'ledger: transition not allowed');
END""",
    """CREATE TRIGGER ledger_guard_amount
BEFORE UPDATE OF amount ON ledger
WHEN OLD.status <> 'eligible' AND NEW.amount IS NOT OLD.amount
BEGIN
  SELECT RAISE(ABORT, 'ledger: amount is fixed after eligible');
END""",
    """CREATE TRIGGER ledger_guard_insert
BEFORE INSERT ON ledger
WHEN NEW.status <> 'eligible'
 AND NOT (NEW.status = 'confirmed' AND NEW.applied_on IS NOT NULL)
BEGIN
  SELECT RAISE(ABORT, 'ledger: new rows start as eligible (an application as confirmed)');
END""",
    """CREATE TRIGGER ledger_guard_delete
BEFORE DELETE ON ledger
BEGIN
  SELECT RAISE(ABORT, 'ledger: rows are never deleted');
END""",
)
SQLITE_ALLOWED_NO_INSERT = """CREATE TRIGGER allowed_transitions_no_insert
BEFORE INSERT ON allowed_transitions
BEGIN
  SELECT RAISE(ABORT, 'allowed_transitions changes only by migration');
END"""
POSTGRES_INSERT_GUARD = """CREATE OR REPLACE FUNCTION ledger_guard_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.status <> 'eligible' AND NOT (NEW.status = 'confirmed' AND NEW.applied_on IS NOT NULL) THEN
    RAISE EXCEPTION 'ledger: new rows start as eligible (an application as confirmed)'
      USING ERRCODE = 'check_violation';
  END IF;
  RETURN NEW;
END;
$$"""


def _check(statuses: tuple[str, ...]) -> str:
    return "status IN (" + ", ".join(f"'{s}'" for s in statuses) + ")"


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        with op.batch_alter_table("ledger", recreate="always") as batch:
            batch.drop_constraint("ck_ledger_status", type_="check")
            batch.create_check_constraint("ck_ledger_status", _check(STATUSES))
            for name, type_ in NEW_LEDGER_COLUMNS:
                batch.add_column(sa.Column(name, type_))
        for statement in SQLITE_LEDGER_TRIGGERS:
            op.execute(statement)
        op.execute("DROP TRIGGER allowed_transitions_no_insert")
    else:
        op.drop_constraint("ck_ledger_status", "ledger", type_="check")
        op.create_check_constraint("ck_ledger_status", "ledger", _check(STATUSES))
        for name, type_ in NEW_LEDGER_COLUMNS:
            op.add_column("ledger", sa.Column(name, type_))
        op.execute(POSTGRES_INSERT_GUARD)
        op.execute("ALTER TABLE allowed_transitions DISABLE TRIGGER allowed_transitions_frozen")
    allowed = sa.table("allowed_transitions", sa.column("from_status"), sa.column("to_status"))
    op.bulk_insert(allowed, [{"from_status": a, "to_status": b} for a, b in NEW_TRANSITIONS])
    if dialect == "sqlite":
        op.execute(SQLITE_ALLOWED_NO_INSERT)
    else:
        op.execute("ALTER TABLE allowed_transitions ENABLE TRIGGER allowed_transitions_frozen")
    # The business date of a move: the run's as_of, or for a returned file the day after
    # the newest run (the night that first sees it). NULL on moves logged before 0004.
    op.add_column("ledger_transitions", sa.Column("as_of", sa.Date))


def downgrade() -> None:
    raise NotImplementedError("the warehouse is only migrated forward")
