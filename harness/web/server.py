"""One HTTP server per lab: the app, its guards, and its lifecycle in the lab's own event loop.

Why aiohttp's server: it runs inside the loop the lab's servers already use (no second thread, no ASGI runner),
speaks HTTP/1.1 with keep-alive and server-sent events, and its request parser is well kept; nothing here parses
HTTP by hand. Jinja2 renders the pages with autoescaping on, so a message's text is escaped everywhere.

What every request passes, before any handler (the threats of a server on a laptop's loopback):
- Host check: only the names the server was reached by (127.0.0.1, localhost, [::1] and the bound host, with
  the port) are answered. A page on another site cannot reach this one through DNS rebinding.
- Who may see what: the API needs the lab's token (`Authorization: Bearer`), the console the token once
  (`/?token=...`, then an HttpOnly SameSite=Strict cookie), the webmail a user's own login. A server on a
  non-loopback address refuses to start unless a token was set explicitly.
- Forms: a POST must come from this origin (Origin or Referer header), so another site cannot submit them.
- Bounds: request bodies (1 MiB), open push streams (per lab and per login), long-poll waits (300 s at most).
- Errors: every 4xx/5xx is JSON under /api/ and a short page elsewhere; never a traceback.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from recall_lab.harness.web.timeline import Timeline

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).with_name("templates")
STATIC = Path(__file__).with_name("static")

#: The cookie the console's browser carries once it has shown the token.
CONSOLE_COOKIE = "recall_lab_console"
#: Request bodies larger than this are refused (413): forms and the API's JSON are small.
MAX_BODY = 1024 * 1024
#: Open push streams (server-sent events) for the whole lab, and per webmail login.
MAX_STREAMS = 64
MAX_STREAMS_PER_LOGIN = 8

LAB_KEY = web.AppKey("lab", object)
SERVER_KEY: web.AppKey[WebServer] = web.AppKey("server")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class WebError(Exception):
    """The web server cannot start as asked (a port in use, a public address without a token): one line."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def json_error(status: int, error: str, **extra: Any) -> web.Response:
    """The one shape of an API error: {"error": <short code>, "message": <a sentence>, ...}."""
    body = {"error": _reason(status), "message": error, **extra}
    return web.json_response(body, status=status, dumps=lambda o: json.dumps(o, default=str))


def _reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_")
    except ValueError:
        return "error"


