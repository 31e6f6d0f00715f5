"""Initial warehouse: runs, portraits, matches, ledger with its transition log,
payout batches and the inbox journal; transition guards as triggers.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""
from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Frozen as written on 2026-11-27: a migration never reads the live code's constants,
# or a later edit there would rewrite history. Later changes come in later migrations.
STATUSES = ("eligible", "notified", "confirmed", "declined", "approved", "rejected",
            "objected", "scheduled", "paid")
TRANSITIONS = (
    ("eligible", "notified"), ("notified", "confirmed"), ("notified", "declined"),
    ("confirmed", "approved"), ("confirmed", "rejected"), ("approved", "scheduled"),
    ("approved", "objected"), ("objected", "approved"), ("objected", "rejected"),
    ("scheduled", "paid"),
)
# What pipelines.warehouse.Money created then: text on SQLite (exact), NUMERIC(20,2) elsewhere.
Money = sa.Numeric(20, 2).with_variant(sa.String(32), "sqlite")
GUARDS_SQL = Path(__file__).resolve().parents[3] / "sql" / "0001_ledger_guards_{dialect}.sql"


def sql_statements(dialect: str) -> list[str]:
    """The statements of the frozen guards file, separated by lines reading `--;`."""
    text = Path(str(GUARDS_SQL).format(dialect=dialect)).read_text(encoding="utf-8")
    parts = [p.strip() for p in text.split("\n--;\n")]
    return [p for p in parts if p and not all(line.startswith("--") for line in p.splitlines())]


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("as_of", sa.Date, nullable=False),
        sa.Column("started_at", sa.DateTime, nullable=False),
        sa.Column("finished_at", sa.DateTime),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("note", sa.Text),
    )
    op.create_index("ix_runs_as_of", "runs", ["as_of"])
    op.create_table(
        "run_inputs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(64), sa.ForeignKey("runs.run_id"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("delivered_on", sa.Date),
        sa.Column("path", sa.Text),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("accepted", sa.Boolean),
        sa.UniqueConstraint("run_id", "kind", "name", name="uq_run_inputs"),
    )
    op.create_index("ix_run_inputs_run_id", "run_inputs", ["run_id"])
    op.create_table(
        "portraits",
        sa.Column("as_of", sa.Date, primary_key=True),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("run_id", sa.String(64)),
    )
    op.create_table(
        "matches",
        sa.Column("as_of", sa.Date, primary_key=True),
        sa.Column("policy_id", sa.String(100), primary_key=True),
        sa.Column("period", sa.String(32), primary_key=True),
        sa.Column("uscc", sa.String(18), primary_key=True),
        sa.Column("policy_name", sa.Text, nullable=False),
        sa.Column("department", sa.Text, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.Text),
        sa.Column("outcome", sa.String(24), nullable=False),
        sa.Column("amount", Money),
        sa.Column("failed_item", sa.BigInteger),
        sa.Column("failed_guard", sa.Text),
        sa.Column("excluded_by", sa.Text),
        sa.Column("exclusive_group", sa.Text),
        sa.Column("over_budget", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("evidence", sa.Text),
        sa.Column("run_id", sa.String(64)),
    )
    op.create_table(
        "ledger",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("policy_id", sa.String(100), nullable=False),
        sa.Column("period", sa.String(32), nullable=False),
        sa.Column("uscc", sa.String(18), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("amount", Money),
        sa.Column("last_match_amount", Money),
        sa.Column("evidence", sa.Text),
        sa.Column("policy_name", sa.Text, nullable=False),
        sa.Column("department", sa.Text, nullable=False),
        sa.Column("name", sa.Text),
        sa.Column("over_budget", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("publicity_days", sa.Integer),
        sa.Column("publicity_from", sa.Date),
        sa.Column("publicity_to", sa.Date),
        sa.Column("notified_as_of", sa.Date),
        sa.Column("first_run", sa.String(64), nullable=False),
        sa.Column("last_run", sa.String(64), nullable=False),
        sa.Column("first_as_of", sa.Date, nullable=False),
        sa.Column("last_as_of", sa.Date, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("policy_id", "period", "uscc", name="uq_ledger_key"),
        sa.CheckConstraint(
            "status IN (" + ", ".join(f"'{s}'" for s in STATUSES) + ")", name="ck_ledger_status"
        ),
    )
    allowed = op.create_table(
        "allowed_transitions",
        sa.Column("from_status", sa.String(16), primary_key=True),
        sa.Column("to_status", sa.String(16), primary_key=True),
    )
    op.bulk_insert(allowed, [{"from_status": a, "to_status": b} for a, b in TRANSITIONS])
    op.create_table(
        "ledger_transitions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("ledger_id", sa.Integer, sa.ForeignKey("ledger.id"), nullable=False),
        sa.Column("from_status", sa.String(16)),
        sa.Column("to_status", sa.String(16), nullable=False),
        sa.Column("at", sa.DateTime, nullable=False),
        sa.Column("run_id", sa.String(64)),
        sa.Column("source_file", sa.Text),
        sa.Column("source_sha256", sa.String(64)),
        sa.Column("department", sa.Text),
        sa.Column("amount", Money),
        sa.Column("note", sa.Text),
    )
    op.create_index("ix_ledger_transitions_ledger_id", "ledger_transitions", ["ledger_id"])
    op.create_table(
        "budget_releases",
        sa.Column("policy_id", sa.String(100), primary_key=True),
        sa.Column("period", sa.String(32), primary_key=True),
        sa.Column("operator", sa.Text, nullable=False),
        sa.Column("released_at", sa.DateTime, nullable=False),
        sa.Column("note", sa.Text),
    )
    op.create_table(
        "payout_batches",
        sa.Column("batch_id", sa.String(32), primary_key=True),
        sa.Column("as_of", sa.Date, nullable=False),
        sa.Column("run_id", sa.String(64)),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("items", sa.Integer, nullable=False),
        sa.Column("total", Money, nullable=False),
    )
    op.create_index("ix_payout_batches_as_of", "payout_batches", ["as_of"])
    op.create_table(
        "payout_items",
        sa.Column("batch_id", sa.String(32), sa.ForeignKey("payout_batches.batch_id"),
                  nullable=False),
        sa.Column("ledger_id", sa.Integer, sa.ForeignKey("ledger.id"), primary_key=True),
        sa.Column("amount", Money, nullable=False),
        sa.Column("department", sa.Text, nullable=False),
    )
    op.create_index("ix_payout_items_batch_id", "payout_items", ["batch_id"])
    op.create_table(
        "inbox_files",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("folder", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("received_at", sa.DateTime, nullable=False),
        sa.Column("outcome", sa.Text),
    )
    dialect = op.get_bind().dialect.name
    for statement in sql_statements(dialect):
        op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        for fn in ("ledger_guard_status", "ledger_guard_insert", "ledger_guard_delete",
                   "ledger_guard_append_only"):
            op.execute(f"DROP FUNCTION IF EXISTS {fn}() CASCADE")
    for table in ("inbox_files", "payout_items", "payout_batches", "budget_releases",
                  "ledger_transitions", "allowed_transitions", "ledger", "matches", "portraits",
                  "run_inputs", "runs"):
        op.drop_table(table)
