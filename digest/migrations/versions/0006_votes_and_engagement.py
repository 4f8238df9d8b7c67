"""readers' votes and their visits of our own pages

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import digest.db

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "vote",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column("tool_slug", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("choice", sqlmodel.sql.sqltypes.AutoString(length=4), nullable=False),
        sa.Column("delivery_id", sa.Integer(), nullable=False),
        sa.Column("digest_id", sa.Integer(), nullable=False),
        sa.Column("first_voted_at", digest.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("voted_at", digest.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("choice IN ('ship', 'skip')", name="ck_vote_choice"),
        sa.ForeignKeyConstraint(["delivery_id"], ["delivery.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["digest_id"], ["digest.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["subscriber_id"], ["subscriber.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("subscriber_id", "tool_slug", name="uq_vote_subscriber_tool"),
    )
    with op.batch_alter_table("vote", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_vote_digest_id"), ["digest_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_vote_tool_slug"), ["tool_slug"], unique=False)

    op.create_table(
        "linkvisit",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("delivery_id", sa.Integer(), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("target", sqlmodel.sql.sqltypes.AutoString(length=700), nullable=False),
        sa.Column("visited_at", digest.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('comparison', 'vote', 'archive')", name="ck_linkvisit_kind"),
        sa.ForeignKeyConstraint(["delivery_id"], ["delivery.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("delivery_id", "kind", "target", name="uq_linkvisit_delivery_link"),
    )


def downgrade() -> None:
    op.drop_table("linkvisit")
    with op.batch_alter_table("vote", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_vote_tool_slug"))
        batch_op.drop_index(batch_op.f("ix_vote_digest_id"))
    op.drop_table("vote")
