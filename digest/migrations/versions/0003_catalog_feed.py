"""catalog feed: the validators and generated_at of the feed last imported from each address

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import digest.db

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "catalog_feed",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("url", sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=False),
        sa.Column("etag", sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=True),
        sa.Column("last_modified", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
        sa.Column("generated_at", digest.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("synced_at", digest.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("catalog_feed", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_catalog_feed_url"), ["url"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("catalog_feed", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_catalog_feed_url"))
    op.drop_table("catalog_feed")
