"""The weekly run's steps as plain functions: what the Prefect flow's tasks call.

Each step takes the settings and plain values and returns small summaries, so the flow stays
orchestration only and every step is tested without Prefect.
"""

from __future__ import annotations

import html as html_module
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from digest.catalog.importer import load_tools
from digest.config import Settings
from digest.content.compose import build_content, filter_for_categories
from digest.content.model import DigestContent
from digest.content.pairing import pair_tools
from digest.content.selection import select_week
from digest.db import ensure_schema
from digest.delivery import events, ledger
from digest.delivery.states import DeliveryState
from digest.errors import RunInProgressError
from digest.links import Links, links_for
from digest.render.placeholders import PREFERENCES_URL, UNSUBSCRIBE_URL
from digest.render.variant import GMAIL_CLIP_BYTES, render_variant
from digest.send import get_backend
from digest.send.base import (
    OutgoingBatch,
    PermanentSendError,
    Recipient,
    SendAuthError,
    TransientSendError,
)
from digest.send.messages import greeting_substitutions
from digest.weeks import IsoWeek

log = logging.getLogger("digest.run.steps")

# Set when the provider rejects our key: every other batch of this process stops before sending.
_AUTH_REJECTED = threading.Event()


def engine_for(settings: Settings) -> Engine:
    """The engine for the settings' database, its schema checked (once per process)."""
    return ensure_schema(settings.database_url)


# --- content ------------------------------------------------------------------------------------


def compute_content(settings: Settings, week: IsoWeek) -> DigestContent:
    """Select the week's tools, pair them and compose the content, from the catalog as it is now."""
    engine = engine_for(settings)
    with Session(engine) as session:
        tools = load_tools(session)
    with engine.connect() as connection:
        history = ledger.previous_matchups(connection, before_week=str(week))
    selection = select_week(tools, week=week, zone=settings.zone)
    # A match-up on record under a since-merged duplicate slug still counts as already sent.
    pairing = pair_tools(
        selection.new, selection.incumbents, previous_matchups=selection.canonical_matchups(history)
    )
    return build_content(selection, pairing, site_url=settings.site_url, zone=settings.zone)


@dataclass(frozen=True)
class PreparedDigest:
    """The week's content, and its digest row when it has been frozen."""

    week: str
    content: DigestContent
    digest_id: int | None
    frozen_earlier: bool


def frozen_content(settings: Settings, week: IsoWeek) -> PreparedDigest | None:
    """The content stored for `week`, if a run already froze it."""
    with engine_for(settings).connect() as connection:
        row = ledger.find_digest(connection, str(week))
    if row is None:
        return None
    return PreparedDigest(
        week=str(week),
        content=DigestContent.model_validate(row["content"]),
        digest_id=int(row["id"]),
        frozen_earlier=True,
    )


def prepare_digest(settings: Settings, week: IsoWeek, *, freeze: bool) -> PreparedDigest:
    """The content to send for `week`: the frozen copy if there is one, else freshly composed.

    With `freeze`, fresh non-empty content is stored so every later run and preview reuses it.
    """
    existing = frozen_content(settings, week)
    if existing is not None:
        return existing
    content = compute_content(settings, week)
    if not freeze or content.is_empty:
        return PreparedDigest(week=str(week), content=content, digest_id=None, frozen_earlier=False)
    with engine_for(settings).begin() as connection:
        row = ledger.freeze_digest(
            connection,
            week=str(week),
            subject=content.subject,
            content=content.model_dump(mode="json"),
        )
    stored = DigestContent.model_validate(row["content"])
    return PreparedDigest(
        week=str(week), content=stored, digest_id=int(row["id"]), frozen_earlier=False
    )


def render_for_categories(
    settings: Settings, content: DigestContent, categories: list[str]
) -> ledger.RenderedBodies | None:
    """The rendered variant for a category set; None when it would show nothing."""
    variant = filter_for_categories(content, categories)
    if variant is None:
        return None
    rendered = render_variant(
        variant, site_url=settings.site_url, postal_address=settings.postal_address
    )
    return ledger.RenderedBodies(subject=rendered.subject, html=rendered.html, text=rendered.text)


# --- recipients -----------------------------------------------------------------------------------


def plan(settings: Settings, prepared: PreparedDigest) -> ledger.PlanSummary:
    assert prepared.digest_id is not None
    return ledger.plan_recipients(
        engine_for(settings),
        digest_id=prepared.digest_id,
        render_variant=lambda cats: render_for_categories(settings, prepared.content, cats),
        page_size=settings.batch_size,
    )


