"""Alembic environment for the registry: runs on the connection ``registry.store.migrate``
hands over in ``config.attributes`` (no alembic.ini, no URL read from a file)."""

from alembic import context

from registry.store import VERSION_TABLE, metadata


def main() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run the registry's migrations with registry.store.migrate(url)")
    context.configure(connection=connection, target_metadata=metadata, version_table=VERSION_TABLE,
                      render_as_batch=connection.dialect.name == "sqlite")  # SQLite alters tables by copy
    with context.begin_transaction():
        context.run_migrations()


main()
