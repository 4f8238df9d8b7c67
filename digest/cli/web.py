"""`digest web`: the subscriber-facing web app."""

from __future__ import annotations

from typing import Annotated

import typer

from digest.cli.app import app, engine
from digest.config import get_settings


@app.command("web")
def web(
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8000,
) -> None:
    """The subscriber-facing web app: unsubscribe, preferences, webhook, archive."""
    import uvicorn

    from digest.web.app import create_app

    settings = get_settings()
    engine(settings)
    from digest.web.access_log import install as redact_access_log

    config = uvicorn.Config(
        create_app(settings), host=host, port=port, log_level="info", proxy_headers=True
    )
    server = uvicorn.Server(config)
    redact_access_log()  # after uvicorn configured its loggers, before the first request
    server.run()
