"""The results store's tables (SQLAlchemy Core), as the newest migration leaves them.

The migrations in ``audit/engine/migrations/versions/`` create and change the tables; this
module describes the result for queries, and a test compares the two (``alembic``'s
``compare_metadata``), so they cannot drift. Every name starts with ``nnaudit_``: a team's
PostgreSQL database may hold other tables (and its own ``alembic_version``).

- ``nnaudit_runs``: one row per run, keyed by the run id (results.json ``manifest.run_id``).
- ``nnaudit_metrics``: every metric of a run, its value encoded as in results.json (``value``
  holds finite numbers; ``special`` holds "Infinity" / "-Infinity"; both null: NaN, could not
  compute), its direction of better, and ``headline``, the label of a headline metric.
- ``nnaudit_findings``: every finding of a run, in results order.
- ``nnaudit_store``: one row naming the store schema revision and the nnaudit that last
  migrated it (a store from a newer nnaudit is refused with that version in the message).
"""

from __future__ import annotations

import sqlalchemy as sa

PREFIX = "nnaudit_"
VERSION_TABLE = "nnaudit_alembic_version"

metadata = sa.MetaData()

runs = sa.Table(
    "nnaudit_runs", metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("model_name", sa.String(255), nullable=False),
    sa.Column("model_version", sa.String(255)),
    sa.Column("version_source", sa.String(16)),
    sa.Column("git_commit", sa.String(64)),
    sa.Column("git_dirty", sa.Boolean),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("data_name", sa.Text),
    sa.Column("data_sha256", sa.String(64)),
    sa.Column("model_sha256", sa.String(64)),
    sa.Column("seed", sa.BigInteger),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("verdict", sa.String(16), nullable=False),
    sa.Column("run_dir", sa.Text, nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("config_path", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("nnaudit_version", sa.String(64), nullable=False),
    sa.Column("schema_version", sa.String(16), nullable=False),
    sa.Index("ix_nnaudit_runs_model_created", "model_name", "created_at"),
    sa.Index("ix_nnaudit_runs_created", "created_at"),
)

metrics = sa.Table(
    "nnaudit_metrics", metadata,
    sa.Column("run_id", sa.String(64), sa.ForeignKey("nnaudit_runs.run_id", ondelete="CASCADE"), primary_key=True),
    sa.Column("name", sa.String(512), primary_key=True),
    sa.Column("value", sa.Double),
    sa.Column("special", sa.String(16)),
    sa.Column("direction", sa.String(8)),
    sa.Column("headline", sa.String(128)),
    sa.Index("ix_nnaudit_metrics_name", "name"),
)

findings = sa.Table(
    "nnaudit_findings", metadata,
    sa.Column("run_id", sa.String(64), sa.ForeignKey("nnaudit_runs.run_id", ondelete="CASCADE"), primary_key=True),
    sa.Column("position", sa.Integer, primary_key=True),
    sa.Column("section", sa.String(255), nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("code", sa.String(255)),
    sa.Column("metric", sa.String(512)),
)

store_info = sa.Table(
    "nnaudit_store", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("revision", sa.String(64), nullable=False),
    sa.Column("nnaudit_version", sa.String(64), nullable=False),
    sa.Column("migrated_at", sa.DateTime(timezone=True), nullable=False),
)
