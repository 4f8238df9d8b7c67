"""How a run ends: its summary, and the rule that decides whether it succeeded.

The flow reports whatever `run_error` returns as the run's failure, with its sentence for people;
`None` means the run did all it had to do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from digest.content.model import DigestContent
from digest.delivery.sending import RunStop, StopKind
from digest.delivery.states import FAILS_THE_RUN, DeliveryState
from digest.errors import DigestError, RunIncompleteError, RunInProgressError, SendAuthError


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

    @classmethod
    def of_content(
        cls, week: str, digest_id: int | None, content: DigestContent, *, dry_run: bool
    ) -> RunSummary:
        """A summary that knows what the week's digest holds, before anything is sent."""
        return cls(
            week=week,
            digest_id=digest_id,
            subject=content.subject if not content.is_empty else None,
            pairs=[(p.a.slug, p.b.slug, p.category) for p in content.pairs],
            also_new=[t.slug for t in content.also_new],
            excluded=[(e.slug, e.reason) for e in content.excluded],
            new_tools=content.new_tool_count,
            dry_run=dry_run,
        )

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def unfinished(self) -> int:
        """Rows this run should have settled and did not: pending, failed, or left `sending`."""
        return sum(self.counts.get(state.value, 0) for state in FAILS_THE_RUN)


def run_error(summary: RunSummary, stop: RunStop | None = None) -> DigestError | None:
    """Why the run failed, as a sentence for people; None when it did all it had to do."""
    if stop is not None and stop.kind is StopKind.KEY_REFUSED:
        return SendAuthError(
            f"{stop.reason} The run stopped before sending anything more; every unsent "
            "delivery is still pending and goes out with the next run once the key is fixed."
        )
    if stop is not None and stop.kind is StopKind.LEASE_LOST:
        return RunInProgressError(stop.reason)
    if summary.unfinished:
        return RunIncompleteError(incomplete_message(summary))
    return None


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
