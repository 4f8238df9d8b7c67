"""editorial edits and approvals

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 09:55:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import digest.db

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "editorialedit",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("week", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
        sa.Column("field", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("key", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("made_by", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("made_at", digest.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "field IN ('intro', 'subject', 'pin', 'exclude', 'verdict', 'lead')",
            name="ck_editorialedit_field",
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("week", "field", "key", name="uq_editorialedit_week_field_key"),
    )
    with op.batch_alter_table("editorialedit", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_editorialedit_week"), ["week"], unique=False)

    op.create_table(
        "approval",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("week", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
        sa.Column("content_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("decision", sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("decided_by", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("decided_at", digest.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("flow_run_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.CheckConstraint(
            "decision IN ('waiting', 'approved', 'rejected')", name="ck_approval_decision"
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("approval", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_approval_week"), ["week"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("approval", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_approval_week"))
    op.drop_table("approval")
    with op.batch_alter_table("editorialedit", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_editorialedit_week"))
    op.drop_table("editorialedit")