class WebServer:
    """The lab's web server; see the module docstring. `lab` is the running `Lab` (its public API only)."""

    def __init__(self, lab: Any, *, host: str = "127.0.0.1", port: int = 0, token: str | None = None) -> None:
        self.lab = lab
        self.host = host
        self.requested_port = port
        self.token_explicit = token is not None
        self.token = token if token is not None else secrets.token_urlsafe(24)
        if not self.token_explicit and not is_loopback(host):
            raise WebError(f"the web server would listen on {host}, which is not a loopback address: "
                           "set a token explicitly (--web-token) to serve there")
        if len(self.token) < 16:
            raise WebError("the web token must be at least 16 characters")
        self.timeline = Timeline(lab)
        self.templates = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                                            autoescape=jinja2.select_autoescape(default=True),
                                            undefined=jinja2.StrictUndefined)
        self.streams = 0
        self.port = 0
        self._runner: web.AppRunner | None = None
        self.app = self._build_app()

    # -- the app ------------------------------------------------------------------------------------------
    def _build_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._guard_middleware])
        app[LAB_KEY] = self.lab
        app[SERVER_KEY] = self
        from recall_lab.harness.web import api, console, webmail

        api.add_routes(app, self)
        webmail.add_routes(app, self)
        console.add_routes(app, self)
        app.router.add_static("/static/", STATIC, append_version=True)
        return app

    def render(self, template: str, status: int = 200, **context: Any) -> web.Response:
        """A page from templates/ (autoescaped), with the headers every page of ours carries."""
        text = self.templates.get_template(template).render(**context)
        return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")

    @web.middleware
    async def _guard_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not self._host_allowed(request.host):
            return self._error(request, 421, f"this server does not answer for host {request.host!r}")
        if request.method == "POST" and not request.path.startswith("/api/") and not self._same_origin(request):
            return self._error(request, 403, "a form of this lab must be sent from this lab's own pages")
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return self._error(request, exc.status, exc.text or exc.reason, headers=exc.headers)
        except Exception:  # noqa: BLE001 - a bug in a handler must never show the peer a traceback
            log.exception("web: %s %s failed", request.method, request.path)
            return self._error(request, 500, "the lab could not answer this request; see its log")
        self._secure_headers(response)
        return response

    def _error(self, request: web.Request, status: int, message: str, headers: Any = None) -> web.Response:
        if request.path.startswith("/api/"):
            response = json_error(status, message)
        else:
            response = self.render("error.html", status=status, status_code=status, message=message)
        if headers:
            for key in ("WWW-Authenticate", "Retry-After", "Allow"):
                if key in headers:
                    response.headers[key] = headers[key]
        self._secure_headers(response)
        return response

    @staticmethod
    def _secure_headers(response: web.StreamResponse) -> None:
        h = response.headers
        h.setdefault("X-Content-Type-Options", "nosniff")
        h.setdefault("Referrer-Policy", "same-origin")  # no-referrer makes Chromium send Origin: null on a form POST
        h.setdefault("X-Frame-Options", "DENY")
        # pages without their own policy get the strictest: no script, nothing from elsewhere
        h.setdefault("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self' data:; "
                                                "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")

    def _host_allowed(self, host: str | None) -> bool:
        if not host:
            return False
        allowed = {"127.0.0.1", "localhost", "[::1]", self.host if ":" not in self.host else f"[{self.host}]"}
        return host in {f"{name}:{self.port}" for name in allowed}

    def _same_origin(self, request: web.Request) -> bool:
        origin = request.headers.get("Origin") or request.headers.get("Referer")
        if not origin or origin == "null":
            return False
        from yarl import URL

        try:
            url = URL(origin)
        except ValueError:
            return False
        return url.scheme == "http" and url.port == self.port and self._host_allowed(f"{url.host}:{url.port}")

    # -- who may see what -----------------------------------------------------------------------------
    def token_matches(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())

    def check_bearer(self, request: web.Request) -> None:
        """The API's door: `Authorization: Bearer <token>` or 401 (with WWW-Authenticate, as RFC 6750 says)."""
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not self.token_matches(value.strip()):
            why = "missing" if not header else "wrong"
            raise web.HTTPUnauthorized(text=f"{why} token: send 'Authorization: Bearer <the lab's web token>'",
                                       headers={"WWW-Authenticate": 'Bearer realm="recall-lab"'})

    def console_cookie_value(self) -> str:
        """What the console's cookie holds: derived from the token, so the token itself is never in a cookie."""
        return hmac.new(self.token.encode(), b"console", "sha256").hexdigest()

    def console_allowed(self, request: web.Request) -> bool:
        cookie = request.cookies.get(CONSOLE_COOKIE)
        return cookie is not None and hmac.compare_digest(cookie, self.console_cookie_value())

    # -- lifecycle ------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host = self.host if ":" not in self.host else f"[{self.host}]"
        return f"http://{host}:{self.port}"

    @property
    def console_url(self) -> str:
        """The console's address with the token, the one URL a teacher opens (it sets the cookie, then drops
        the token from the address bar)."""
        return f"{self.url}/?token={self.token}"

    def as_dict(self) -> dict[str, Any]:
        """The endpoints JSON's "web" entry."""
        return {"host": self.host, "port": self.port, "token": self.token, "url": self.url,
                "console": self.console_url, "mail": f"{self.url}/mail/", "api": f"{self.url}/api/v1/"}

    async def start(self) -> None:
        self.timeline.start()
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.requested_port, reuse_address=True, backlog=128)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            self.timeline.stop()
            raise WebError(f"cannot listen for the web server on {self.host}:{self.requested_port}: "
                           f"{exc.strerror or exc}") from None
        self._runner = runner
        self.port = runner.addresses[0][1]

    async def stop(self) -> None:
        """Closes push streams and long polls first (they would hold the shutdown), then the listener."""
        self.timeline.stop()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
