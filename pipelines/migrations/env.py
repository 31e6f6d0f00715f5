"""Alembic environment, driven programmatically by pipelines.warehouse.migrate.

`migrate` hands over an open connection in config.attributes["connection"];
without one (the alembic CLI with -x/ini), the URL in the config is used.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from pipelines import warehouse

config = context.config
target_metadata = warehouse.metadata


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_with(connection)
        return
    engine = warehouse.engine_for(config.get_main_option("sqlalchemy.url"))
    with engine.begin() as conn:
        _run_with(conn)


def _run_with(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run pipelines.warehouse.migrate")
run()
