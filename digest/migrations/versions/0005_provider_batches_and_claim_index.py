"""provider batches (the cancel budget) and the claim's index

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 08:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import digest.db

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "providerbatch",
        sa.Column("batch_id", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("digest_id", sa.Integer(), nullable=True),
        sa.Column("send_at", digest.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("opened_at", digest.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("cancelled_at", digest.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("forgotten_at", digest.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["digest_id"], ["digest.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("batch_id"),
    )
    # Every batch the ledger knows of: the cancelled ones with their cancel, and those its rows
    # still name (each then holds a slot until its send time is too close to cancel).
    op.execute(
        "INSERT INTO providerbatch (batch_id, digest_id, send_at, opened_at, requests, "
        "cancelled_at, forgotten_at) SELECT batch_id, digest_id, send_at, cancelled_at, 1, "
        "cancelled_at, forgotten_at FROM cancelledbatch"
    )
    op.execute(
        "INSERT INTO providerbatch (batch_id, digest_id, send_at, opened_at, requests) "
        "SELECT provider_batch_id, MIN(digest_id), MIN(send_at), MIN(claimed_at), COUNT(*) "
        "FROM delivery WHERE provider_batch_id IS NOT NULL AND send_at IS NOT NULL "
        "AND claimed_at IS NOT NULL AND provider_batch_id NOT IN "
        "(SELECT batch_id FROM cancelledbatch) GROUP BY provider_batch_id"
    )
    op.drop_table("cancelledbatch")
    # Plain index statements: both databases take them without rebuilding the table.
    op.drop_index("ix_delivery_digest_state_id", table_name="delivery")
    op.drop_index("ix_delivery_subscriber_id", table_name="delivery")
    op.create_index(
        "ix_delivery_claim",
        "delivery",
        ["digest_id", "variant_id", "id"],
        sqlite_where=sa.text("state = 'pending'"),
        postgresql_where=sa.text("state = 'pending'"),
    )


def downgrade() -> None:
    op.drop_index("ix_delivery_claim", table_name="delivery")
    op.create_index("ix_delivery_subscriber_id", "delivery", ["subscriber_id"])
    op.create_index("ix_delivery_digest_state_id", "delivery", ["digest_id", "state", "id"])
    op.create_table(
        "cancelledbatch",
        sa.Column("batch_id", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("digest_id", sa.Integer(), nullable=True),
        sa.Column("send_at", digest.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("cancelled_at", digest.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("forgotten_at", digest.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["digest_id"], ["digest.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("batch_id"),
    )
    op.execute(
        "INSERT INTO cancelledbatch (batch_id, digest_id, send_at, cancelled_at, forgotten_at) "
        "SELECT batch_id, digest_id, send_at, cancelled_at, forgotten_at FROM providerbatch "
        "WHERE cancelled_at IS NOT NULL"
    )
    op.drop_table("providerbatch")
