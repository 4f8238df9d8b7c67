"""User-facing errors: one class per kind of mistake, each naming its cause and its fix.

The CLI catches `DigestError` once and prints `str(error)`; nothing else in the
code base formats messages for people.
"""

from __future__ import annotations


class DigestError(Exception):
    """A problem the user can fix; the message says what went wrong and how to fix it."""

    exit_code = 2


class ConfigError(DigestError):
    """A setting is missing or invalid."""


class WeekError(DigestError):
    """A week string is not an ISO week such as 2026-W47."""


class OutputFileError(DigestError):
    """A file a command was asked to write cannot be written; nothing was left half-written."""


class ImportFileError(DigestError):
    """A catalog or subscriber file cannot be imported; nothing was written."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        self.problems = problems or []
        full = message
        if self.problems:
            full += "\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(full)


class DatabaseNotReadyError(DigestError):
    """The schema is missing or behind the code."""


class RunInProgressError(DigestError):
    """Another run holds the week's digest; `holder` says which, without advice for a run."""

    def __init__(self, message: str, *, holder: str = "") -> None:
        super().__init__(message)
        self.holder = holder or message


class SendAuthError(DigestError):
    """The email provider rejected our credentials; nothing more can be sent this run."""

    exit_code = 3


class RunIncompleteError(DigestError):
    """A run ended with deliveries still pending or failed."""

    exit_code = 1


class ComplianceError(DigestError):
    """A digest, or a message the run sent, lacks what a bulk sender must carry."""

    exit_code = 1


class RunInterruptedError(DigestError):
    """The run was stopped with Ctrl-C: what it sent stays sent, a rerun sends the rest."""

    exit_code = 130


class RefreezeRefusedError(DigestError):
    """A week's frozen digest may already be with subscribers, or is being sent."""


class ContentTooLargeError(DigestError):
    """A week's email would be clipped by mail clients: it is not frozen or sent."""


class TemplateError(DigestError):
    """A template or the MJML it produced is broken."""


class NotFoundError(DigestError):
    """A named week, digest or subscriber does not exist."""


class PreviewSkippedError(DigestError):
    """The previewed subscriber gets nothing this week, so there is no email to show."""


class CatalogFeedError(DigestError):
    """The site's catalog feed could not be fetched or used; the catalog is unchanged."""


class StaleCatalogError(CatalogFeedError):
    """The feed was generated before the week being sent ended: it is not complete for it."""


class EditError(DigestError):
    """An editorial edit cannot apply to the week (unknown slug, cross-category pin, ...)."""


class EditsFrozenError(DigestError):
    """The week's content froze when its run began sending: edits can no longer change it."""


class ApprovalError(DigestError):
    """A week cannot be approved or rejected as asked (nothing to approve, no Prefect API)."""


class ApprovalRejectedError(DigestError):
    """The week's content was rejected: the run ends Cancelled, sending nothing."""

    exit_code = 1


class NotApprovedError(DigestError):
    """Nobody approved the week's content in time: the run ends Failed, sending nothing."""

    exit_code = 1


class RecalledError(DigestError):
    """The editor recalled the week's digest: it is sent again only on purpose."""