# Senders working one digest at once. Each claims batch after batch until nothing is pending, so
# four coarse tasks carry the whole send; one task per batch spent a fifth of it in orchestration.
SENDER_LANES = 4


@dataclass(frozen=True)
class SendPlan:
    """What a run's sender lanes share, read once before they start."""

    digest_id: int
    variants: tuple[int, ...]  # variants with rows pending
    lanes: tuple[int, ...]  # lane numbers: never more lanes than batches


def send_plan(settings: Settings, digest_id: int) -> SendPlan:
    with engine_for(settings).connect() as connection:
        pending = ledger.pending_by_variant(connection, digest_id=digest_id)
    batches = sum(-(-count // settings.batch_size) for count in pending.values())
    return SendPlan(
        digest_id=digest_id,
        variants=tuple(sorted(pending)),
        lanes=tuple(range(min(SENDER_LANES, batches))),
    )


# --- sending --------------------------------------------------------------------------------------


@dataclass
class BatchReport:
    """What one batch did; counts only, never an address."""

    variant_id: int
    claimed: int = 0
    sent: int = 0
    failed: int = 0
    released: int = 0
    message_id: str | None = None
    error: str | None = None
    stops_run: bool = False  # the provider refused our key, or another run took the lease


def recipient_for(links: Links, claimed: ledger.ClaimedRecipient) -> Recipient:
    unsubscribe = links.unsubscribe(claimed.subscriber_id)
    return Recipient(
        delivery_id=claimed.delivery_id,
        email=claimed.email,
        name=claimed.name,
        substitutions={
            UNSUBSCRIBE_URL: unsubscribe,
            PREFERENCES_URL: links.preferences(claimed.subscriber_id),
            **greeting_substitutions(claimed.name),
        },
        headers={
            "List-Unsubscribe": f"<{unsubscribe}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    )


# Variant bodies never change once stored, so each process reads each one once.
_VARIANTS: dict[tuple[str, int], dict[str, Any]] = {}


def _frozen_variant(settings: Settings, connection: Any, variant_id: int) -> dict[str, Any]:
    key = (settings.database_url, variant_id)
    if key not in _VARIANTS:
        if len(_VARIANTS) >= 64:
            _VARIANTS.clear()
        _VARIANTS[key] = ledger.variant_row(connection, variant_id=variant_id)
    return _VARIANTS[key]


def send_batch(
    settings: Settings, digest_id: int, variant_id: int, *, week: str, owner: str
) -> BatchReport:
    """Claim one batch, hand it to the backend, and record the provider's answer.

    Rows move to `sent` only after the provider accepted them. A transient error hands them back
    to `pending` and re-raises (the caller may retry); a permanent one marks them `failed`. If the
    process dies between claim and record, the rows stay `sending` and the next run finds them
    `uncertain`.
    """
    report = BatchReport(variant_id=variant_id)
    if _AUTH_REJECTED.is_set():
        report.error = "skipped: the provider rejected the API key earlier in this run"
        return report
    engine = engine_for(settings)
    with engine.begin() as connection:
        ledger.renew_lease(
            connection, digest_id=digest_id, owner=owner, ttl_seconds=settings.lease_seconds
        )
        claimed = ledger.claim_batch(
            connection,
            digest_id=digest_id,
            variant_id=variant_id,
            owner=owner,
            limit=settings.batch_size,
        )
        if not claimed.recipients:
            return report
        variant = _frozen_variant(settings, connection, variant_id)
    report.claimed = len(claimed)
    links = links_for(settings)
    batch = OutgoingBatch(
        digest_id=digest_id,
        week=week,
        subject=variant["subject"],
        html=variant["html"],
        text=variant["text"],
        recipients=[recipient_for(links, c) for c in claimed.recipients],
        from_email=settings.from_email,
        from_name=settings.from_name,
    )
    try:
        with get_backend(settings) as backend:
            result = backend.send_batch(batch)
    except PermanentSendError as exc:
        with engine.begin() as connection:
            report.failed = ledger.mark_failed(connection, batch=claimed, reason=exc.reason)
        report.error = exc.reason
        log.warning(
            "batch of variant %s: %s rows failed: %s", variant_id, report.failed, exc.reason
        )
        return report
    except (TransientSendError, SendAuthError) as exc:
        if isinstance(exc, SendAuthError):
            _AUTH_REJECTED.set()
        with engine.begin() as connection:
            report.released = ledger.release_pending(connection, batch=claimed, reason=str(exc))
        raise
    with engine.begin() as connection:
        report.sent = ledger.mark_sent(connection, batch=claimed, message_id=result.message_id)
    report.message_id = result.message_id
    return report


@dataclass
class LaneReport:
    """What one sender lane did: its batches in order, and why it stopped early, if it did."""

    lane: int
    batches: list[BatchReport] = field(default_factory=list)
    stop: str | None = None  # the provider refused our key, or another run took the lease

    @property
    def sent(self) -> int:
        return sum(batch.sent for batch in self.batches)


def send_lane(
    settings: Settings,
    plan: SendPlan,
    *,
    lane: int,
    week: str,
    owner: str,
    on_batch: Callable[[BatchReport], None] | None = None,
) -> LaneReport:
    """Send batch after batch of every planned variant until none of its rows is left pending.

    Several lanes run at once: claims never overlap, so lanes share the work however fast each
    one goes. A transient error re-raises (its rows are already back to `pending`): the caller
    retries the lane later, which picks up whatever is still pending. Every batch that does not
    raise moves its rows out of `pending` for good, so the loop always ends.
    """
    report = LaneReport(lane=lane)
    # Lanes start on different variants, so they seldom wait on each other's claims.
    start = lane % len(plan.variants) if plan.variants else 0
    variants = plan.variants[start:] + plan.variants[:start]
    for variant_id in variants:
        while True:
            try:
                batch = send_batch(settings, plan.digest_id, variant_id, week=week, owner=owner)
            except (SendAuthError, RunInProgressError) as stop:
                report.stop = str(stop)
                return report
            if not batch.claimed:
                if batch.error:  # skipped: the key was refused in another lane
                    report.stop = batch.error
                    return report
                break
            report.batches.append(batch)
            if on_batch is not None:
                on_batch(batch)
    return report


# --- the run's beginning and end ------------------------------------------------------------------


def begin_run(
    settings: Settings, digest_id: int, *, owner: str, resend_uncertain: bool
) -> dict[str, int]:
    """Take the digest's lease, find rows a dead run left behind, requeue uncertain ones on ask.

    Provider events stored while those rows were `sending` are applied first: a row they prove
    accepted is settled, and never requeued.
    """
    _AUTH_REJECTED.clear()
    engine = engine_for(settings)
    uncertain = ledger.acquire_lease(
        engine, digest_id=digest_id, owner=owner, ttl_seconds=settings.lease_seconds
    )
    requeued = 0
    with engine.begin() as connection:
        settled = events.apply_recorded(connection, digest_id=digest_id)
        if resend_uncertain:
            requeued = ledger.requeue_uncertain(connection, digest_id=digest_id)
    return {
        "found_uncertain": uncertain,
        "settled_by_events": settled,
        "requeued_uncertain": requeued,
    }


def end_run(settings: Settings, digest_id: int, *, owner: str) -> None:
    ledger.release_lease(engine_for(settings), digest_id=digest_id, owner=owner)


def sent_by_run(settings: Settings, digest_id: int, *, owner: str) -> tuple[int, int]:
    """(deliveries sent, batches that sent them) by the run `owner`."""
    with engine_for(settings).connect() as connection:
        return ledger.sent_by_run(connection, digest_id=digest_id, owner=owner)


@dataclass
class RunSummary:
    """The outcome of one run, for the CLI, the artifact and the logs (no addresses)."""

    week: str
    digest_id: int | None
    subject: str | None
    pairs: list[tuple[str, str, str]] = field(default_factory=list)
    also_new: list[str] = field(default_factory=list)
    excluded: list[tuple[str, str]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    reasons: list[tuple[str, str, int]] = field(default_factory=list)
    new_tools: int = 0
    sent_this_run: int = 0
    batches: int = 0
    dry_run: bool = False
    already_complete: bool = False
    note: str = ""
    plan_seconds: float = 0.0
    send_seconds: float = 0.0
    compliance: dict[str, Any] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def unfinished(self) -> int:
        """Rows this run should have settled and did not: pending, failed, or left `sending`."""
        return sum(
            self.counts.get(state.value, 0)
            for state in (DeliveryState.PENDING, DeliveryState.FAILED, DeliveryState.SENDING)
        )


def reconcile(
    settings: Settings, digest_id: int
) -> tuple[dict[str, int], list[tuple[str, str, int]]]:
    """Settle rows of subscribers who left or events proved, count states, mark complete if done."""
    with engine_for(settings).begin() as connection:
        ledger.suppress_unsendable(connection, digest_id=digest_id)
        events.apply_recorded(connection, digest_id=digest_id)
        counts = ledger.state_counts(connection, digest_id=digest_id)
        reasons = ledger.failure_reasons(connection, digest_id=digest_id)
        unfinished = counts.get(DeliveryState.PENDING.value, 0) + counts.get(
            DeliveryState.SENDING.value, 0
        )
        if not unfinished:
            ledger.mark_completed(connection, digest_id=digest_id)
    return counts, reasons


def compliance_checks(settings: Settings, digest_id: int) -> dict[str, Any]:
    """What a bulk sender must carry, checked on every stored variant."""
    with engine_for(settings).connect() as connection:
        variants = connection.execute(
            select(ledger.VARIANT.c.key, ledger.VARIANT.c.html, ledger.VARIANT.c.text).where(
                ledger.VARIANT.c.digest_id == digest_id
            )
        ).all()
    checks: dict[str, Any] = {
        "variants": len(variants),
        "list_unsubscribe": all(
            UNSUBSCRIBE_URL in html and UNSUBSCRIBE_URL in text for _, html, text in variants
        ),
        "postal_address": all(
            _postal_present(settings.postal_address, html, text) for _, html, text in variants
        ),
        "max_html_bytes": max((len(html.encode()) for _, html, _ in variants), default=0),
    }
    checks["html_under_102kb"] = checks["max_html_bytes"] < GMAIL_CLIP_BYTES
    return checks


def _postal_present(address: str, html: str, text: str) -> bool:
    return address in text and (address in html or html_module.escape(address) in html)


def week_is_complete(settings: Settings, digest_id: int) -> bool:
    with engine_for(settings).connect() as connection:
        counts = ledger.state_counts(connection, digest_id=digest_id)
        planned_at = connection.execute(
            select(ledger.DIGEST.c.planned_at).where(ledger.DIGEST.c.id == digest_id)
        ).scalar_one()
    if planned_at is None:
        return False
    return not any(
        counts.get(s.value, 0)
        for s in (DeliveryState.PENDING, DeliveryState.SENDING, DeliveryState.UNCERTAIN)
    )


def active_recipients_preview(settings: Settings, content: DigestContent) -> dict[str, int]:
    """For a dry run: how many active subscribers would get mail, and how many be skipped."""
    would_send = would_skip = 0
    cache: dict[str, bool] = {}
    for page in ledger.active_subscriber_pages(engine_for(settings), page_size=settings.batch_size):
        for person in page:
            key = ledger.variant_key(person.categories or [])
            if key not in cache:
                cache[key] = (
                    filter_for_categories(content, key.split(";") if key else []) is not None
                )
            if cache[key]:
                would_send += 1
            else:
                would_skip += 1
    return {"would_send": would_send, "would_skip": would_skip, "variants": sum(cache.values())}


def auth_rejected() -> bool:
    return _AUTH_REJECTED.is_set()


def auth_error() -> SendAuthError:
    return SendAuthError(
        "SendGrid rejected the API key (HTTP 401/403), so the run stopped; every unsent "
        "delivery is still pending. Set SENDGRID_API_KEY to a valid key with Mail Send "
        "permission and run again."
    )


def incomplete_message(summary: RunSummary) -> str:
    pending = summary.counts.get(DeliveryState.PENDING.value, 0)
    failed = summary.counts.get(DeliveryState.FAILED.value, 0)
    sending = summary.counts.get(DeliveryState.SENDING.value, 0)
    reasons = (
        "; ".join(f"{n} {state}: {reason}" for state, reason, n in summary.reasons)
        or "no reason recorded"
    )
    stuck = (
        f" {sending} were left `sending` by a sender that stopped unexpectedly (its error is in "
        "the flow run's logs): the provider may have them, so the next run reports them "
        "`uncertain` rather than resending them."
        if sending
        else ""
    )
    return (
        f"The run for {summary.week} ended with {pending} deliveries still pending and {failed} "
        f"failed ({reasons}).{stuck} Pending ones are sent by the next "
        f"`digest run --week {summary.week}`; "
        "failed ones were refused by the provider and need the cause above fixed first."
    )
