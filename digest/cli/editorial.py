"""`digest edit`: the editor's changes to a week's digest, shown at once by `digest preview`."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from digest.cli.app import app, engine, load_settings

if TYPE_CHECKING:
    from digest.run.editing import Edited

RequiredWeek = Annotated[str, typer.Option("--week", help="ISO week such as 2026-W47.")]


IntroOption = Annotated[
    str | None,
    typer.Option("--intro", help="An editor's note under the greeting (blank lines: paragraphs)."),
]
SubjectOption = Annotated[
    str | None, typer.Option("--subject", help="Replaces the composed subject.")
]
PinOption = Annotated[
    list[str] | None,
    typer.Option("--pin", metavar="A:B", help="This head-to-head is in the digest (repeatable)."),
]
ExcludeOption = Annotated[
    list[str] | None,
    typer.Option("--exclude", metavar="SLUG[=REASON]", help="Leave a tool out (repeatable)."),
]
VerdictOption = Annotated[
    list[str] | None,
    typer.Option("--verdict", metavar="A:B=TEXT", help="Replaces that pair's verdict line."),
]
LeadOption = Annotated[
    str | None,
    typer.Option("--lead", metavar="A:B", help="That pair comes first (and names the subject)."),
]
ByOption = Annotated[
    str | None, typer.Option("--by", help="Who makes the edit (default: the login name).")
]
ShowOption = Annotated[bool, typer.Option("--show", help="Print the week's edits as JSON.")]
ClearOption = Annotated[
    bool,
    typer.Option(
        "--clear",
        help="Remove the week's edits, or only those of the FIELDs named after it "
        "(intro, subject, pin, exclude, verdict, lead; several may follow, or --clear repeats).",
    ),
]
FieldArgument = Annotated[
    list[str] | None,
    typer.Argument(metavar="FIELD", help="With --clear: the fields to clear (every edit if none)."),
]


@app.command("edit")
def edit(
    week: RequiredWeek,
    intro: IntroOption = None,
    subject: SubjectOption = None,
    pin: PinOption = None,
    exclude: ExcludeOption = None,
    verdict: VerdictOption = None,
    lead: LeadOption = None,
    by: ByOption = None,
    show: ShowOption = False,
    clear: ClearOption = False,
    fields: FieldArgument = None,
) -> None:
    """Change week W's digest: note, subject, pairs, exclusions, verdicts, lead pair."""
    from digest.editorial.edits import editor_name
    from digest.errors import EditError
    from digest.run.editing import EditRequest, edit_week
    from digest.run.preparation import Edition
    from digest.weeks import IsoWeek, utcnow

    the_week = IsoWeek.parse(week)
    if fields and not clear:
        raise EditError(
            f"{fields[0]!r} is not an option of `digest edit`. To remove the edits of a field, "
            f"write --clear {fields[0]}; see `digest edit --help` for the rest."
        )
    request = EditRequest(
        by=editor_name(by),
        intro=intro,
        subject=subject,
        pins=pin or [],
        excludes=exclude or [],
        verdicts=verdict or [],
        lead=lead,
        clear=clear,
        clear_fields=tuple(fields or ()),
    )
    settings = load_settings()
    database = engine(settings, read_only=True)  # edits never create a missing SQLite file
    result = edit_week(database, Edition.from_settings(settings), the_week, request, now=utcnow())
    if show or not request.changes_anything:
        typer.echo(json.dumps(result.document, ensure_ascii=False, indent=2))
    if request.changes_anything:
        _say_saved(str(the_week), request.by, result, err=show)


def _say_saved(week: str, by: str, result: Edited, *, err: bool) -> None:
    """What a saved edit means: where to see it, and what it changes for the run."""
    typer.echo(
        f"Saved the edits of {week} (by {by}). See them with `digest preview --week {week}`.",
        err=err,
    )
    if result.excluded_them:
        typer.echo(
            f"Note: the edits exclude every new tool of {week} that could be in it, so its run "
            "sends nothing. To send it, clear the exclusions (--clear exclude) and exclude "
            "fewer tools.",
            err=err,
        )
    elif result.sends_nothing:
        typer.echo(
            f"Note: {week} has no new tools, so its run sends nothing; the edits apply if "
            "the catalog gains some before the week's run.",
            err=err,
        )
    if result.voided is not None:
        typer.echo(
            f"This edit voids {result.voided.by}'s approval of "
            f"{result.voided.at:%Y-%m-%d %H:%M} UTC: the content changed, so {week} must be "
            f"approved again (`digest approve --week {week}`).",
            err=err,
        )
