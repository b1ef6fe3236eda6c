"""The first results store schema: runs, metrics, findings and the store's own row.

Revision ID: 0001
Revises:
Created: nnaudit 0.1.0
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "nnaudit_runs",
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
    )
    op.create_index("ix_nnaudit_runs_model_created", "nnaudit_runs", ["model_name", "created_at"])
    op.create_index("ix_nnaudit_runs_created", "nnaudit_runs", ["created_at"])
    op.create_table(
        "nnaudit_metrics",
        sa.Column("run_id", sa.String(64), sa.ForeignKey("nnaudit_runs.run_id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("name", sa.String(512), primary_key=True),
        sa.Column("value", sa.Double),
        sa.Column("special", sa.String(16)),
        sa.Column("direction", sa.String(8)),
        sa.Column("headline", sa.String(128)),
    )
    op.create_index("ix_nnaudit_metrics_name", "nnaudit_metrics", ["name"])
    op.create_table(
        "nnaudit_findings",
        sa.Column("run_id", sa.String(64), sa.ForeignKey("nnaudit_runs.run_id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("position", sa.Integer, primary_key=True),
        sa.Column("section", sa.String(255), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("code", sa.String(255)),
        sa.Column("metric", sa.String(512)),
    )
    op.create_table(
        "nnaudit_store",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("revision", sa.String(64), nullable=False),
        sa.Column("nnaudit_version", sa.String(64), nullable=False),
        sa.Column("migrated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("nnaudit_store")
    op.drop_table("nnaudit_findings")
    op.drop_index("ix_nnaudit_metrics_name", table_name="nnaudit_metrics")
    op.drop_table("nnaudit_metrics")
    op.drop_index("ix_nnaudit_runs_created", table_name="nnaudit_runs")
    op.drop_index("ix_nnaudit_runs_model_created", table_name="nnaudit_runs")
    op.drop_table("nnaudit_runs")
