"""The database tables. States are strings with CHECK constraints (digest/states.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, Column, Index, Table, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from digest.db import UTCDateTime
from digest.states import DeliveryState, SubscriberStatus, check_constraint_sql


def _utc(**kwargs: Any) -> Any:
    return Field(sa_type=UTCDateTime, **kwargs)


class Tool(SQLModel, table=True):
    """One catalog record, keyed by slug; text fields are untrusted."""

    id: int | None = Field(default=None, primary_key=True)
    slug: str = Field(unique=True, index=True, max_length=200)
    name: str
    vendor: str | None = None
    category: str = Field(index=True)
    tagline: str
    description: str | None = Field(default=None, sa_type=Text)
    url: str | None = None
    pricing: str = Field(default="unknown")
    license: str | None = None
    open_weights: bool | None = None
    tags: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    best_for: str | None = None
    added_at: datetime = _utc(index=True)
    community_ship: int | None = None
    community_skip: int | None = None
    # Digest of the imported record, so a re-import of an unchanged record writes nothing.
    content_hash: str = Field(max_length=64)
    imported_at: datetime = _utc()

    __table_args__ = (
        CheckConstraint(
            "pricing IN ('free', 'freemium', 'paid', 'unknown')", name="ck_tool_pricing"
        ),
    )


class Review(SQLModel, table=True):
    """One panel member's ship/skip verdict on a tool."""

    id: int | None = Field(default=None, primary_key=True)
    tool_id: int = Field(foreign_key="tool.id", index=True, ondelete="CASCADE")
    position: int
    reviewer: str
    lens: str | None = None
    verdict: str
    score: int | None = None
    quote: str = Field(default="", sa_type=Text)

    __table_args__ = (
        UniqueConstraint("tool_id", "position", name="uq_review_tool_position"),
        CheckConstraint("verdict IN ('ship', 'skip')", name="ck_review_verdict"),
    )


class Subscriber(SQLModel, table=True):
    """A person on the list; `email_key` is their matching key (digest/audience/addresses.py)."""

    id: int | None = Field(default=None, primary_key=True)
    email: str
    email_key: str = Field(unique=True, index=True)
    name: str | None = None
    # Empty list: every category.
    categories: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    subscribed_at: datetime | None = _utc(default=None)
    consent_source: str | None = None
    consent_ip: str | None = None
    consent_form_version: str | None = None
    confirmed_at: datetime | None = _utc(default=None)
    # When the last double opt-in email went out: the sign-up form resends only after a pause.
    confirmation_sent_at: datetime | None = _utc(default=None)
    status: str = Field(default=SubscriberStatus.ACTIVE.value, index=True)
    status_changed_at: datetime | None = _utc(default=None)
    created_at: datetime = _utc()

    __table_args__ = (
        CheckConstraint(
            check_constraint_sql("status", SubscriberStatus), name="ck_subscriber_status"
        ),
    )


class Digest(SQLModel, table=True):
    """One week's digest: content frozen at first planning, and the lease of the run sending it."""

    id: int | None = Field(default=None, primary_key=True)
    week: str = Field(unique=True, index=True, max_length=8)
    subject: str
    content: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    created_at: datetime = _utc()
    # Set once every recipient has a delivery row; later runs never add recipients.
    planned_at: datetime | None = _utc(default=None)
    completed_at: datetime | None = _utc(default=None)
    lease_owner: str | None = None
    lease_expires_at: datetime | None = _utc(default=None)


class DigestVariant(SQLModel, table=True):
    """The rendered bodies for one set of categories, with per-subscriber substitution tokens."""

    id: int | None = Field(default=None, primary_key=True)
    digest_id: int = Field(foreign_key="digest.id", index=True, ondelete="CASCADE")
    # Sorted, lower-cased categories joined by ';'; '' is the every-category variant.
    key: str
    subject: str
    html: str = Field(sa_type=Text)
    text: str = Field(sa_type=Text)

    __table_args__ = (UniqueConstraint("digest_id", "key", name="uq_variant_digest_key"),)


