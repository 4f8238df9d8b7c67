"""The editor's live preview: a local web page showing an email exactly as it would be sent.

Every request calls the `render` callable again, so an edited template or changed database shows
on the next reload; the page also polls a fingerprint of the rendering and reloads itself when it
changes. The server binds to 127.0.0.1 by default and serves only what `render` returns.
"""

from __future__ import annotations

import hashlib
import html
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import urlsplit

from digest.errors import DigestError
from digest.render.variant import RenderedVariant


@dataclass(frozen=True)
class PreviewBundle(RenderedVariant):
    """One rendered message and its headers: what the preview page shows."""

    headers: dict[str, str] = field(default_factory=dict)

    def fingerprint(self) -> str:
        payload = json.dumps([self.subject, self.html, self.text, self.headers], sort_keys=True)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()


Renderer = Callable[[], PreviewBundle]

POLL_MILLISECONDS = 1500

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Preview: {subject}</title>
<style>
body {{ margin: 0; font: 14px/1.5 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
  background: #e5e7eb; color: #111827; }}
header {{ background: #111827; color: #fff; padding: 12px 20px; }}
header h1 {{ font-size: 16px; margin: 0; }}
header p {{ margin: 2px 0 0; color: #c7d2fe; font-size: 12px; }}
main {{ display: flex; flex-wrap: wrap; gap: 20px; padding: 20px; align-items: flex-start; }}
section {{ background: #fff; border-radius: 8px; padding: 14px 16px; }}
h2 {{ font-size: 12px; letter-spacing: .08em; text-transform: uppercase; color: #4b5563;
  margin: 0 0 10px; }}
.frame {{ flex: 1 1 660px; }}
.side {{ flex: 1 1 420px; min-width: 0; }}
iframe {{ border: 1px solid #d1d5db; background: #fff; width: 100%; height: 80vh; }}
.widths a {{ margin-right: 10px; }}
table {{ border-collapse: collapse; width: 100%; font-size: 12px; }}
th, td {{ text-align: left; vertical-align: top; padding: 4px 6px;
  border-bottom: 1px solid #f3f4f6; word-break: break-all; }}
th {{ white-space: nowrap; color: #374151; }}
pre {{ white-space: pre; font-size: 12px; max-height: 70vh; overflow: auto; margin: 0; }}
.meta {{ color: #6b7280; font-size: 12px; }}
</style></head>
<body>
<header><h1>{subject}</h1><p>Preview only: nothing is sent from this page.
HTML {html_kb:.1f} KB &middot; <a href="/email.html" style="color:#c7d2fe">HTML</a>
&middot; <a href="/email.txt" style="color:#c7d2fe">text</a></p></header>
<main>
<section class="frame"><h2>HTML part</h2>
<p class="widths meta">Width:
<a href="#" data-width="375">phone (375)</a><a href="#" data-width="800">desktop (800)</a>
<a href="#" data-width="">full</a></p>
<iframe id="email" title="HTML part" sandbox="allow-popups allow-popups-to-escape-sandbox"
 srcdoc="{srcdoc}"></iframe></section>
<div class="side">
<section><h2>Headers</h2><table>{header_rows}</table></section>
<section style="margin-top:20px"><h2>Text part</h2><pre>{text}</pre></section>
</div>
</main>
<script>
(function () {{
  var frame = document.getElementById("email");
  document.querySelectorAll("[data-width]").forEach(function (link) {{
    link.addEventListener("click", function (event) {{
      event.preventDefault();
      frame.style.width = link.dataset.width ? link.dataset.width + "px" : "100%";
    }});
  }});
  var seen = "{fingerprint}";
  setInterval(function () {{
    fetch("/fingerprint", {{cache: "no-store"}}).then(function (r) {{ return r.text(); }})
      .then(function (now) {{ if (now && now !== seen) {{ location.reload(); }} }})
      .catch(function () {{}});
  }}, {poll});
}})();
</script>
</body></html>
"""

_ERROR_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Preview failed</title>
<style>body {{ font: 15px/1.5 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
margin: 40px; color: #111827; }} pre {{ white-space: pre-wrap; background: #fef2f2;
border-left: 4px solid #dc2626; padding: 12px 16px; }}</style></head>
<body><h1>The email could not be rendered</h1><pre>{message}</pre>
<p>Fix it and save: this page reloads when the rendering succeeds.</p>
<script>
setInterval(function () {{
  fetch("/fingerprint", {{cache: "no-store"}}).then(function (r) {{
    if (r.ok) {{ location.reload(); }} }}).catch(function () {{}});
}}, {poll});
</script></body></html>
"""


def _page(bundle: PreviewBundle) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(name)}</th><td>{html.escape(value)}</td></tr>"
        for name, value in bundle.headers.items()
    )
    return _PAGE.format(
        subject=html.escape(bundle.subject),
        html_kb=len(bundle.html.encode("utf-8")) / 1024,
        srcdoc=html.escape(bundle.html, quote=True),
        header_rows=rows,
        text=html.escape(bundle.text),
        fingerprint=bundle.fingerprint(),
        poll=POLL_MILLISECONDS,
    )


def _failure(exc: Exception) -> str:
    # A user error's message is written for people; anything else is named by its type.
    message = str(exc) if isinstance(exc, DigestError) else f"{type(exc).__name__}: {exc}"
    return _ERROR_PAGE.format(message=html.escape(message), poll=POLL_MILLISECONDS)


def _handler_for(render: Renderer) -> type[BaseHTTPRequestHandler]:
    class PreviewHandler(BaseHTTPRequestHandler):
        server_version = "verdict-digest-preview"

        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            routes: dict[str, Callable[[PreviewBundle], tuple[str, str]]] = {
                "/": lambda b: ("text/html; charset=utf-8", _page(b)),
                "/email.html": lambda b: ("text/html; charset=utf-8", b.html),
                "/email.txt": lambda b: ("text/plain; charset=utf-8", b.text),
                "/fingerprint": lambda b: ("text/plain; charset=utf-8", b.fingerprint()),
            }
            route = routes.get(path)
            if route is None:
                self._send(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", "Not found\n")
                return
            try:
                bundle = render()
            except Exception as exc:  # the page reports any failure; the server keeps running
                status = HTTPStatus.INTERNAL_SERVER_ERROR
                if path == "/":
                    self._send(status, "text/html; charset=utf-8", _failure(exc))
                else:
                    self._send(status, "text/plain; charset=utf-8", f"{exc}\n")
                return
            self._send(HTTPStatus.OK, *route(bundle))

        def _send(self, status: HTTPStatus, content_type: str, body: str) -> None:
            data = body.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            # The page polls every second or so; logging each request would drown the terminal.
            return

    return PreviewHandler


class PreviewServer:
    """A running preview server; close it (or use it as a context manager) to stop it."""

    def __init__(self, render: Renderer, *, host: str = "127.0.0.1", port: int = 0) -> None:
        try:
            self._httpd = ThreadingHTTPServer((host, port), _handler_for(render))
        except OSError as exc:
            raise DigestError(
                f"The preview server cannot listen on {host}:{port} ({exc.strerror}). "
                "Choose another port, or stop the program that holds this one."
            ) from None
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        address = self._httpd.server_address
        host = address[0].decode() if isinstance(address[0], bytes) else str(address[0])
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{address[1]}/"

    def start(self) -> PreviewServer:
        """Serve from a background thread and return at once."""
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="digest-preview", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until interrupted."""
        self._httpd.serve_forever()

    def close(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> PreviewServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def start_preview(render: Renderer, *, host: str = "127.0.0.1", port: int = 0) -> PreviewServer:
    """Start a preview server in the background; the caller closes it."""
    return PreviewServer(render, host=host, port=port).start()


def serve_preview(
    render: Renderer,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    echo: Callable[[str], None] = print,
) -> None:
    """Serve the preview in the foreground, print its URL, and stop cleanly on Ctrl-C."""
    server = PreviewServer(render, host=host, port=port)
    echo(f"Previewing at {server.url} (reload to re-render; Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        echo("Preview stopped.")
    finally:
        server.close()
