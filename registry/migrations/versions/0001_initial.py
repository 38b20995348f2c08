"""The initial schema: personas, persona_versions, build_jobs.

Revision ID: 0001_initial
Revises:
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Written out rather than taken from registry.store.metadata: a migration is a fixed
    # record of what the schema was at this revision, whatever the tables look like later.
    op.create_table(
        "personas",
        sa.Column("persona_id", sa.String(64), primary_key=True),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("metadata", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "persona_versions",
        sa.Column("persona_id", sa.String(64), sa.ForeignKey("personas.persona_id"), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("pack", sa.Text, nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("persona_id", "content_hash", name="uq_persona_versions_content"),
    )
    op.create_table(
        "build_jobs",
        sa.Column("job_id", sa.String(32), primary_key=True),
        sa.Column("persona_id", sa.String(64), sa.ForeignKey("personas.persona_id"), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("progress", sa.Float, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=True),
        sa.Column("qc", sa.JSON, nullable=True),
        sa.Column("warnings", sa.JSON, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("state IN ('queued', 'running', 'published', 'blocked', 'failed')",
                           name="ck_build_jobs_state"),
        sa.CheckConstraint("progress >= 0 AND progress <= 1", name="ck_build_jobs_progress"),
    )
    op.create_index("ix_build_jobs_persona_id", "build_jobs", ["persona_id"])


def downgrade() -> None:
    op.drop_index("ix_build_jobs_persona_id", table_name="build_jobs")
    op.drop_table("build_jobs")
    op.drop_table("persona_versions")
    op.drop_table("personas")