class Delivery(SQLModel, table=True):
    """The ledger: one row per (digest, subscriber), moved only on confirmed outcomes."""

    id: int | None = Field(default=None, primary_key=True)
    digest_id: int = Field(foreign_key="digest.id", ondelete="CASCADE")
    # No index of its own: lookups name the digest too, which the unique key below serves, and
    # a million-row plan wrote this index for nothing.
    subscriber_id: int = Field(foreign_key="subscriber.id")
    variant_id: int | None = Field(default=None, foreign_key="digestvariant.id")
    # The address and name as planned: addresses are the subscriber's key and never change,
    # and a batch claim then returns everything it needs in one statement.
    email: str = ""
    name: str | None = None
    state: str = Field(default=DeliveryState.PENDING.value)
    attempts: int = 0
    claim_owner: str | None = None
    claimed_at: datetime | None = _utc(default=None)
    sent_at: datetime | None = _utc(default=None)
    provider_message_id: str | None = None
    # The provider's batch holding the row's request until `send_at`: cancellable until shortly
    # before, so an ambiguous answer or a crash is cancelled and resent, never guessed at.
    provider_batch_id: str | None = None
    send_at: datetime | None = _utc(default=None)
    last_error: str | None = Field(default=None, sa_type=Text)
    updated_at: datetime = _utc()

    __table_args__ = (
        UniqueConstraint("digest_id", "subscriber_id", name="uq_delivery_digest_subscriber"),
        CheckConstraint(check_constraint_sql("state", DeliveryState), name="ck_delivery_state"),
        # The claim's index: a sender takes the lowest pending ids of one variant, so a sparse
        # variant is found without scanning other rows. Pending rows only: a row leaves it at
        # its claim, and no later move of a million rows has an index entry to rewrite.
        Index(
            "ix_delivery_claim",
            "digest_id",
            "variant_id",
            "id",
            sqlite_where=text("state = 'pending'"),
            postgresql_where=text("state = 'pending'"),
        ),
    )


class DeliveryEvent(SQLModel, table=True):
    """A provider event as received (raw kept for audit), deduplicated on the provider's id."""

    id: int | None = Field(default=None, primary_key=True)
    provider_event_id: str = Field(unique=True, max_length=200)
    delivery_id: int | None = Field(default=None, foreign_key="delivery.id", index=True)
    provider_event: str
    state: str | None = None
    occurred_at: datetime | None = _utc(default=None)
    received_at: datetime = _utc()
    raw: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))


class ProviderBatch(SQLModel, table=True):
    """A provider batch our requests go under, held until `send_at`: the cancel budget's record.

    The provider keeps only a few batches cancelled at once, so every batch that may still need
    a cancel (its send time is far enough away) holds a slot, and so does a standing cancel
    until it is forgotten (`forgotten_at`, allowed once its `send_at` has passed)."""

    batch_id: str = Field(primary_key=True, max_length=200)
    digest_id: int | None = Field(default=None, foreign_key="digest.id", ondelete="SET NULL")
    send_at: datetime = _utc()
    opened_at: datetime = _utc()
    # Requests claimed under it; a batch no request joined holds nothing at the provider.
    requests: int = 0
    cancelled_at: datetime | None = _utc(default=None)
    forgotten_at: datetime | None = _utc(default=None)


class DigestRecall(SQLModel, table=True):
    """A week the editor recalled: no run sends it again until one is started `--after-recall`.

    Kept apart from the digest row, which a recall that stopped every delivery deletes so that
    edits and catalog fixes apply."""

    week: str = Field(primary_key=True, max_length=8)
    recalled_at: datetime = _utc()
    stopped: int = 0
    on_their_way: int = 0


class EditorialEdit(SQLModel, table=True):
    """One editor's change to a week's digest (digest/editorial/edits.py), with who and when."""

    id: int | None = Field(default=None, primary_key=True)
    week: str = Field(index=True, max_length=8)
    # intro | subject | pin | exclude | verdict | lead; `key` tells apart the repeatable ones.
    field: str = Field(max_length=20)
    key: str = Field(default="", max_length=500)
    value: str = Field(default="", sa_type=Text)
    made_by: str = Field(max_length=200)
    made_at: datetime = _utc()

    __table_args__ = (
        UniqueConstraint("week", "field", "key", name="uq_editorialedit_week_field_key"),
        CheckConstraint(
            "field IN ('intro', 'subject', 'pin', 'exclude', 'verdict', 'lead')",
            name="ck_editorialedit_field",
        ),
    )


