"""The lean result model (issue 16): the warehouse keeps the ledger, not the night's bulk.

- `match_files`: each night's matches.parquet, registered by path, sha256 and row count
  (the night's results stay in that file; lists and reports read it).
- `match_counts`: per night, policy, period and outcome, the rows and the amount total.
- `evidence_versions`: each policy version's evidence template, stored once; a ledger row
  keeps only its values (`evidence_version`, `evidence_actual`, `evidence_result`) and
  shows the full evidence put together from both.

Existing warehouses: the `matches` table and its rows are left as they are (rows already
stored keep their evidence); each night it holds is registered in `match_files` with no
path (its rows are in `matches`) and counted into `match_counts`. Ledger rows already
stored keep their full `evidence` text; the new columns stay empty for them.

Frozen as written: nothing is imported from pipelines.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# What pipelines.warehouse.Money creates: text on SQLite (exact), NUMERIC(20,2) elsewhere.
Money = sa.Numeric(20, 2).with_variant(sa.String(32), "sqlite")
NEW_LEDGER_COLUMNS = (("evidence_version", sa.String(16)), ("evidence_actual", sa.Text),
                      ("evidence_result", sa.Text))


def upgrade() -> None:
    op.create_table(
        "match_files",
        sa.Column("as_of", sa.Date, primary_key=True),
        sa.Column("path", sa.Text),                 # null: a night stored before 0005, rows in `matches`
        sa.Column("sha256", sa.String(64)),
        sa.Column("rows", sa.BigInteger, nullable=False),
        sa.Column("run_id", sa.String(64)),
        sa.Column("registered_at", sa.DateTime),
    )
    op.create_table(
        "match_counts",
        sa.Column("as_of", sa.Date, primary_key=True),
        sa.Column("policy_id", sa.String(100), primary_key=True),
        sa.Column("period", sa.String(32), primary_key=True),
        sa.Column("outcome", sa.String(24), primary_key=True),
        sa.Column("rows", sa.BigInteger, nullable=False),
        sa.Column("amount", Money),
    )
    op.create_table(
        "evidence_versions",
        sa.Column("version", sa.String(16), primary_key=True),
        sa.Column("policy_id", sa.String(100), nullable=False),
        sa.Column("template", sa.Text, nullable=False),
        sa.Column("first_as_of", sa.Date),
    )
    for name, type_ in NEW_LEDGER_COLUMNS:
        op.add_column("ledger", sa.Column(name, type_))
    # The nights already stored row by row: registered and counted, their rows left in place.
    op.execute("INSERT INTO match_files (as_of, path, sha256, rows, run_id) "
               "SELECT as_of, NULL, NULL, count(*), max(run_id) FROM matches GROUP BY as_of")
    # SQLite keeps money as exact text with two decimals ("1234.50"): summed as integer 分,
    # never through a float.
    fen = "sum(CAST(replace(amount, '.', '') AS INTEGER))"
    amount = (f"CASE WHEN {fen} IS NULL THEN NULL ELSE printf('%d.%02d', {fen} / 100, {fen} % 100) END"
              if op.get_bind().dialect.name == "sqlite" else "sum(amount)")
    op.execute("INSERT INTO match_counts (as_of, policy_id, period, outcome, rows, amount) "
               f"SELECT as_of, policy_id, period, outcome, count(*), {amount} "
               "FROM matches GROUP BY as_of, policy_id, period, outcome")


def downgrade() -> None:
    for name, _ in NEW_LEDGER_COLUMNS:
        op.drop_column("ledger", name)
    op.drop_table("evidence_versions")
    op.drop_table("match_counts")
    op.drop_table("match_files")
