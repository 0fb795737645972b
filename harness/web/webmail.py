"""The lab's webmail at /mail/: log in, list a folder, open a message, move it; a static and a live view.

Why the webmail is an IMAP client of the lab and not a reader of its stores: it checks a login exactly as IMAP
does (an IMAP LOGIN against the user's domain, with that server's login throttling), opening a message is a real
`UID FETCH BODY[]` so the IMAP server sets \\Seen as it would for any client, and it keeps working when a
domain's IMAP server is another program (Dovecot, say): it only needs an address and a port
(`Webmail.imap_endpoint`).

Two views of the same pages, standing for two kinds of real web clients:
- `view=static` (the default): server-rendered HTML with no script at all (CSP script-src 'none'), like a web
  client that renders a page once. What it shows stays until reload: a recalled message is still listed, and
  an opened one still readable, until the page is loaded again; its old link then says "item not found" (404).
- `view=live`: the same HTML plus static/mail-live.js, which subscribes to /mail/events (server-sent events fed
  by an IMAP IDLE connection, mail_events.py): a recalled message leaves the list, an opened one is replaced by
  "This message was recalled by the sender", new mail appears, all within the IDLE push's latency.

Logins are server-side sessions (mail_session.py). Every request is bounded: IMAP timeouts, the list's page
size, the bytes fetched and the characters rendered of a message (mail_imap.py, mail_render.py), the push
streams (MAX_STREAMS for the lab, MAX_STREAMS_PER_LOGIN per login: 429 beyond).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from recall_lab.harness.clients.connection import ImapClientError, ImapCommandError, ImapConnection
from recall_lab.harness.web import mail_imap
from recall_lab.harness.web.mail_events import MailStream
from recall_lab.harness.web.mail_imap import LoginRefused, NotFound
from recall_lab.harness.web.mail_render import MAX_BODY_CHARS, render_message
from recall_lab.harness.web.mail_session import SESSION_COOKIE, MailSession, SessionStore

VIEWS = ("static", "live")
_COMMON_CSP = ("default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
               "frame-ancestors 'none'; base-uri 'none'")
#: The static view runs no script at all.
STATIC_CSP = _COMMON_CSP + "; script-src 'none'"
#: The live view runs our own script, which talks only to this server.
LIVE_CSP = _COMMON_CSP + "; script-src 'self'; connect-src 'self'"
MAX_ADDRESS = 254
MAX_PASSWORD = 1024
MAX_FOLDER_NAME = 200
_ADDRESS = re.compile(r"[^@\s<>()\[\],;:\\\"]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
_BAD_FOLDER_CHARS = re.compile(r"[\x00-\x1f\x7f*%]")

WEBMAIL_KEY: web.AppKey[Webmail] = web.AppKey("webmail")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _LoginNeeded(Exception):
    """The session is missing, expired, or its password no longer logs in: show the login form."""

    def __init__(self, message: str = "", status: int = 401) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def _query_view(request: web.Request) -> str:
    view = request.query.get("view", "static")
    if view not in VIEWS:
        raise web.HTTPBadRequest(text=f"view must be 'static' or 'live', not {view[:40]!r}")
    return view


def _folder_name(value: str | None) -> str:
    name = value if value else "INBOX"
    if len(name) > MAX_FOLDER_NAME or not name.isascii() or _BAD_FOLDER_CHARS.search(name):
        raise web.HTTPBadRequest(text="a folder name is printable ASCII, at most 200 characters")
    return name


def _number(value: str | None, what: str, *, default: int | None = None, high: int = 2**32 - 1) -> int | None:
    if value is None or value == "":
        return default
    if not value.isdigit() or not 1 <= int(value) <= high:
        raise web.HTTPBadRequest(text=f"{what} must be a whole number from 1 to {high}")
    return int(value)


def _url(path: str, **params: Any) -> str:
    return path + "?" + urlencode({k: v for k, v in params.items() if v is not None})


class Webmail:
    """The webmail of one web server; see the module docstring."""

    def __init__(self, server: Any, *, sessions: SessionStore | None = None,
                 imap_timeout: float = mail_imap.IMAP_TIMEOUT) -> None:
        self.server = server
        self.sessions = sessions or SessionStore()
        self.imap_timeout = imap_timeout
        self.closing = asyncio.Event()
        #: Where a user's IMAP server is: (host, port). The lab's own by default; tests may point a domain at
        #: another program.
        self.imap_endpoint: Callable[[str], tuple[str, int]] = self._lab_imap

    def _lab_imap(self, user: str) -> tuple[str, int]:
        lab = self.server.lab
        endpoint = lab.imap(lab.domain_of(user))
        return str(endpoint.host), int(endpoint.port)

    # --- pages ------------------------------------------------------------------------------------------

    def _page(self, template: str, view: str, status: int = 200, **context: Any) -> web.Response:
        response = self.server.render(template, status=status, view=view, **context)
        response.headers["Content-Security-Policy"] = LIVE_CSP if view == "live" else STATIC_CSP
        response.headers["Cache-Control"] = "no-store"
        # With "no-referrer" (the server's default) a browser sends "Origin: null" with a form's POST, and the
        # same-origin check refuses it; "same-origin" sends our own origin to us and nothing to other sites.
        response.headers["Referrer-Policy"] = "same-origin"
        return response

    def _login_page(self, view: str, status: int = 200, error: str = "", address: str = "") -> web.Response:
        return self._page("mail_login.html", "static" if status >= 400 else view, status, title="Log in",
                          user=None, error=error, address=address, login_view=view)

    def _not_found(self, view: str, session: MailSession, folder: str) -> web.Response:
        return self._page("mail_notfound.html", view, 404, title="Item not found", user=session.user,
                          folder=folder, back=_url("/mail/", folder=folder, view=view))

    def _session(self, request: web.Request) -> MailSession:
        session = self.sessions.get(request.cookies.get(SESSION_COOKIE))
        if session is None:
            raise _LoginNeeded("Your session has ended: log in again." if SESSION_COOKIE in request.cookies
                               else "")
        return session

    @contextlib.asynccontextmanager
    async def _imap(self, session: MailSession) -> AsyncIterator[ImapConnection]:
        try:
            host, port = self.imap_endpoint(session.user)
        except (KeyError, RuntimeError) as exc:
            raise web.HTTPBadGateway(text=f"no IMAP server for {session.user}: {exc}") from None
        try:
            async with mail_imap.imap_session(host, port, session.user, session.password,
                                              self.imap_timeout) as conn:
                yield conn
        except LoginRefused:
            self.sessions.drop(session.id)
            raise _LoginNeeded("The mail server no longer accepts this login: log in again.") from None
        except ImapCommandError as exc:
            raise web.HTTPBadGateway(text=f"the mail server refused: {exc}") from None
        except ImapClientError as exc:
            raise web.HTTPGatewayTimeout(text=f"the mail server did not answer: {exc}") from None

    def _guarded(self, handler: Handler) -> Handler:
        async def run(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request)
            except _LoginNeeded as need:
                view = request.query.get("view") if request.query.get("view") in VIEWS else "static"
                response = self._login_page(view, need.status, need.message)
                response.del_cookie(SESSION_COOKIE, path="/mail/")
                return response
        return run

    async def index(self, request: web.Request) -> web.StreamResponse:
        view = _query_view(request)
        cookie = request.cookies.get(SESSION_COOKIE)
        session = self.sessions.get(cookie)
        if session is None:
            return self._login_page(view, error="Your session has ended: log in again." if cookie else "")
        folder = _folder_name(request.query.get("folder"))
        page = _number(request.query.get("page"), "page", default=1, high=1_000_000) or 1
        fragment = request.query.get("fragment") == "list"
        async with self._imap(session) as conn:
            folders = [] if fragment else await mail_imap.folders(conn)
            try:
                listing = await mail_imap.list_page(conn, folder, page, mail_imap.PAGE_SIZE)
            except NotFound as exc:
                raise web.HTTPNotFound(text=str(exc)) from None
        context = {"title": folder, "user": session.user, "folder": folder, "folders": folders,
                   "listing": listing, "page_url": lambda n: _url("/mail/", folder=folder, view=view, page=n),
                   "message_url": lambda uid: _url("/mail/message", folder=folder, uid=uid, view=view)}
        return self._page("mail_list.html" if fragment else "mail_index.html", view, **context)

    async def message(self, request: web.Request) -> web.StreamResponse:
        view = _query_view(request)
        session = self._session(request)
        folder = _folder_name(request.query.get("folder"))
        uid = _number(request.query.get("uid"), "uid")
        message_id = request.query.get("message_id", "")
        if uid is None and not message_id:
            raise web.HTTPBadRequest(text="say which message: uid=<n> (or message_id=<id>)")
        if len(message_id) > 998:
            raise web.HTTPBadRequest(text="message_id is too long")
        async with self._imap(session) as conn:
            try:
                uid = await mail_imap.message_uid(conn, folder, uid, message_id)
                raw, cut = await mail_imap.open_message(conn, folder, uid)
            except NotFound:
                return self._not_found(view, session, folder)
            targets = [name for name in await conn.list_mailboxes() if name != folder][: mail_imap.MAX_FOLDERS]
        shown = render_message(raw, fetch_cut=cut)
        return self._page("mail_message.html", view, title=shown.subject or "(no subject)", user=session.user,
                          folder=folder, uid=uid, message=shown, targets=targets,
                          back=_url("/mail/", folder=folder, view=view), max_chars=MAX_BODY_CHARS,
                          max_fetch_mib=mail_imap.MAX_FETCH // (1024 * 1024))

    # --- forms ------------------------------------------------------------------------------------------

    async def login(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        address = str(form.get("address", "")).strip().lower()
        password = str(form.get("password", ""))
        view = str(form.get("view", "static"))
        view = view if view in VIEWS else "static"
        if len(address) > MAX_ADDRESS or not _ADDRESS.fullmatch(address):
            return self._login_page(view, 400, "That is not an email address (name@domain).", address[:MAX_ADDRESS])
        if not password or len(password) > MAX_PASSWORD:
            return self._login_page(view, 400, "Enter your password.", address)
        try:
            host, port = self.imap_endpoint(address)
        except KeyError:  # not a domain of this lab: the same answer as a wrong password
            return self._login_page(view, 401, "Wrong address or password.", address)
        except RuntimeError:
            return self._login_page(view, 502, "This address's domain has no IMAP server to log in to.", address)
        try:
            async with mail_imap.imap_session(host, port, address, password, self.imap_timeout):
                pass
        except LoginRefused:
            return self._login_page(view, 401, "Wrong address or password.", address)
        except ImapClientError:
            return self._login_page(view, 502, "The mail server cannot be reached; try again later.", address)
        session = self.sessions.create(address, password)
        response = web.Response(status=303, headers={"Location": _url("/mail/", folder="INBOX", view=view)})
        response.set_cookie(SESSION_COOKIE, session.id, path="/mail/", httponly=True, samesite="Strict")
        return response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        self.sessions.drop(request.cookies.get(SESSION_COOKIE))
        response = web.Response(status=303, headers={"Location": "/mail/"})
        response.del_cookie(SESSION_COOKIE, path="/mail/")
        return response

    async def move(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        view = str(form.get("view", "static"))
        view = view if view in VIEWS else "static"
        session = self._session(request)
        folder = _folder_name(str(form.get("folder", "")) or None)
        target = _folder_name(str(form.get("target", "")) or None)
        uid = _number(str(form.get("uid", "")) or None, "uid")
        message_id = str(form.get("message_id", ""))[:998]
        if uid is None and not message_id:
            raise web.HTTPBadRequest(text="say which message: uid=<n> (or message_id=<id>)")
        if target == folder:
            raise web.HTTPBadRequest(text="the message is already in that folder")
        async with self._imap(session) as conn:
            try:
                uid = await mail_imap.message_uid(conn, folder, uid, message_id)
                await mail_imap.move(conn, folder, uid, target)
            except NotFound:
                return self._not_found(view, session, folder)
            except ImapCommandError as exc:
                raise web.HTTPBadRequest(text=f"cannot move the message to {target!r}: {exc}") from None
        return web.Response(status=303, headers={"Location": _url("/mail/", folder=folder, view=view)})

    # --- the live view's push stream -----------------------------------------------------------------

    async def events(self, request: web.Request) -> web.StreamResponse:
        session = self.sessions.get(request.cookies.get(SESSION_COOKIE))
        if session is None:
            raise web.HTTPUnauthorized(text="log in to the webmail first")
        folder = _folder_name(request.query.get("folder"))
        server = self.server
        from recall_lab.harness.web.server import MAX_STREAMS, MAX_STREAMS_PER_LOGIN

        if server.streams >= MAX_STREAMS:
            raise web.HTTPTooManyRequests(text=f"the lab already serves {MAX_STREAMS} live pages",
                                          headers={"Retry-After": "10"})
        if session.streams >= MAX_STREAMS_PER_LOGIN:
            raise web.HTTPTooManyRequests(text=f"this login already has {MAX_STREAMS_PER_LOGIN} live pages open",
                                          headers={"Retry-After": "10"})
        try:
            host, port = self.imap_endpoint(session.user)
        except (KeyError, RuntimeError) as exc:
            raise web.HTTPBadGateway(text=f"no IMAP server for {session.user}: {exc}") from None
        server.streams += 1
        session.streams += 1
        try:
            stream = MailStream(host, port, session.user, session.password, folder, timeout=self.imap_timeout,
                                closing=self.closing)
            response = web.StreamResponse(headers={
                "Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no",
                "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
                "Content-Security-Policy": "default-src 'none'"})
            try:
                return await stream.run(request, response)
            except LoginRefused:
                self.sessions.drop(session.id)
                raise web.HTTPUnauthorized(text="the mail server no longer accepts this login") from None
            except ImapCommandError:
                raise web.HTTPNotFound(text=f"there is no folder named {folder!r}") from None
            except ImapClientError as exc:
                raise web.HTTPBadGateway(text=f"the mail server did not answer: {exc}") from None
        finally:
            server.streams -= 1
            session.streams -= 1

    async def on_shutdown(self, app: web.Application) -> None:
        """Ends every push stream (they would hold the web server's shutdown)."""
        self.closing.set()


async def _redirect_to_slash(request: web.Request) -> web.StreamResponse:
    return web.Response(status=308, headers={"Location": "/mail/"})


def add_routes(app: web.Application, server: Any) -> None:
    mail = Webmail(server)
    app[WEBMAIL_KEY] = mail
    app.on_shutdown.append(mail.on_shutdown)
    guarded = mail._guarded
    app.router.add_get("/mail", _redirect_to_slash)
    app.router.add_get("/mail/", guarded(mail.index))
    app.router.add_get("/mail/message", guarded(mail.message))
    app.router.add_get("/mail/events", mail.events)
    app.router.add_post("/mail/login", mail.login)
    app.router.add_post("/mail/logout", mail.logout)
    app.router.add_post("/mail/move", guarded(mail.move))