class Approval(SQLModel, table=True):
    """A run waiting for a yes, or a yes or no, for one exact content of a week (its hash)."""

    id: int | None = Field(default=None, primary_key=True)
    week: str = Field(index=True, max_length=8)
    content_hash: str = Field(max_length=64)
    decision: str = Field(max_length=10)  # waiting | approved | rejected
    note: str = Field(default="", sa_type=Text)
    decided_by: str = Field(default="", max_length=200)
    decided_at: datetime = _utc()
    flow_run_id: str | None = Field(default=None, max_length=64)

    __table_args__ = (
        CheckConstraint(
            "decision IN ('waiting', 'approved', 'rejected')", name="ck_approval_decision"
        ),
    )


# Core table handles for the set-based statements of the ledger and the event applier.
DIGEST_TABLE: Table = Digest.__table__  # type: ignore[attr-defined]
VARIANT_TABLE: Table = DigestVariant.__table__  # type: ignore[attr-defined]
DELIVERY_TABLE: Table = Delivery.__table__  # type: ignore[attr-defined]
EVENT_TABLE: Table = DeliveryEvent.__table__  # type: ignore[attr-defined]
SUBSCRIBER_TABLE: Table = Subscriber.__table__  # type: ignore[attr-defined]
PROVIDER_BATCH_TABLE: Table = ProviderBatch.__table__  # type: ignore[attr-defined]
RECALL_TABLE: Table = DigestRecall.__table__  # type: ignore[attr-defined]
EDIT_TABLE: Table = EditorialEdit.__table__  # type: ignore[attr-defined]
APPROVAL_TABLE: Table = Approval.__table__  # type: ignore[attr-defined]


class CatalogFeed(SQLModel, table=True):
    """The feed last imported from one address: its HTTP validators and when the site made it."""

    __tablename__ = "catalog_feed"

    id: int | None = Field(default=None, primary_key=True)
    # The address with credentials removed (digest.catalog.feed.shown_feed_url).
    url: str = Field(unique=True, index=True, max_length=2000)
    etag: str | None = Field(default=None, max_length=1000)
    last_modified: str | None = Field(default=None, max_length=100)
    generated_at: datetime | None = _utc(default=None, nullable=True)
    synced_at: datetime = _utc()


class Vote(SQLModel, table=True):
    """A reader's ship or skip on a tool, cast from their own email: one per subscriber and tool,
    a later vote replacing the earlier one."""

    id: int | None = Field(default=None, primary_key=True)
    subscriber_id: int = Field(foreign_key="subscriber.id", ondelete="CASCADE")
    tool_slug: str = Field(max_length=200, index=True)
    choice: str = Field(max_length=4)
    # The email the vote was cast from (the latest, if a later email showed the tool again):
    # the week whose tally it counts in.
    delivery_id: int = Field(foreign_key="delivery.id", ondelete="CASCADE")
    digest_id: int = Field(foreign_key="digest.id", index=True, ondelete="CASCADE")
    first_voted_at: datetime = _utc()
    voted_at: datetime = _utc()

    __table_args__ = (
        UniqueConstraint("subscriber_id", "tool_slug", name="uq_vote_subscriber_tool"),
        CheckConstraint("choice IN ('ship', 'skip')", name="ck_vote_choice"),
    )


class LinkVisit(SQLModel, table=True):
    """A reader's first visit, from their email, of a page `digest web` serves: the clicks that no
    provider tracks (votes, comparison pages, the archive), once per delivery and link."""

    id: int | None = Field(default=None, primary_key=True)
    delivery_id: int = Field(foreign_key="delivery.id", ondelete="CASCADE")
    kind: str = Field(max_length=20)
    # The pair ("<a>-vs-<b>"), the tool's slug or the week the link led to.
    target: str = Field(max_length=700)
    visited_at: datetime = _utc()

    __table_args__ = (
        UniqueConstraint("delivery_id", "kind", "target", name="uq_linkvisit_delivery_link"),
        CheckConstraint("kind IN ('comparison', 'vote', 'archive')", name="ck_linkvisit_kind"),
    )


VOTE_TABLE: Table = Vote.__table__  # type: ignore[attr-defined]
VISIT_TABLE: Table = LinkVisit.__table__  # type: ignore[attr-defined]
