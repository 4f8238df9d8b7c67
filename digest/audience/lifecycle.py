"""How one subscriber's status and choices change: sign-up, confirmation, leaving, preferences.

Every function takes the session and keyword arguments, and leaves committing to the caller.
The rules they keep:
- a suppression only ever gets stronger (unsubscribed < bounced < complained), never weaker,
  except by the person's own deliberate act below;
- an `unsubscribed` person comes back only by their own hand: the re-subscribe button on their
  unsubscribe page, or a new sign-up through the form confirmed by double opt-in;
- `bounced` and `complained` never come back through anything here: a dead address or a spam
  complaint is not undone by a web form;
- repeating any change is harmless: the second call changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from digest.audience.addresses import AddressError, clean_address, email_key
from digest.audience.categories import clean_categories
from digest.db import MAX_BOUND_VALUES, in_chunks
from digest.errors import DigestError, NotFoundError
from digest.models import SUBSCRIBER_TABLE, Subscriber
from digest.states import SUPPRESSION_RANK, SubscriberStatus, weaker_statuses_than
from digest.weeks import utcnow

log = logging.getLogger(__name__)

# Statuses a confirmed sign-up may (re)activate.
CONFIRMABLE = frozenset({SubscriberStatus.PENDING, SubscriberStatus.UNSUBSCRIBED})

CONSENT_SOURCE_FORM = "web-form"


class SubscriptionError(DigestError):
    """A sign-up cannot be accepted as it was given."""


def _form_address(email: str) -> str:
    """The address of a sign-up as it is stored; `SubscriptionError` says why it cannot be."""
    try:
        return clean_address(email)
    except AddressError as exc:
        raise SubscriptionError(f"That is not an email address we can send to. {exc}") from exc


def _load(session: Session, subscriber_id: int) -> Subscriber:
    # FOR UPDATE on PostgreSQL: a web change and a webhook suppression never interleave; the
    # row is read again once locked, so a decision is never made on a copy loaded earlier.
    subscriber = session.get(
        Subscriber, subscriber_id, with_for_update=True, populate_existing=True
    )
    if subscriber is None:
        raise NotFoundError(f"There is no subscriber with id {subscriber_id}.")
    return subscriber


def _set_status(subscriber: Subscriber, status: SubscriberStatus, now: datetime) -> None:
    subscriber.status = status.value
    subscriber.status_changed_at = now


def unsubscribe(*, session: Session, subscriber_id: int, source: str) -> Subscriber:
    """Stop sending to this subscriber; bounced or complained ones stay as they are."""
    subscriber = _load(session, subscriber_id)
    if SUPPRESSION_RANK[SubscriberStatus(subscriber.status)] == 0:
        _set_status(subscriber, SubscriberStatus.UNSUBSCRIBED, utcnow())
        session.add(subscriber)
        session.flush()
        log.info("subscriber %s unsubscribed (%s)", subscriber_id, source)
    return subscriber


def resubscribe(*, session: Session, subscriber_id: int, source: str) -> Subscriber:
    """Undo the person's own unsubscribe from their own page; any other status is kept."""
    subscriber = _load(session, subscriber_id)
    if subscriber.status == SubscriberStatus.UNSUBSCRIBED.value:
        _set_status(subscriber, SubscriberStatus.ACTIVE, utcnow())
        session.add(subscriber)
        session.flush()
        log.info("subscriber %s resubscribed (%s)", subscriber_id, source)
    return subscriber


def set_categories(
    *, session: Session, subscriber_id: int, categories: Sequence[str]
) -> Subscriber:
    """Choose the categories of the next digests; [] means every category."""
    subscriber = _load(session, subscriber_id)
    chosen = clean_categories(categories)
    if chosen != list(subscriber.categories):
        subscriber.categories = chosen
        session.add(subscriber)
        session.flush()
    return subscriber


def needs_confirmation_email(subscriber: Subscriber) -> bool:
    """Whether a sign-up for this subscriber should mail them a confirmation link."""
    return SubscriberStatus(subscriber.status) in CONFIRMABLE


# However often the form is submitted for one address, it gets one confirmation per pause:
# the form cannot be used to flood someone's inbox.
CONFIRMATION_COOLDOWN = timedelta(minutes=5)


