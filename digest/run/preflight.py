"""What `digest run` can answer, or must refuse, before it starts a Prefect server (20 s).

A run of a recalled week, or a refreeze of a week that already reached someone, ends refused
whatever the flow does; a week without new tools, or one with nothing left to send, ends with
nothing done. The database says so at once, so the command says so at once. With a catalog feed
set, every run syncs the feed first, which may add the week's tools: only the refusals are
answered then.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import Engine

from digest.delivery import ledger
from digest.run import bookkeeping, preparation
from digest.run.outcome import RunSummary
from digest.weeks import IsoWeek


@dataclass(frozen=True)
class Asked:
    """The options of one `digest run`."""

    dry_run: bool = False
    resend_uncertain: bool = False
    retry_failed: bool = False
    refreeze: bool = False
    after_recall: bool = False
    has_feed: bool = False

    @property
    def more_than_sending(self) -> bool:
        """Options that give a week with nothing pending work to do all the same."""
        return self.resend_uncertain or self.retry_failed or self.refreeze or self.after_recall


def answer_without_a_run(
    engine: Engine, edition: preparation.Edition, week: IsoWeek, asked: Asked
) -> RunSummary | None:
    """The summary the flow would end with when it would do nothing; None when it has work.

    Raises the DigestError the flow would end with when it would refuse the week.
    """
    if not asked.dry_run:
        bookkeeping.refuse_if_recalled(engine, week=str(week), after_recall=asked.after_recall)
        if asked.refreeze:
            _refuse_a_refreeze_that_would_be_refused(engine, week)
    if asked.has_feed:
        return None
    if not asked.dry_run and not asked.more_than_sending:
        settled = bookkeeping.settled_week(engine, week)
        if settled is not None:
            return settled
    if asked.refreeze:
        return None
    prepared = preparation.prepare_digest(engine, edition, week, freeze=False)
    if not prepared.content.is_empty:
        return None
    summary = RunSummary.of_content(
        str(week), prepared.digest_id, prepared.content, dry_run=asked.dry_run
    )
    summary.note = nothing_new_note(week)
    return summary


def nothing_new_note(week: IsoWeek) -> str:
    return f"No new tools in {week}: nothing to send."


def _refuse_a_refreeze_that_would_be_refused(engine: Engine, week: IsoWeek) -> None:
    """The run's own check (RefreezeRefusedError), made in a transaction that is rolled back."""
    with engine.connect() as connection:
        trial = connection.begin()
        try:
            ledger.discard_unsent(connection, week=str(week))
        finally:
            trial.rollback()
