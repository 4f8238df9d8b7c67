"""`digest web`: the subscriber-facing web app."""

from __future__ import annotations

from typing import Annotated

import typer

from digest.cli.app import app, engine, load_settings


@app.command("web")
def web(
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")
    ] = 8000,
) -> None:
    """The subscriber-facing web app: unsubscribe, preferences, webhook, archive."""
    import uvicorn

    from digest.web.access_log import install as redact_logs
    from digest.web.app import create_app
    from digest.web.server import server_config

    settings = load_settings()
    engine(settings)
    server = uvicorn.Server(server_config(create_app(settings), settings, host=host, port=port))
    redact_logs()  # after uvicorn configured its loggers, before the first request
    server.run()