def reserve_confirmation(*, session: Session, subscriber_id: int) -> datetime | None:
    """Take the subscriber's one confirmation of this pause, if due: the time taken, or None.

    One statement decides, so of sign-ups racing for one address exactly one gets it (checking
    the subscriber's row per request let several through before the first had gone)."""
    now = utcnow()
    table = SUBSCRIBER_TABLE
    sent = table.c.confirmation_sent_at
    result = session.connection().execute(
        update(table)
        .where(
            table.c.id == subscriber_id,
            table.c.status.in_([status.value for status in CONFIRMABLE]),
            (sent.is_(None)) | (sent <= now - CONFIRMATION_COOLDOWN),
        )
        .values(confirmation_sent_at=now)
    )
    return now if result.rowcount == 1 else None


def release_confirmation(*, session: Session, subscriber_id: int, reserved_at: datetime) -> None:
    """Give back a reservation whose email did not go, so that the form works again at once."""
    table = SUBSCRIBER_TABLE
    session.connection().execute(
        update(table)
        .where(table.c.id == subscriber_id, table.c.confirmation_sent_at == reserved_at)
        .values(confirmation_sent_at=None)
    )


def request_subscription(
    *,
    session: Session,
    email: str,
    categories: Sequence[str],
    ip: str | None,
    form_version: str,
) -> Subscriber:
    """Record a sign-up from the form; nobody receives a digest until they confirm.

    A new address becomes `pending`. An existing `pending` one takes the categories and form
    version of this sign-up, which its confirmation then accepts. An `unsubscribed` one keeps its
    own categories until it confirms (then the preferences page changes them): anyone may type
    an address into the form, and its owner's Re-subscribe restores what they chose. `active`,
    `bounced` and `complained` ones are left exactly as they are, so the form can neither change
    an active subscriber's choices nor revive a dead or complaining address. A pending row keeps
    the sign-up's `ip` until the confirming click's address replaces it.
    """
    address = _form_address(email)
    key = email_key(address)
    chosen = clean_categories(categories)
    now = utcnow()
    existing = session.exec(
        select(Subscriber).where(col(Subscriber.email_key) == key).with_for_update()
    ).first()
    if existing is None:
        subscriber = Subscriber(
            email=address,
            email_key=key,
            categories=chosen,
            consent_source=CONSENT_SOURCE_FORM,
            consent_form_version=form_version,
            consent_ip=ip,
            status=SubscriberStatus.PENDING.value,
            status_changed_at=now,
            created_at=now,
        )
        try:
            # A savepoint: when the same address is signed up twice at once, one insert wins
            # and the other carries on with the winner's row.
            with session.begin_nested():
                session.add(subscriber)
            log.info("sign-up recorded as subscriber %s (pending)", subscriber.id)
            return subscriber
        except IntegrityError:
            existing = session.exec(
                select(Subscriber).where(col(Subscriber.email_key) == key).with_for_update()
            ).one()
    if needs_confirmation_email(existing):
        existing.consent_form_version = form_version
        if existing.status == SubscriberStatus.PENDING.value:
            existing.categories = chosen
            existing.consent_ip = ip
        session.add(existing)
        session.flush()
    return existing


def confirm(*, session: Session, subscriber_id: int, ip: str | None) -> Subscriber:
    """The double opt-in click: activate and record consent (time, IP, form version).

    Idempotent: an active subscriber's consent record is never overwritten by a second click.
    Reactivates an `unsubscribed` subscriber (they signed up again and confirmed); never a
    `bounced` or `complained` one.
    """
    subscriber = _load(session, subscriber_id)
    if SubscriberStatus(subscriber.status) not in CONFIRMABLE:
        return subscriber
    now = utcnow()
    _set_status(subscriber, SubscriberStatus.ACTIVE, now)
    subscriber.confirmed_at = now
    subscriber.subscribed_at = now
    subscriber.consent_ip = ip
    subscriber.consent_source = CONSENT_SOURCE_FORM
    session.add(subscriber)
    session.flush()
    log.info("subscriber %s confirmed", subscriber_id)
    return subscriber


def suppress_many(
    *, session: Session, subscriber_ids: Iterable[int], status: SubscriberStatus
) -> int:
    """`suppress` for many subscribers in one statement; how many changed status."""
    if SUPPRESSION_RANK[status] == 0:
        raise ValueError(f"{status.value!r} is not a suppression")
    ids = sorted(set(subscriber_ids))
    if not ids:
        return 0
    table = SUBSCRIBER_TABLE
    changed = 0
    for some in in_chunks(ids, MAX_BOUND_VALUES):
        result = session.connection().execute(
            update(table)
            .where(table.c.id.in_(some), table.c.status.in_(weaker_statuses_than(status)))
            .values(status=status.value, status_changed_at=utcnow())
        )
        changed += int(getattr(result, "rowcount", 0) or 0)
    if changed:
        log.info("%d subscriber(s) suppressed as %s", changed, status.value)
    return changed
