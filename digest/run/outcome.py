"""How a run ends: its summary, and the rule that decides whether it succeeded.

The flow reports whatever `run_error` returns as the run's failure, with its sentence for people;
`None` means the run did all it had to do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from digest.catalog.sync import SyncReport
from digest.content.frozen import DigestContent
from digest.delivery.run_stop import RunStop, StopKind
from digest.errors import (
    ComplianceError,
    DigestError,
    RecalledError,
    RunIncompleteError,
    RunInProgressError,
    SendAuthError,
)
from digest.run.compliance import failures
from digest.states import FAILS_THE_RUN, DeliveryState


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
    batches: int = 0  # requests that carried this run's sends
    batch_ids: int = 0  # provider batches those requests went under
    lost_answers: int = 0  # answers lost (timeout, dropped connection, 5xx), each batch cancelled
    # Of this run's sends, those the send saw go with both one-click unsubscribe headers; None
    # when the send stopped unexpectedly and could not say.
    with_unsubscribe_headers: int | None = 0
    dry_run: bool = False
    already_complete: bool = False
    note: str = ""
    plan_seconds: float = 0.0
    send_seconds: float = 0.0
    compliance: dict[str, Any] = field(default_factory=dict)
    # What the run's catalog sync did; None when DIGEST_CATALOG_URL is unset.
    catalog: SyncReport | None = None
    approval: str = ""  # with DIGEST_APPROVAL=required: who approved the content, and when

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
            "delivery is still pending. After fixing the key where the flow runs (the `digest "
            "serve` process or the work pool's worker, restarted), press Retry on this flow run."
        )
    if stop is not None and stop.kind is StopKind.LEASE_LOST:
        return RunInProgressError(stop.reason)
    if stop is not None and stop.kind is StopKind.RECALLED:
        return RecalledError(stop.reason)
    if stop is not None and stop.kind is StopKind.NO_CANCEL_SLOT:
        # No row was touched, so no row's reason tells the story: the stop's sentence does.
        return RunIncompleteError(
            f"{stop.reason[0].upper()}{stop.reason[1:]}. {incomplete_message(summary)}"
        )
    if stop is not None and stop.kind is StopKind.STOPPED:
        counts = ", ".join(f"{n} {state}" for state, n in sorted(summary.counts.items()) if n)
        return RunIncompleteError(f"{stop.reason} Deliveries now: {counts or 'none'}.")
    if stop is not None and stop.kind is StopKind.REQUEST_REFUSED:
        return RunIncompleteError(
            f"{stop.reason}. The provider refused the request as a whole, not one recipient, "
            "so the run stopped and every unsent delivery is still pending. Fix what it names "
            "(often DIGEST_FROM_EMAIL, an unverified sender) in the environment of the process "
            "that runs the flow (the `digest serve` process or the work pool's worker, "
            f"restarted after the change), then press Retry on this flow run or run "
            f"`digest run --week {summary.week}`."
        )
    problems = failures(summary.compliance)
    if problems:
        return compliance_error(summary.week, problems, sent=summary.sent_this_run)
    if summary.unfinished:
        return RunIncompleteError(incomplete_message(summary))
    return None


def compliance_error(week: str, problems: list[str], *, sent: int) -> ComplianceError:
    """The run fails on what a bulk sender must carry: before the send, nobody got it."""
    what = "; ".join(problems)
    if not sent:
        return ComplianceError(
            f"The digest of {week} was not sent: {what}. Fix the templates or the setting it "
            f"names, then run `digest run --week {week} --refreeze`; every delivery is still "
            "pending."
        )
    return ComplianceError(
        f"The run for {week} sent {sent} message(s), but {what}. Nobody is mailed twice by a "
        "rerun; fix the send path (digest/links.py recipient_headers) before the next week."
    )


# What resolves rows left in each state, in the words of the Prefect UI and the shell.
_REMEDIES: dict[DeliveryState, str] = {
    DeliveryState.PENDING: (
        "still pending: they go out when this flow run is retried (Retry in the Prefect UI) "
        "or with `digest run --week {week}`"
    ),
    DeliveryState.SENDING: (
        "left `sending` by a sender that stopped unexpectedly or could not reach the provider "
        "to cancel a batch whose answer was lost (see the flow run's logs): the next run "
        "cancels their batch while it can and sends them again, or reports them `uncertain`"
    ),
    DeliveryState.FAILED: (
        "refused by the provider: fix the cause, then send them with "
        "`digest run --week {week} --retry-failed` (or a custom run of the deployment with "
        "retry_failed set)"
    ),
    DeliveryState.UNCERTAIN: (
        "uncertain, because the provider may have them (a run died, or an answer was lost, "
        "and their batch could no longer be cancelled): provider "
        "events settle those it accepted; resend the rest on purpose, knowing some may arrive "
        "twice, with `digest run --week {week} --resend-uncertain`"
    ),
}


def incomplete_message(summary: RunSummary) -> str:
    """One sentence per state that fails the run: how many, why (adding up), and the remedy."""
    parts = []
    for state in (each for each in DeliveryState if each in FAILS_THE_RUN):
        count = summary.counts.get(state.value, 0)
        if count:
            remedy = _REMEDIES[state].format(week=summary.week)
            parts.append(f"{count} {remedy}{_why(summary, state, count)}.")
    return f"The run for {summary.week} did not reach everyone. " + " ".join(parts)


def _why(summary: RunSummary, state: DeliveryState, count: int) -> str:
    """The recorded reasons of `state`, largest first, with a remainder so the counts add up."""
    reasons = [(reason, n) for s, reason, n in summary.reasons if s == state.value]
    if not reasons:
        return ""
    shown = reasons[:3]
    listed = "; ".join(f"{n}: {reason}" for reason, n in shown)
    rest = count - sum(n for _, n in shown)
    if rest:
        # Pending rows without a reason were never tried: the run stopped before their turn.
        untried = "not tried yet" if state is DeliveryState.PENDING else "no reason recorded"
        listed += f"; {rest}: {'other reasons' if len(reasons) > 3 else untried}"
    return f" ({listed})"
