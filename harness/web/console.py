"""The lab console: what a teacher projects while the lab runs (`/`, `/console/events`, `/console/recalls`).

Why one page with a push stream: the class should see a message arrive, relay, get read and disappear as it
happens, next to the counts that change with it. The page is rendered complete on the server (it shows the
lab's state at load time with JavaScript off); static/console.js then follows `/console/events`, a stream of
server-sent events (one event per timeline entry, its `id` the entry's `seq`, and a "counts" event whenever a
folder's counts or a relay queue change). Server-sent events and not a WebSocket: one direction is all the
console needs, and the browser's EventSource reconnects by itself, sending `Last-Event-ID`, from which the
stream replays what was missed (`Timeline.since`).

Who may look: the token, once. `/?token=T` sets an HttpOnly, SameSite=Strict cookie derived from the token and
redirects to `/` (the token leaves the address bar and the history); without the cookie every console URL
answers 401 with a page that says to open the URL the lab printed.

Bounds (a browser tab left open for a day, a stuck reader, many tabs):
- every stream has a bounded queue; a reader that falls behind by QUEUE_LIMIT items is dropped (its
  connection closed) and its EventSource reconnects with Last-Event-ID, so nothing grows without bound;
- a write that does not complete within WRITE_TIMEOUT seconds drops the stream the same way;
- open streams count against the lab's MAX_STREAMS (429 beyond);
- a heartbeat comment every HEARTBEAT_S seconds keeps proxies from closing an idle stream;
- when the lab stops, every stream ends at once (the server's shutdown waits for nothing).

`recall-lab demo --web` starts one lab after another on the same port and token: every lab has its own
`lab_id`, sent first on each stream as a "hello" event; a page from an earlier lab sees a new id and reloads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from email import policy as email_policy
from email.parser import BytesParser
from typing import Any
from urllib.parse import quote

from aiohttp import web

from recall_lab.harness.web.server import CONSOLE_COOKIE, MAX_STREAMS

#: Items (entries, counts) a stream may have waiting before its reader counts as stuck and is dropped.
QUEUE_LIMIT = 2000
#: Seconds between heartbeat comments on an idle stream.
HEARTBEAT_S = 15.0
#: Seconds a single write to a reader may take before the reader counts as stuck.
WRITE_TIMEOUT = 10.0
#: What EventSource waits before reconnecting (milliseconds, sent as the stream's `retry:`).
RETRY_MS = 1000
#: Counts are recomputed at most this often (a burst of deliveries becomes one update) ...
COUNTS_MIN_INTERVAL_S = 0.2
#: ... and at least this often, even when nothing announced a change.
COUNTS_PERIOD_S = 5.0
#: Timeline lines on the page when it loads (the stream adds the rest; console.js keeps at most 500).
PAGE_ENTRIES = 300
#: Characters of a report's text shown on a recall page.
REPORT_TEXT_LIMIT = 20_000

#: The console pages run their own script and talk only to this server.
CSP = ("default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; img-src 'self' data:; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")

_KIND_CLASS = re.compile(r"[^a-z0-9-]+")
_PARSER = BytesParser(policy=email_policy.default)


def kind_class(kind: str) -> str:
    """The CSS class of an entry's kind (`kind-recall-honoured`); kinds come from policies, so filtered."""
    return "kind-" + (_KIND_CLASS.sub("-", str(kind).lower()).strip("-") or "other")


def recall_href(message_id: str) -> str:
    """The recall page of an original: its Message-ID without the angle brackets, percent-encoded."""
    return "/console/recalls/" + quote(str(message_id).strip().strip("<>"), safe="@")


def lab_counts(lab: Any) -> dict[str, Any]:
    """Every domain, its role and relay queue, its users and each user's folders (messages, unread), read
    through the lab's and the stores' public API."""
    domains = []
    for name in lab.domains:
        try:
            store = lab.store(name)
            pending = len(lab.relay_pending(name))
        except (KeyError, RuntimeError):  # the lab is stopping
            continue
        users = []
        for user in sorted(lab.users(name)):
            try:
                boxes = store.list_mailboxes(user)
            except Exception:  # noqa: BLE001 - a user whose mailboxes are gone (the store closing): no folders
                boxes = []
            users.append({"user": user, "folders": [{"name": b.name, "exists": b.exists, "unseen": b.unseen}
                                                    for b in boxes]})
        domains.append({"name": name, "role": lab.role(name), "relay_pending": pending, "users": users})
    return {"domains": domains}


def _sse(event: str, data: Any, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, default=str, separators=(',', ':'))}\n\n"


