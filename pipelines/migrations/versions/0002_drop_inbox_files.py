"""Drop inbox_files: nothing ever read or wrote it. The inbox's journal of processed
files is inbox/_state/processed.jsonl (pipelines.inbox), kept beside the files it
describes so that a department's drop folder and its journal move together.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_table("inbox_files")


def downgrade() -> None:
    op.create_table(
        "inbox_files",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("folder", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("received_at", sa.DateTime, nullable=False),
        sa.Column("outcome", sa.Text),
    )
