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
(who gets which variant), `claims` (claiming and settling requests' rows), `batches`
(provider batches and the cancel budget), `schedules` (rows held until a send time, recalls),
`reporting` (counts).
The names below are the ledger's public face, the store the run's steps talk to.
"""

from digest.delivery.ledger.batches import (
    HeldBatch,
    SlotsHeld,
    batch_ids_of,
    cancels_standing,
    drop_unused,
    forgettable_cancels,
    is_cancelled,
    live_batches,
    mark_forgotten,
    record_cancel,
    reserve_batch,
    slots_held,
)
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
from digest.delivery.ledger.leases import (
    LeaseHeartbeat,
    acquire_lease,
    check_lease,
    new_owner,
    release_lease,
)
from digest.delivery.ledger.planning import (
    PlanSummary,
    VariantRenderer,
    active_by_variant,
    plan_recipients,
    stored_category_lists,
    variant_key,
)
from digest.delivery.ledger.reporting import (
    digest_status,
    failure_reasons,
    sent_by_run,
    state_counts,
)
from digest.delivery.ledger.schedules import (
    clear_recall,
    is_recalled,
    mark_recalled,
    may_have_reached,
    orphan_batches,
    recalled_week,
    requeue_batch,
    requeue_cancelled,
    sent_batches,
    settle_held,
)

__all__ = [
    "ClaimedBatch",
    "ClaimedRecipient",
    "HeldBatch",
    "LeaseHeartbeat",
    "PlanSummary",
    "SlotsHeld",
    "VariantRenderer",
    "acquire_lease",
    "active_by_variant",
    "batch_ids_of",
    "cancels_standing",
    "check_lease",
    "claim_batch",
    "clear_recall",
    "digest_status",
    "discard_unsent",
    "drop_unused",
    "failure_reasons",
    "find_digest",
    "forgettable_cancels",
    "freeze_digest",
    "is_cancelled",
    "is_planned",
    "is_recalled",
    "live_batches",
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
    "requeue_batch",
    "requeue_cancelled",
    "requeue_failed",
    "requeue_uncertain",
    "reserve_batch",
    "sent_batches",
    "sent_by_run",
    "settle_held",
    "slots_held",
    "state_counts",
    "stored_category_lists",
    "stored_variant",
    "suppress_unsendable",
    "variant_bodies",
    "variant_key",
    "variant_row",
]
