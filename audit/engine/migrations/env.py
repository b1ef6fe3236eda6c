"""Alembic environment of the results store's migrations.

nnaudit runs these itself (``audit.engine.store.migrate``): it opens a transaction (holding the
store's write lock: ``BEGIN IMMEDIATE`` on SQLite, an advisory lock on PostgreSQL), passes the
connection in ``config.attributes["connection"]`` and commits when the upgrade and the
``nnaudit_store`` row are written. No alembic.ini is needed.
"""

from __future__ import annotations

from alembic import context

from audit.engine.store_tables import VERSION_TABLE, metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("the results store's migrations run through audit.engine.store.migrate, which passes an open "
                       "connection; there is no offline mode")
context.configure(connection=connection, target_metadata=metadata, version_table=VERSION_TABLE)
with context.begin_transaction():
    context.run_migrations()