@dataclass(eq=False)
class _Stream:
    """One reader's bounded queue. `offer` runs synchronously on the loop (timeline listeners do)."""

    limit: int
    on_drop: Callable[[], None]
    items: deque[tuple[str, Any]] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    dropped: bool = False
    ended: bool = False
    writing: bool = False  # a write to the reader is under way (a stuck one is cut by closing the connection)

    def offer(self, kind: str, payload: Any) -> None:
        if self.ended or self.dropped:
            return
        if len(self.items) >= self.limit:
            self.dropped = True
            self.items.clear()
            self.wake.set()
            self.on_drop()
            return
        self.items.append((kind, payload))
        self.wake.set()

    def offer_entry(self, entry: dict[str, Any]) -> None:
        self.offer("entry", entry)

    def end(self) -> None:
        self.ended = True
        self.wake.set()

    async def next(self, timeout: float) -> list[tuple[str, Any]]:
        """What is waiting, or [] after `timeout` seconds of nothing (or when the stream ended or was dropped)."""
        if not self.items and not self.ended and not self.dropped:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout)
        self.wake.clear()
        out = list(self.items)
        self.items.clear()
        return out


class Console:
    """The console of one WebServer (see the module docstring)."""

    def __init__(self, server: Any) -> None:
        self.server = server
        #: Changes with every lab, so a page left open across `demo --web` conditions knows to reload.
        self.lab_id = secrets.token_hex(8)
        self.streams: set[_Stream] = set()
        self._counts_task: asyncio.Task[None] | None = None
        self._last_counts: dict[str, Any] | None = None

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/", self.index)
        app.router.add_get("/console/events", self.events)
        app.router.add_get("/console/recalls", self.recalls)
        app.router.add_get("/console/recalls/{message_id:.+}", self.recall)
        app.on_shutdown.append(self._shutdown)

    # -- the door -------------------------------------------------------------------------------------
    def _require(self, request: web.Request) -> None:
        if not self.server.console_allowed(request):
            raise web.HTTPUnauthorized(text="no console session")

    def _denied(self, why: str) -> web.Response:
        return self.server.render("console_denied.html", status=401, why=why)

    def _page(self, template: str, **context: Any) -> web.Response:
        response = self.server.render(template, lab_id=self.lab_id, recall_href=recall_href,
                                      kind_class=kind_class, **context)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["Cache-Control"] = "no-store"
        return response

    async def index(self, request: web.Request) -> web.StreamResponse:
        if "token" in request.query:
            if not self.server.token_matches(request.query.get("token")):
                return self._denied("That token does not match this lab.")
            response = web.Response(status=303, headers={"Location": "/", "Cache-Control": "no-store"})
            response.set_cookie(CONSOLE_COOKIE, self.server.console_cookie_value(), httponly=True,
                                samesite="Strict", path="/")
            return response
        if not self.server.console_allowed(request):
            return self._denied("")
        timeline = self.server.timeline
        entries = timeline.since(0)[-PAGE_ENTRIES:]
        entries.reverse()  # newest at the top
        return self._page("console.html", counts=lab_counts(self.server.lab), entries=entries,
                          last_seq=timeline.last_seq, recalls=list(reversed(timeline.recalls.values())))

    # -- the recall pages -----------------------------------------------------------------------------
    async def recalls(self, request: web.Request) -> web.StreamResponse:
        if not self.server.console_allowed(request):
            return self._denied("")
        return self._page("console_recalls.html", recalls=list(reversed(self.server.timeline.recalls.values())))

    async def recall(self, request: web.Request) -> web.StreamResponse:
        if not self.server.console_allowed(request):
            return self._denied("")
        timeline = self.server.timeline
        wanted = request.match_info["message_id"]
        rec = timeline.recall(wanted)
        if rec is None:
            raise web.HTTPNotFound(text=f"the lab has seen no recall of <{wanted.strip('<>')}>")
        lab = self.server.lab
        seqs = set(rec.seqs)
        about = [e for e in timeline.since(0)
                 if e["seq"] in seqs or (e.get("message_id") or "").strip() == rec.original]
        reports = [{**where, "text": self._text_of(where)} for where in rec.reports]
        originals = []  # where each recipient's copy of the original is now
        for recipient in sorted(rec.statuses):
            originals.append({"user": recipient, "where": self._locate(recipient, rec.original)})
        return self._page("console_recall.html", rec=rec, entries=about, reports=reports, originals=originals,
                          lab_domains=lab.domains)

    def _text_of(self, where: dict[str, Any]) -> str | None:
        """The plain text of a stored report or notice; None once it is no longer in the store."""
        lab = self.server.lab
        try:
            raw = lab.store(lab.domain_of(where["user"])).fetch_raw(where["user"], where["mailbox"], where["uid"])
        except Exception:  # noqa: BLE001 - expunged, moved, or its domain gone: say so on the page
            return None
        msg = _PARSER.parsebytes(raw)
        body = msg.get_body(preferencelist=("plain",))
        try:
            text = str(body.get_content()) if body is not None else ""
        except (LookupError, ValueError):  # an unknown charset or a broken encoding: show what can be shown
            text = body.get_payload(decode=True).decode("utf-8", "replace") if body is not None else ""
        return text[:REPORT_TEXT_LIMIT]

    def _locate(self, user: str, message_id: str) -> list[str] | None:
        """The folders holding the user's copies of `message_id`; None when the user is not in this lab."""
        lab = self.server.lab
        try:
            found = lab.store(lab.domain_of(user)).find_by_message_id(user, message_id)
        except Exception:  # noqa: BLE001 - another provider's user, or the lab stopping
            return None
        return [f"{loc.mailbox} (UID {loc.uid})" for loc in found]

    # -- the stream -----------------------------------------------------------------------------------
    def _resume_point(self, request: web.Request) -> int:
        """Replay after this seq: Last-Event-ID (a reconnect), else `since` (the page's last entry); 0 when the
        page came from an earlier lab (its seqs mean nothing here)."""
        raw = request.headers.get("Last-Event-ID") or request.query.get("since") or "0"
        try:
            since = int(raw)
        except ValueError:
            raise web.HTTPBadRequest(text=f"Last-Event-ID / since must be a number, not {raw[:40]!r}") from None
        if since < 0:
            raise web.HTTPBadRequest(text="Last-Event-ID / since must not be negative")
        page_lab = request.query.get("lab")
        if (page_lab is not None and page_lab != self.lab_id) or since > self.server.timeline.last_seq:
            return 0
        return since

    async def events(self, request: web.Request) -> web.StreamResponse:
        self._require(request)
        since = self._resume_point(request)
        server = self.server
        if server.streams >= MAX_STREAMS:
            raise web.HTTPTooManyRequests(text=f"this lab already serves {MAX_STREAMS} live streams; close a tab",
                                          headers={"Retry-After": "5"})
        timeline = server.timeline

        def drop() -> None:
            # Between writes the stream's loop sees `dropped` and ends the response; a write that is blocked
            # (the reader stopped reading) would hold it, so the connection is cut under it.
            transport = request.transport
            if stream.writing and transport is not None:
                transport.abort()

        stream = _Stream(QUEUE_LIMIT, drop)
        server.streams += 1
        self.streams.add(stream)
        timeline.subscribe(stream.offer_entry)  # before the replay: nothing falls between the two
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-store",
            "X-Accel-Buffering": "no", "X-Content-Type-Options": "nosniff", "Content-Security-Policy": CSP})
        response.force_close()
        try:
            await response.prepare(request)
            last = since
            first = [f"retry: {RETRY_MS}\n\n", _sse("hello", {"lab": self.lab_id, "last_seq": timeline.last_seq})]
            for entry in timeline.since(since):
                first.append(_sse("entry", entry, entry["seq"]))
                last = entry["seq"]
            first.append(_sse("counts", lab_counts(server.lab)))
            await self._write(stream, response, "".join(first))
            self._ensure_counts_task()
            while not (stream.ended or stream.dropped) and timeline.running:
                items = await stream.next(HEARTBEAT_S)
                if stream.ended or stream.dropped:
                    break
                chunk = []
                for kind, payload in items:
                    if kind == "entry":
                        if payload["seq"] <= last:
                            continue  # already sent in the replay
                        last = payload["seq"]
                        chunk.append(_sse("entry", payload, payload["seq"]))
                    else:
                        chunk.append(_sse(kind, payload))
                await self._write(stream, response, "".join(chunk) or ": heartbeat\n\n")
        except (ConnectionError, TimeoutError):
            pass  # the reader left, or was dropped as stuck: its EventSource reconnects with Last-Event-ID
        finally:
            timeline.unsubscribe(stream.offer_entry)
            self.streams.discard(stream)
            server.streams -= 1
        return response

    @staticmethod
    async def _write(stream: _Stream, response: web.StreamResponse, text: str) -> None:
        stream.writing = True
        try:
            await asyncio.wait_for(response.write(text.encode()), WRITE_TIMEOUT)
        finally:
            stream.writing = False

    # -- counts, shared by every stream -----------------------------------------------------------------
    def _ensure_counts_task(self) -> None:
        if self._counts_task is None or self._counts_task.done():
            self._last_counts = None
            self._counts_task = asyncio.get_running_loop().create_task(self._counts_loop())

    async def _counts_loop(self) -> None:
        timeline = self.server.timeline
        while self.streams and timeline.running:
            changed = await timeline.changed(COUNTS_PERIOD_S)
            if not timeline.running:
                break
            if changed:
                # a rate limit, not a wait for something: the changes of a burst become one "counts" event
                await asyncio.sleep(COUNTS_MIN_INTERVAL_S)
            counts = lab_counts(self.server.lab)
            if counts != self._last_counts:
                self._last_counts = counts
                for stream in tuple(self.streams):
                    stream.offer("counts", counts)
        if not timeline.running:
            self._end_streams()

    def _end_streams(self) -> None:
        for stream in tuple(self.streams):
            stream.end()

    async def _shutdown(self, app: web.Application) -> None:
        self._end_streams()
        task, self._counts_task = self._counts_task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


CONSOLE_KEY: web.AppKey[Console] = web.AppKey("console")


def add_routes(app: web.Application, server: Any) -> None:
    console = Console(server)
    app[CONSOLE_KEY] = console
    console.add_routes(app)
