"""`digest preview`: the week's digest rendered exactly as it would be sent, without sending."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from digest.cli.app import WeekOption, app, engine, load_settings

if TYPE_CHECKING:
    from digest.config import Settings
    from digest.errors import DigestError
    from digest.preview.rendering import Preview, SkippedPreview
    from digest.preview.server import PreviewBundle


@app.command("preview")
def preview(
    week: WeekOption = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Write digest-<week>.html/.txt/.eml here; with --email, digest-<week>-<variant>.*",
        ),
    ] = None,
    email: Annotated[
        str | None, typer.Option("--email", help="Render this subscriber's variant.")
    ] = None,
    output_format: Annotated[
        str, typer.Option("--format", help="html (files or a summary) or json (to stdout).")
    ] = "html",
    serve: Annotated[
        bool, typer.Option("--serve", help="Serve a live preview on 127.0.0.1.")
    ] = False,
    send_to: Annotated[
        str | None,
        typer.Option("--send-to", help="Mail this rendering to an editor, marked as a test."),
    ] = None,
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="Port for --serve (0: any free port).")
    ] = 8025,
) -> None:
    """Render the digest of a week exactly as it would be sent, without sending it."""
    from digest.errors import ConfigError
    from digest.preview.rendering import SkippedPreview, plan_preview
    from digest.weeks import resolve_week, utcnow

    if output_format not in {"html", "json"}:
        raise ConfigError(
            f"--format {output_format!r} is not known. Use --format html or --format json."
        )
    if email is not None and not email.strip():
        raise ConfigError("--email is empty. Give a subscriber's address, or leave it out.")
    if send_to is not None:
        send_to = _test_address(send_to)
    if out is not None:
        _must_be_a_folder(out)
    settings = load_settings()
    the_week = resolve_week(week, now=utcnow(), zone=settings.zone)
    engine(settings, read_only=True)
    if serve:
        _serve_preview(settings, the_week, email, port)
        return
    result = plan_preview(settings, the_week, email=email)
    if isinstance(result, SkippedPreview):
        _report_skipped(result, output_format)
    else:
        _deliver(settings, result, output_format=output_format, out=out, send_to=send_to)


def _test_address(address: str) -> str:
    """The editor's address, checked before anything is rendered: one address, one mailbox."""
    from digest.audience.addresses import AddressError, clean_address

    try:
        return clean_address(address)
    except AddressError as bad:
        raise AddressError(
            f"--send-to {address!r} cannot be used: {bad.reason}",
            fix="Give one address, such as --send-to editor@example.com.",
        ) from None


def _must_be_a_folder(out: Path) -> None:
    """--out names a folder that exists or can be made; checked before anything is rendered."""
    existing = next((p for p in (out, *out.parents) if p.exists()), None)
    if existing is None or not existing.is_dir():
        raise _not_a_folder(out, f"{existing} is a file" if existing else "no such place")


def _not_a_folder(out: Path, why: str) -> DigestError:
    from digest.errors import ConfigError

    return ConfigError(
        f"--out {out} cannot be used as a folder ({why}). Give a folder that exists or can be "
        "created, such as --out preview."
    )


def _deliver(
    settings: Settings,
    result: Preview,
    *,
    output_format: str,
    out: Path | None,
    send_to: str | None,
) -> None:
    """Print, write or mail the rendered preview, as the options ask."""
    from digest.preview.rendering import preview_json, send_test, write_files

    if result.content.is_empty and output_format == "html":
        _nothing_to_send(result.week, refuse=out is not None or bool(send_to))
        return
    if output_format == "json":
        typer.echo(json.dumps(preview_json(result), ensure_ascii=False, indent=2))
    if out is not None:
        try:
            paths = write_files(result, out)
        except OSError as cannot:
            raise _not_a_folder(out, cannot.strerror or str(cannot)) from None
        typer.echo("Wrote " + ", ".join(str(p) for p in paths), err=output_format == "json")
    if send_to:
        send_test(settings, result, send_to)
        typer.echo(
            f"Sent a test copy of {result.week} to {send_to} through the "
            f"{settings.email_backend} backend.",
            err=output_format == "json",
        )
    if output_format == "html" and out is None and not send_to:
        typer.echo(f"{result.week}: {result.subject}")
        typer.echo(
            f"{len(result.content.pairs)} pair(s), {len(result.content.also_new)} also new, "
            f"{len(result.content.excluded)} excluded; "
            f"HTML {len(result.html.encode()) / 1024:.1f} KB. "
            "Use --out DIR to write the files, --serve to view them."
        )


def _nothing_to_send(week: str, *, refuse: bool) -> None:
    """A week without new tools sends no email: there is nothing to show, write or mail."""
    from digest.errors import PreviewSkippedError
    from digest.preview.rendering import nothing_to_send

    said = f"{nothing_to_send(week)} There is no email to preview."
    if refuse:
        raise PreviewSkippedError(
            f"{said} Nothing was written or sent. Pick a week with new tools (`digest preview "
            "--week W --format json` lists a week's pairs)."
        )
    typer.echo(said)


def _report_skipped(skipped: SkippedPreview, output_format: str) -> None:
    """A subscriber the run would skip: say so and why; no email is rendered, written or sent."""
    from digest.preview.rendering import preview_json

    if output_format == "json":
        typer.echo(json.dumps(preview_json(skipped), ensure_ascii=False, indent=2))
        return
    categories = ", ".join(skipped.categories) or "(every category)"
    typer.echo(f"{skipped.week}: no email for {skipped.email}.")
    typer.echo(skipped.reason)
    typer.echo(f"Their categories: {categories}")
    typer.echo("Nothing was written or sent. Preview without --email to see the week's email.")


def preview_bundle(settings: Settings, week: Any, email: str | None) -> PreviewBundle:
    """What `--serve` shows on each reload: the email, or why this subscriber gets none."""
    from digest.preview.rendering import SkippedPreview, nothing_to_send, plan_preview
    from digest.preview.server import PreviewBundle

    fresh = plan_preview(settings, week, email=email)
    if isinstance(fresh, SkippedPreview):
        notice = f"{fresh.reason} Their categories: {', '.join(fresh.categories)}."
        return _notice(f"No email for {fresh.email} this week", notice)
    if fresh.content.is_empty:  # an editor's subject alone makes no email
        return _notice(
            f"No email for {fresh.week}",
            f"{nothing_to_send(fresh.week)} This page shows the email once the week has some.",
        )
    return PreviewBundle(
        subject=fresh.subject, html=fresh.html, text=fresh.text, headers=fresh.headers
    )


def _notice(subject: str, notice: str) -> PreviewBundle:
    from digest.preview.server import PreviewBundle

    return PreviewBundle(
        subject=subject, html=f"<!doctype html><p>{html.escape(notice)}</p>", text=notice
    )


def _serve_preview(settings: Settings, week: Any, email: str | None, port: int) -> None:
    from digest.preview.server import serve_preview

    serve_preview(lambda: preview_bundle(settings, week, email), host="127.0.0.1", port=port)
