"""Alembic environment: the URL and metadata come from the application itself."""

from alembic import context
from sqlalchemy import Connection

import app.models  # noqa: F401 - registers the tables on Base.metadata
from app.db import Base, get_engine

target_metadata = Base.metadata


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connectable = context.config.attributes.get("connection")
if connectable is not None:
    run_migrations(connectable)
else:
    with get_engine().connect() as connection:
        run_migrations(connection)
        connection.commit()
