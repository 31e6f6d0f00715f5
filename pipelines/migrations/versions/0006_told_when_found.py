"""A result told the night it is found (issue 16): the nightly sync inserts such a ledger row
at `notified` (its two moves, eligible and notified, logged with it), instead of inserting it
at `eligible` and then rewriting the row, which at a province's scale (millions of new rows on
a first night) was a third of the ledger step.

The insert guard now also lets a row start at `notified` when it was told the night it was
first found (`notified_as_of` = `first_as_of`); every other new row still starts at
`eligible`, and an online application at `confirmed`.

Frozen as written: nothing is imported from pipelines.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08
"""
from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

SQLITE_INSERT_GUARD = """CREATE TRIGGER ledger_guard_insert
BEFORE INSERT ON ledger
WHEN NEW.status <> 'eligible'
 AND NOT (NEW.status = 'confirmed' AND NEW.applied_on IS NOT NULL)
 AND NOT (NEW.status = 'notified' AND NEW.notified_as_of IS NOT NULL AND NEW.notified_as_of = NEW.first_as_of)
BEGIN
  SELECT RAISE(ABORT, 'ledger: new rows start as eligible (told the night found: notified; an application: confirmed)');
END"""
POSTGRES_INSERT_GUARD = """CREATE OR REPLACE FUNCTION ledger_guard_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.status <> 'eligible' AND NOT (NEW.status = 'confirmed' AND NEW.applied_on IS NOT NULL)
     AND NOT (NEW.status = 'notified' AND NEW.notified_as_of IS NOT NULL
              AND NEW.notified_as_of = NEW.first_as_of) THEN
    RAISE EXCEPTION 'ledger: new rows start as eligible (told the night found: notified; an application: confirmed)'
      USING ERRCODE = 'check_violation';
  END IF;
  RETURN NEW;
END;
$$"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER ledger_guard_insert")
        op.execute(SQLITE_INSERT_GUARD)
    else:
        op.execute(POSTGRES_INSERT_GUARD)


def downgrade() -> None:
    raise NotImplementedError("the warehouse is only migrated forward")
