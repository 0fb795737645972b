"""The lab's HTTP API under /api/v1/: read, search, wait for and delete a lab's mail; users, recalls, events.

Why an API next to IMAP: a test suite in any language wants "the mail bob got" and "wait until it arrives"
without speaking IMAP, as Mailpit's and GreenMail's users do. It is the lab administrator's view: it reads the
stores through their public API (`lab.store(domain)`), needs no user's password, and never marks a message
read. Every endpoint needs the lab's token (`Authorization: Bearer`); every error is JSON
({"error", "message"}, made by the server's middleware from the HTTPException raised here).

The shapes are documented in docs/web-api.md and described by `openapi.py` (served at /api/v1/openapi.json); a
test keeps the routes added here and the description's paths the same set.

Bounds: lists are at most 1000 items; searching parses in small batches and yields to the loop between them
(messages.py); a long poll waits at most 300 s, counts against the server's stream cap, and ends when the lab
stops.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

from aiohttp import web

from recall_lab.fake_servers.recall.format import RecallFormatError, parse_notice, parse_report
from recall_lab.fake_servers.store.base import MailStore, NoSuchMailbox, StoreError
from recall_lab.harness.web import messages as mail
from recall_lab.harness.web.openapi import describe
from recall_lab.harness.web.server import MAX_STREAMS, SERVER_KEY

PREFIX = "/api/v1"
#: Largest `limit` of any list.
MAX_LIMIT = 1000
#: Longest long poll, seconds.
MAX_WAIT = 300.0
#: Longest Message-ID accepted in a path (RFC 5322's line limit).
MAX_MESSAGE_ID = 998


def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, dumps=lambda o: json.dumps(o, default=str))


def _server(request: web.Request) -> Any:
    server = request.app[SERVER_KEY]
    server.check_bearer(request)
    return server


# --- parameters ----------------------------------------------------------------------------------------------


def _int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    text = request.query.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name} must be an integer from {lo} to {hi}, not {text!r}") from None
    if not lo <= value <= hi:
        raise web.HTTPBadRequest(text=f"{name} must be an integer from {lo} to {hi}, not {value}")
    return value


def _user(server: Any, request: web.Request, *, star: bool = False) -> tuple[str, str]:
    """(user, domain) from ?user=; 400 when missing, 404 when not a user of the lab. ("*", "") when allowed."""
    text = request.query.get("user", "").strip().lower()
    if not text:
        raise web.HTTPBadRequest(text="the user parameter is required (?user=bob@corp.example)"
                                 + (", or * for every user" if star else ""))
    if star and text == "*":
        return "*", ""
    lab = server.lab
    try:
        domain = lab.domain_of(text)
    except KeyError:
        raise web.HTTPNotFound(text=f"{text} is not a user of this lab") from None
    if text not in lab.users(domain):
        raise web.HTTPNotFound(text=f"{text} is not a user of this lab")
    return text, domain


def _folders(store: MailStore, user: str, request: web.Request, default: str | None = "INBOX") -> list[str] | None:
    """The folders ?folder= names: one (404 when it does not exist), every one for "*", or None when absent and
    there is no default."""
    name = request.query.get("folder", "")
    if not name:
        if default is None:
            return None
        name = default
    if name == "*":
        return [m.name for m in store.list_mailboxes(user)]
    try:
        return [store.mailbox(user, name).name]
    except NoSuchMailbox:
        raise web.HTTPNotFound(text=f"{user} has no folder {name!r}") from None


def _query(request: web.Request) -> mail.Query:
    try:
        return mail.parse_query(request.query.get("q", ""))
    except mail.QueryError as exc:
        raise web.HTTPBadRequest(text=f"bad query: {exc}") from None


def _message_id(request: web.Request) -> str:
    text = request.match_info["message_id"].strip()
    core = text.strip("<>").strip()
    if not core or len(text) > MAX_MESSAGE_ID or any(c.isspace() for c in core):
        raise web.HTTPBadRequest(text=f"not a Message-ID: {text[:100]!r}")
    return f"<{core}>"


def _locations(store: MailStore, user: str, mid: str, folders: list[str] | None) -> list[tuple[str, int]]:
    found = [(loc.mailbox, loc.uid) for loc in store.find_by_message_id(user, mid)]
    if folders is not None:
        found = [f for f in found if f[0] in folders]
    order = {m.name: i for i, m in enumerate(store.list_mailboxes(user))}
    found.sort(key=lambda f: (order.get(f[0], len(order)), f[1]))
    if not found:
        where = f" in {folders[0]}" if folders else ""
        raise web.HTTPNotFound(text=f"{user} has no message {mid}{where}")
    return found


# --- index, users ------------------------------------------------------------------------------------------


async def index(request: web.Request) -> web.Response:
    server = _server(request)
    lab = server.lab
    domains = [{"name": d, "role": lab.role(d), "users": sorted(lab.users(d))} for d in lab.domains]
    links = {"openapi": f"{PREFIX}/openapi.json", "users": f"{PREFIX}/users", "messages": f"{PREFIX}/messages",
             "message": f"{PREFIX}/messages/{{message_id}}", "raw": f"{PREFIX}/messages/{{message_id}}/raw",
             "wait": f"{PREFIX}/wait", "recalls": f"{PREFIX}/recalls", "recall": f"{PREFIX}/recalls/{{message_id}}",
             "events": f"{PREFIX}/events"}
    return _json({"api": "v1", "domains": domains, "links": links})


async def openapi(request: web.Request) -> web.Response:
    server = _server(request)
    return _json(describe(server.url))


def _user_json(lab: Any, user: str, domain: str) -> dict[str, Any]:
    try:
        boxes = lab.store(domain).list_mailboxes(user)
    except StoreError:
        boxes = []
    return {"address": user, "domain": domain, "role": lab.role(domain),
            "folders": {m.name: {"messages": m.exists, "unseen": m.unseen} for m in boxes}}


async def list_users(request: web.Request) -> web.Response:
    server = _server(request)
    lab = server.lab
    wanted = request.query.get("domain", "").strip().lower()
    if wanted and wanted not in lab.domains:
        raise web.HTTPNotFound(text=f"no domain {wanted!r} in this lab (has: {', '.join(lab.domains)})")
    users = [_user_json(lab, u, d) for d in lab.domains if not wanted or d == wanted for u in sorted(lab.users(d))]
    return _json({"users": users})


async def add_user(request: web.Request) -> web.Response:
    server = _server(request)
    lab = server.lab
    try:
        body = json.loads(await request.read())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise web.HTTPBadRequest(text=f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text='the body must be a JSON object: {"address": ..., "password": ...}')
    address, password = body.get("address"), body.get("password")
    for name, value in (("address", address), ("password", password)):
        if not isinstance(value, str) or not value:
            raise web.HTTPBadRequest(text=f"{name} must be a non-empty string")
    assert isinstance(address, str) and isinstance(password, str)
    if "@" not in address:
        raise web.HTTPBadRequest(text=f"not an address: {address[:100]!r}")
    try:
        domain = lab.domain_of(address)
    except KeyError:
        raise web.HTTPNotFound(text=f"no domain {address.rpartition('@')[2][:100]!r} in this lab "
                                    f"(has: {', '.join(lab.domains)})") from None
    if address.strip().lower() in lab.users(domain):
        raise web.HTTPConflict(text=f"{address.strip().lower()} exists already")
    try:
        user = lab.add_user(address, password)
    except ValueError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    except KeyError as exc:
        raise web.HTTPNotFound(text=str(exc.args[0] if exc.args else exc)) from None
    return _json(_user_json(lab, user, domain), status=201)


# --- messages ----------------------------------------------------------------------------------------------


async def list_messages(request: web.Request) -> web.Response:
    server = _server(request)
    user, domain = _user(server, request)
    store = server.lab.store(domain)
    folders = _folders(store, user, request)
    assert folders is not None
    query = _query(request)
    limit = _int(request, "limit", 50, 1, MAX_LIMIT)
    offset = _int(request, "offset", 0, 0, 10**9)
    result = await mail.search(store, user, folders, query, offset=offset, limit=limit)
    return _json({"user": user, "folder": request.query.get("folder") or "INBOX", "q": query.text,
                  "offset": offset, "limit": limit, "count": len(result.messages), "more": result.more,
                  "messages": result.messages})


def _message_request(request: web.Request) -> tuple[str, str, MailStore, list[tuple[str, int]]]:
    """What the three routes of one message share: the Message-ID in the path, the user, their store and where
    the message is (in `?folder=`, or every folder)."""
    server = _server(request)
    mid = _message_id(request)
    user, domain = _user(server, request)
    store = server.lab.store(domain)
    folders = _folders(store, user, request, default=None)
    return mid, user, store, _locations(store, user, mid, folders)


async def get_message(request: web.Request) -> web.Response:
    mid, user, store, locations = _message_request(request)
    for folder, uid in locations:
        try:
            record = store.get(user, folder, uid)
            raw = store.fetch_raw(user, folder, uid)
        except StoreError:
            continue
        if record.size > mail.BATCH_BYTES:  # a large message is parsed off the loop
            msg = await asyncio.to_thread(mail.read_message, raw, size=record.size)
        else:
            msg = mail.read_message(raw, size=record.size)
        body = mail.detail(record, folder, msg)
        body["locations"] = [{"folder": f, "uid": u} for f, u in locations]
        return _json(body)
    raise web.HTTPNotFound(text=f"{user} has no message {mid}")


async def get_raw(request: web.Request) -> web.Response:
    mid, user, store, locations = _message_request(request)
    for folder, uid in locations:
        try:
            raw = store.fetch_raw(user, folder, uid)
        except StoreError:
            continue
        return web.Response(body=raw, content_type="message/rfc822")
    raise web.HTTPNotFound(text=f"{user} has no message {mid}")


async def delete_message(request: web.Request) -> web.Response:
    mid, user, store, locations = _message_request(request)
    by_folder: dict[str, list[int]] = {}
    for folder, uid in locations:
        by_folder.setdefault(folder, []).append(uid)
    deleted = []
    for folder, uids in by_folder.items():
        try:
            gone = store.expunge(user, folder, uids)
        except StoreError:
            continue
        deleted.extend({"folder": folder, "uid": uid} for uid in gone)
    return _json({"user": user, "message_id": mid, "count": len(deleted), "deleted": deleted})


async def purge(request: web.Request) -> web.Response:
    server = _server(request)
    lab = server.lab
    user, domain = _user(server, request, star=True)
    name = request.query.get("folder", "") or "INBOX"
    if user == "*":
        targets = [(u, d) for d in lab.domains for u in sorted(lab.users(d))]
    else:
        targets = [(user, domain)]
    counts: dict[str, dict[str, int]] = {}
    total = 0
    for who, dom in targets:
        store = lab.store(dom)
        try:
            if name == "*":
                folders = [m.name for m in store.list_mailboxes(who)]
            else:
                folders = [store.mailbox(who, name).name]
        except NoSuchMailbox:
            if user != "*":
                raise web.HTTPNotFound(text=f"{who} has no folder {name!r}") from None
            continue
        except StoreError:
            continue
        mine = counts.setdefault(who, {})
        for folder in folders:
            try:
                uids = [r.uid for r in store.messages(who, folder)]
                gone = store.expunge(who, folder, uids) if uids else []
            except StoreError:
                continue
            mine[folder] = len(gone)
            total += len(gone)
        await asyncio.sleep(0)
    return _json({"deleted": total, "users": counts})


# --- the long poll -----------------------------------------------------------------------------------------


def _timeout(request: web.Request) -> float:
    text = request.query.get("timeout", "")
    if not text:
        return 10.0
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not 0 <= value <= MAX_WAIT:
        raise web.HTTPBadRequest(text=f"timeout must be a number of seconds from 0 to {MAX_WAIT:g}, not {text!r}")
    return value


async def wait(request: web.Request) -> web.Response:
    """The first message matching q, as soon as it is stored; 408 after `timeout` seconds."""
    server = _server(request)
    user, domain = _user(server, request)
    store = server.lab.store(domain)
    _folders(store, user, request)  # 404 now for a folder that does not exist
    query = _query(request)
    timeout = _timeout(request)
    if server.streams >= MAX_STREAMS:
        raise web.HTTPServiceUnavailable(text=f"{MAX_STREAMS} streams and waits are open already; retry later",
                                         headers={"Retry-After": "1"})
    timeline = server.timeline
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    known: dict[tuple[str, int, int], bool] = {}
    server.streams += 1
    try:
        while True:
            # the waiter takes hold of the timeline's current change event before the mailbox is read, so a
            # message stored while it is read (the search yields to the loop) wakes the next round
            waiter = asyncio.ensure_future(timeline.changed(max(0.0, deadline - loop.time())))
            try:
                await asyncio.sleep(0)
                folders = _folders(store, user, request)  # "*": the folders there are now
                assert folders is not None
                found = await mail.first_match(store, user, folders, query, known)
            except BaseException:
                waiter.cancel()
                raise
            if found is not None:
                waiter.cancel()
                return _json(found)
            if not timeline.running:
                waiter.cancel()
                break
            woke = await waiter
            if not timeline.running:
                break
            if not woke and loop.time() >= deadline:
                raise web.HTTPRequestTimeout(text=f"no message for {user} matched {query.text!r} within "
                                                  f"{timeout:g} s")
    finally:
        server.streams -= 1
    raise web.HTTPServiceUnavailable(text="the lab is stopping")


# --- recalls and events ------------------------------------------------------------------------------------


async def list_recalls(request: web.Request) -> web.Response:
    server = _server(request)
    records = sorted(server.timeline.recalls.values(), key=lambda r: r.first_seq, reverse=True)
    return _json({"recalls": [r.as_dict() for r in records]})


def _parsed_report(lab: Any, where: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": where.get("kind"), "user": where.get("user"), "mailbox": where.get("mailbox"),
                           "uid": where.get("uid"), "message_id": where.get("message_id"), "found": False,
                           "content": None, "error": None}
    try:
        user = str(where["user"])
        raw = lab.store(lab.domain_of(user)).fetch_raw(user, str(where["mailbox"]), int(where["uid"]))
    except (KeyError, StoreError, ValueError):
        out["error"] = "the message is no longer in the store"
        return out
    out["found"] = True
    try:
        msg = mail.PARSER.parsebytes(raw)
        if where.get("kind") == "report":
            report = parse_report(msg)
            out["content"] = report.to_json() if report is not None else None
        else:
            notice = parse_notice(msg)
            if notice is not None:
                out["content"] = {"original_message_id": notice.original_message_id,
                                  "original_subject": notice.original_subject, "recipient": notice.recipient,
                                  "status": notice.status.value, "detail": notice.detail}
        if out["content"] is None:
            out["error"] = "the stored message is no recall report or notice"
    except RecallFormatError as exc:
        out["error"] = str(exc)
    except Exception as exc:  # noqa: BLE001 - a malformed stored message is reported, not raised
        out["error"] = f"the stored message does not parse: {type(exc).__name__}"
    return out


async def get_recall(request: web.Request) -> web.Response:
    server = _server(request)
    mid = _message_id(request)
    try:
        record = server.timeline.recall(mid)
    except RecallFormatError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    if record is None:
        raise web.HTTPNotFound(text=f"the lab has seen no recall of {mid}")
    body = record.as_dict()
    body["parsed_reports"] = [_parsed_report(server.lab, where) for where in record.reports]
    return _json(body)


async def events(request: web.Request) -> web.Response:
    server = _server(request)
    since = _int(request, "since", 0, 0, 2**62)
    limit = _int(request, "limit", 500, 1, MAX_LIMIT)
    entries = server.timeline.since(since, limit + 1)
    return _json({"events": entries[:limit], "last_seq": server.timeline.last_seq, "more": len(entries) > limit})


#: A Message-ID in a path: one segment, any characters (aiohttp's default refuses { and }); a "/" in the ID
#: comes URL-encoded (%2F) and is decoded after matching.
MID = "{message_id:[^/]+}"

#: Every route of the API: (method, path, handler). openapi.py describes each.
ROUTES = [
    ("GET", f"{PREFIX}/", index),
    ("GET", f"{PREFIX}/openapi.json", openapi),
    ("GET", f"{PREFIX}/users", list_users),
    ("POST", f"{PREFIX}/users", add_user),
    ("GET", f"{PREFIX}/messages", list_messages),
    ("DELETE", f"{PREFIX}/messages", purge),
    ("GET", f"{PREFIX}/messages/{MID}", get_message),
    ("DELETE", f"{PREFIX}/messages/{MID}", delete_message),
    ("GET", f"{PREFIX}/messages/{MID}/raw", get_raw),
    ("GET", f"{PREFIX}/wait", wait),
    ("GET", f"{PREFIX}/recalls", list_recalls),
    ("GET", f"{PREFIX}/recalls/{MID}", get_recall),
    ("GET", f"{PREFIX}/events", events),
]


def add_routes(app: web.Application, server: Any) -> None:
    for method, path, handler in ROUTES:
        if method == "GET":
            app.router.add_get(path, handler, allow_head=False)
        else:
            app.router.add_route(method, path, handler)
