"""The money path (issue 13): 再确认 (`suspended`), 追回 (`recovering`, `recovered`),
the confirmation's 信用承诺 and payee account on the ledger, and the recoveries table.

Frozen as written: every status, transition, type and trigger is spelled out here,
never imported from pipelines, so this migration does the same thing whatever later
code says.

SQLite cannot alter a CHECK constraint: the ledger is rebuilt (Alembic's batch
mode: copy, drop, rename), which drops its triggers, so they are created again
below exactly as 0001 made them (sql/0001_ledger_guards_sqlite.sql). `warehouse.migrate` runs SQLite migrations with
foreign keys off and checks them before committing (SQLite's documented way to
rebuild a referenced table).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# What pipelines.warehouse.Money creates: text on SQLite (exact), NUMERIC(20,2) elsewhere.
Money = sa.Numeric(20, 2).with_variant(sa.String(32), "sqlite")
OLD_STATUSES = ("eligible", "notified", "confirmed", "declined", "approved", "rejected",
                "objected", "scheduled", "paid")
NEW_STATUSES = OLD_STATUSES + ("suspended", "recovering", "recovered")
NEW_TRANSITIONS = (
    ("approved", "suspended"), ("suspended", "approved"), ("suspended", "rejected"),
    ("paid", "recovering"), ("recovering", "recovered"),
)
NEW_COLUMNS = (
    ("commitment", sa.String(16)), ("payee_name", sa.Text), ("bank_name", sa.Text),
    ("bank_account", sa.String(32)), ("recheck_reason", sa.Text), ("recheck_override", sa.Text),
    ("paid_on", sa.Date),
)

# 0001's ledger triggers on SQLite, recreated after the rebuild (a dropped table takes its triggers).
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
BEGIN
  SELECT RAISE(ABORT, 'ledger: new rows start as eligible');
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

# The payee account and the recovery's facts are money data: they, too, are only
# ever inserted or set, but the ledger row itself changes status, so the guards
# stay those of 0001 (status, amount, insert, delete) on the wider check.


def _check(statuses: tuple[str, ...]) -> str:
    return "status IN (" + ", ".join(f"'{s}'" for s in statuses) + ")"


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        with op.batch_alter_table("ledger", recreate="always") as batch:
            batch.drop_constraint("ck_ledger_status", type_="check")
            batch.create_check_constraint("ck_ledger_status", _check(NEW_STATUSES))
            for name, type_ in NEW_COLUMNS:
                batch.add_column(sa.Column(name, type_))
        for statement in SQLITE_LEDGER_TRIGGERS:
            op.execute(statement)
        op.execute("DROP TRIGGER allowed_transitions_no_insert")
    else:
        op.drop_constraint("ck_ledger_status", "ledger", type_="check")
        op.create_check_constraint("ck_ledger_status", "ledger", _check(NEW_STATUSES))
        for name, type_ in NEW_COLUMNS:
            op.add_column("ledger", sa.Column(name, type_))
        op.execute("ALTER TABLE allowed_transitions DISABLE TRIGGER allowed_transitions_frozen")
    allowed = sa.table("allowed_transitions", sa.column("from_status"), sa.column("to_status"))
    op.bulk_insert(allowed, [{"from_status": a, "to_status": b} for a, b in NEW_TRANSITIONS])
    if dialect == "sqlite":
        op.execute(SQLITE_ALLOWED_NO_INSERT)
    else:
        op.execute("ALTER TABLE allowed_transitions ENABLE TRIGGER allowed_transitions_frozen")

    op.create_table(
        "recoveries",
        sa.Column("ledger_id", sa.Integer, sa.ForeignKey("ledger.id"), primary_key=True),
        sa.Column("amount", Money, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("requested_at", sa.DateTime, nullable=False),
        sa.Column("request_file", sa.Text),
        sa.Column("received_amount", Money),
        sa.Column("received_on", sa.Date),
        sa.Column("receipt_file", sa.Text),
    )


def downgrade() -> None:
    raise NotImplementedError("the warehouse is only migrated forward")
