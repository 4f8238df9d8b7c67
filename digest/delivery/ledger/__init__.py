"""The delivery ledger: the durable record of a week's digest and of every delivery in it.

Invariants the ledger keeps (each has a test named for it):
- one delivery row per (digest, subscriber); the recipient list is fixed once planning completes;
- a row leaves `pending` only when a batch claims it, and becomes `sent` only after the provider
  accepted its batch: nothing durable runs ahead of a confirmed send;
- one run at a time holds a digest's lease; rows left in `sending` by a run that is gone become
  `uncertain`, never blindly `pending`, so a rerun cannot mail them twice: only a confirmed
  cancel of their provider batch sends them again;
- every move of a row is one of `digest.states.MOVES`;
- statements are set-based: one per batch, never one ORM object per recipient.

One module per job: `digests` (the frozen content), `leases` (one run at a time), `planning`
(who gets which variant), `claims` (claiming and settling batches), `schedules` (provider
batches held until a send time, cancels, recalls), `reporting` (counts).
The names below are the ledger's public face, the store the run's steps talk to.
"""

from digest.delivery.ledger.claims import (
    ClaimedBatch,
    ClaimedRecipient,
    claim_batch,
    mark_refused,
    mark_sent,
    mark_uncertain,
    pending_by_variant,
    release_pending,
    requeue_failed,
    requeue_uncertain,
    reschedule,
    suppress_unsendable,
)
from digest.delivery.ledger.digests import (
    discard_unsent,
    find_digest,
    freeze_digest,
    is_planned,
    mark_completed,
    previous_matchups,
    stored_variant,
    variant_bodies,
    variant_row,
)
from digest.delivery.ledger.leases import acquire_lease, new_owner, release_lease, renew_lease
from digest.delivery.ledger.planning import (
    PlanSummary,
    RenderedBodies,
    VariantRenderer,
    active_subscriber_pages,
    plan_recipients,
    variant_key,
)
from digest.delivery.ledger.reporting import (
    digest_status,
    failure_reasons,
    sent_by_run,
    state_counts,
)
from digest.delivery.ledger.schedules import (
    HeldBatch,
    cancels_standing,
    clear_recall,
    forgettable_cancels,
    is_recalled,
    mark_forgotten,
    mark_recalled,
    may_have_reached,
    orphan_batches,
    recalled_week,
    record_cancel,
    requeue_accepted,
    requeue_cancelled,
    sent_batches,
    settle_held,
)

__all__ = [
    "ClaimedBatch",
    "ClaimedRecipient",
    "HeldBatch",
    "PlanSummary",
    "RenderedBodies",
    "VariantRenderer",
    "acquire_lease",
    "active_subscriber_pages",
    "cancels_standing",
    "claim_batch",
    "clear_recall",
    "digest_status",
    "discard_unsent",
    "failure_reasons",
    "find_digest",
    "forgettable_cancels",
    "freeze_digest",
    "is_planned",
    "is_recalled",
    "mark_completed",
    "mark_forgotten",
    "mark_recalled",
    "mark_refused",
    "mark_sent",
    "mark_uncertain",
    "may_have_reached",
    "new_owner",
    "orphan_batches",
    "pending_by_variant",
    "plan_recipients",
    "previous_matchups",
    "recalled_week",
    "record_cancel",
    "release_lease",
    "release_pending",
    "renew_lease",
    "requeue_accepted",
    "requeue_cancelled",
    "requeue_failed",
    "requeue_uncertain",
    "reschedule",
    "sent_batches",
    "sent_by_run",
    "settle_held",
    "state_counts",
    "stored_variant",
    "suppress_unsendable",
    "variant_bodies",
    "variant_key",
    "variant_row",
]
