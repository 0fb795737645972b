"""The webmail over real HTTP and real IMAP: logins, the static pages, opening (\\Seen), sanitising, moving,
the live view's event stream and its bounds. The browser-driven story is in test_browser.py."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from collections.abc import AsyncIterator
from email.message import EmailMessage
from typing import Any

import aiohttp
import pytest

from recall_lab.harness.lab import Lab
from recall_lab.harness.web import mail_imap, mail_render
from recall_lab.harness.web.mail_render import sanitise_html
from recall_lab.harness.web.mail_session import SESSION_COOKIE, SessionStore

BOB = "bob@corp.example"
_n = itertools.count()


def mid() -> str:
    return f"<webmail-{os.getpid()}-{next(_n)}@corp.example>"


def message(message_id: str, subject: str = "Figures", body: str = "First line.\nMore.\n",
            html: str | None = None, attachment: bytes | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"] = "alice@corp.example"
    msg["To"] = BOB
    msg["Subject"] = subject
    msg["Message-ID"] = message_id
    msg.set_content(body)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    if attachment is not None:
        msg.add_attachment(attachment, maintype="application", subtype="pdf", filename="q3.pdf")
    return msg.as_bytes()


@pytest.fixture
async def lab() -> AsyncIterator[Lab]:
    async with Lab(store="memory") as running:
        yield running


@pytest.fixture
async def http(lab: Lab) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=lab.web.url, cookie_jar=aiohttp.CookieJar(unsafe=True),
                                     headers={"Origin": lab.web.url},
                                     timeout=aiohttp.ClientTimeout(total=20)) as session:
        yield session


async def login(http: aiohttp.ClientSession, address: str = BOB, password: str = "bob-password",
                view: str = "static") -> aiohttp.ClientResponse:
    async with http.post("/mail/login", data={"address": address, "password": password, "view": view},
                         allow_redirects=False) as response:
        await response.read()
        return response


async def get(http: aiohttp.ClientSession, path: str, **params: Any) -> tuple[int, str, Any]:
    async with http.get(path, params=params, allow_redirects=False) as response:
        return response.status, await response.text(), response.headers


def deliver(lab: Lab, raw: bytes, user: str = BOB) -> int:
    return lab.store("corp.example").deliver(user, raw).uid


# --- logging in -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("address", "password", "status", "text"), [
    ("bob", "bob-password", 400, "That is not an email address"),
    ("bob@@corp.example", "bob-password", 400, "That is not an email address"),
    (BOB, "", 400, "Enter your password"),
    (BOB, "wrong", 401, "Wrong address or password"),
    ("nobody@corp.example", "bob-password", 401, "Wrong address or password"),
    ("bob@elsewhere.example", "bob-password", 401, "Wrong address or password"),
])
async def test_login_errors_show_the_form_again(http, address, password, status, text):
    async with http.post("/mail/login", data={"address": address, "password": password},
                         allow_redirects=False) as response:
        page = await response.text()
        assert response.status == status
        assert SESSION_COOKIE not in response.cookies
    assert text in page and page.count('role="alert"') == 1
    assert 'action="/mail/login"' in page and "Traceback" not in page


async def test_login_sets_a_strict_http_only_cookie_and_logout_ends_it(http, lab):
    response = await login(http)
    assert response.status == 303 and response.headers["Location"] == "/mail/?folder=INBOX&view=static"
    cookie = response.cookies[SESSION_COOKIE]
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/mail/"
    assert "bob-password" not in cookie.value
    status, page, _ = await get(http, "/mail/")
    assert status == 200 and BOB in page and 'id="messages"' in page
    async with http.post("/mail/logout", allow_redirects=False) as response:
        assert response.status == 303
    status, page, _ = await get(http, "/mail/")
    assert status == 200 and 'action="/mail/login"' in page and 'id="messages"' not in page


async def test_a_form_from_another_site_is_refused(http, lab):
    async with http.post("/mail/login", data={"address": BOB, "password": "bob-password"},
                         headers={"Origin": "http://evil.example"}, allow_redirects=False) as response:
        assert response.status == 403


async def test_pages_need_a_login(http, lab):
    uid = deliver(lab, message(mid()))
    status, page, _ = await get(http, "/mail/message", folder="INBOX", uid=uid)
    assert status == 401 and 'action="/mail/login"' in page
    async with http.get("/mail/events", params={"folder": "INBOX"}) as response:
        assert response.status == 401
    assert "\\Seen" not in lab.store("corp.example").get(BOB, "INBOX", uid).flags


# --- the static view ----------------------------------------------------------------------------------------

async def test_static_list_newest_first_with_data_attributes_and_no_script(http, lab):
    first, second = mid(), mid()
    deliver(lab, message(first, subject="Older"))
    deliver(lab, message(second, subject="Newer <script>alert(1)</script>", body="\n  Hello   there\nx\n"))
    await login(http)
    status, page, headers = await get(http, "/mail/", folder="INBOX")
    assert status == 200
    assert "script-src 'none'" in headers["Content-Security-Policy"] and "<script" not in page
    assert headers["Cache-Control"] == "no-store"
    newer = page.index(f'data-message-id="{second.replace("<", "&lt;").replace(">", "&gt;")}"')
    older = page.index(f'data-message-id="{first.replace("<", "&lt;").replace(">", "&gt;")}"')
    assert newer < older
    assert "Newer &lt;script&gt;alert(1)&lt;/script&gt;" in page and "Hello there" in page
    assert page.count('class="msg unread"') == 2
    assert '<span class="unread-count" title="unread">2</span>' in page  # INBOX's unread count


async def test_opening_is_a_fetch_body_that_sets_seen(http, lab):
    store = lab.store("corp.example")
    m = mid()
    uid = deliver(lab, message(m, body="a < b & c\n"))
    await login(http)
    await get(http, "/mail/")
    assert "\\Seen" not in store.get(BOB, "INBOX", uid).flags  # listing peeks
    status, page, _ = await get(http, "/mail/message", folder="INBOX", uid=uid, view="static")
    assert status == 200 and '<pre class="body text">a &lt; b &amp; c' in page
    assert "\\Seen" in store.get(BOB, "INBOX", uid).flags
    status, page, _ = await get(http, "/mail/", folder="INBOX")
    assert 'class="msg read"' in page


async def test_a_recalled_message_stays_on_a_loaded_page_and_its_link_then_says_item_not_found(http, lab):
    m = mid()
    uid = deliver(lab, message(m, subject="Q3 draft"))
    await login(http)
    _, listed, _ = await get(http, "/mail/")
    _, opened, _ = await get(http, "/mail/message", folder="INBOX", uid=uid)
    lab.store("corp.example").expunge(BOB, "INBOX", [uid])
    assert "Q3 draft" in listed and "Q3 draft" in opened  # what the browser holds does not change
    _, reloaded, _ = await get(http, "/mail/")
    assert "Q3 draft" not in reloaded and f'data-uid="{uid}"' not in reloaded
    status, page, _ = await get(http, "/mail/message", folder="INBOX", uid=uid)
    assert status == 404 and "Item not found" in page
    status, page, _ = await get(http, "/mail/message", folder="INBOX", message_id=m)
    assert status == 404 and "Item not found" in page


async def test_html_bodies_are_sanitised_and_attachments_listed(http, lab):
    html = ('<p onclick="steal()">Hi <b>Bob</b></p><script>alert(1)</script>'
            '<img src="https://tracker.example/p.gif" onerror="alert(2)">'
            '<img src="data:image/png;base64,iVBORw0KGgo=" alt="inline"><img src="cid:logo@x">'
            '<a href="https://example.com/x">link</a><a href="javascript:alert(3)">bad</a>'
            '<style>body{display:none}</style>')
    uid = deliver(lab, message(mid(), html=html, attachment=b"%PDF-1.4 tiny"))
    await login(http)
    status, page, _ = await get(http, "/mail/message", folder="INBOX", uid=uid)
    assert status == 200
    body = page[page.index('<div class="body html">'):page.index("</article>")]
    for bad in ("<script", "alert(1)", "onerror", "onclick", "tracker.example", "javascript:", "<style",
                "display:none"):
        assert bad not in body, bad
    assert "<b>Bob</b>" in body and 'src="data:image/png;base64,iVBORw0KGgo="' in body and 'src="cid:logo@x"' in body
    assert 'href="https://example.com/x"' in body and 'rel="noopener noreferrer"' in body
    assert '<span class="name">q3.pdf</span>' in page


def test_sanitiser_rules():
    assert sanitise_html('<img src="http://x/y.png">') == "<img>"
    assert sanitise_html('<img src="/mail/logout">') == "<img>"
    assert sanitise_html('<a href="/relative">x</a>') == '<a rel="noopener noreferrer">x</a>'
    assert "iframe" not in sanitise_html('<iframe src="https://x"></iframe>')


async def test_long_bodies_are_cut_and_the_page_says_so(http, lab, monkeypatch):
    monkeypatch.setattr(mail_render, "MAX_BODY_CHARS", 50)
    uid = deliver(lab, message(mid(), body="x" * 80 + "TAIL\n"))
    await login(http)
    _, page, _ = await get(http, "/mail/message", folder="INBOX", uid=uid)
    assert "TAIL" not in page and "Only the first" in page


async def test_the_list_is_paged(http, lab, monkeypatch):
    monkeypatch.setattr(mail_imap, "PAGE_SIZE", 2)
    uids = [deliver(lab, message(mid(), subject=f"n{i}")) for i in range(5)]
    await login(http)
    _, first, _ = await get(http, "/mail/", folder="INBOX")
    _, last, _ = await get(http, "/mail/", folder="INBOX", page=3)
    assert first.count('class="msg ') == 2 and f'data-uid="{uids[4]}"' in first and "page 1 of 3" in first
    assert last.count('class="msg ') == 1 and f'data-uid="{uids[0]}"' in last
    status, _, _ = await get(http, "/mail/", folder="INBOX", page="x")
    assert status == 400


@pytest.mark.parametrize("query", [{"view": "bold"}, {"folder": "IN\x01BOX"}, {"folder": "x" * 201}])
async def test_bad_parameters_are_400(http, lab, query):
    await login(http)
    status, page, _ = await get(http, "/mail/", **query)
    assert status == 400 and "Traceback" not in page


async def test_an_unknown_folder_is_404(http, lab):
    await login(http)
    status, _, _ = await get(http, "/mail/", folder="Nowhere")
    assert status == 404


async def test_move_form(http, lab):
    store = lab.store("corp.example")
    store.create_mailbox(BOB, "Later")
    m = mid()
    uid = deliver(lab, message(m))
    await login(http)
    async with http.post("/mail/move", data={"folder": "INBOX", "uid": str(uid), "target": "Later"},
                         allow_redirects=False) as response:
        assert response.status == 303 and response.headers["Location"] == "/mail/?folder=INBOX&view=static"
    assert [loc.mailbox for loc in store.find_by_message_id(BOB, m)] == ["Later"]
    async with http.post("/mail/move", data={"folder": "INBOX", "uid": str(uid), "target": "Later"}) as response:
        assert response.status == 404
    [later] = store.messages(BOB, "Later")
    async with http.post("/mail/move", data={"folder": "Later", "uid": str(later.uid), "target": "Nope"}) as response:
        assert response.status == 400 and "cannot move" in await response.text()


# --- the live view ------------------------------------------------------------------------------------------

class Events:
    """A reader of one server-sent event stream."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def next(self, timeout: float = 5.0) -> tuple[str, dict[str, Any]]:
        async def read() -> tuple[str, dict[str, Any]]:
            event, data = "", ""
            while True:
                line = (await self.response.content.readline()).decode()
                if not line:
                    raise EOFError("the stream ended")
                line = line.rstrip("\n")
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    data = line[6:]
                elif line == "" and event:
                    return event, json.loads(data)

        return await asyncio.wait_for(read(), timeout)


async def test_live_pages_load_the_script_under_a_self_only_policy(http, lab):
    await login(http, view="live")
    status, page, headers = await get(http, "/mail/", folder="INBOX", view="live")
    assert status == 200 and '<script src="/static/mail-live.js" defer></script>' in page
    csp = headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp
    async with http.get("/static/mail-live.js") as response:
        assert response.status == 200 and "EventSource" in await response.text()


async def test_events_report_new_mail_flags_and_removals_with_uid_and_message_id(http, lab):
    store = lab.store("corp.example")
    old = mid()
    old_uid = deliver(lab, message(old))
    await login(http, view="live")
    async with http.get("/mail/events", params={"folder": "INBOX"}) as response:
        assert response.status == 200 and response.headers["Content-Type"].startswith("text/event-stream")
        events = Events(response)
        assert await events.next() == ("ready", {"uids": str(old_uid)})
        new = mid()
        new_uid = deliver(lab, message(new))
        assert await events.next() == ("new", {"uids": [new_uid], "message_ids": [new]})
        store.store_flags(BOB, "INBOX", [new_uid], ["\\Seen"], "add")
        kind, data = await events.next()
        assert kind == "flags" and data["uid"] == new_uid and data["seen"] and data["message_id"] == new
        store.expunge(BOB, "INBOX", [old_uid])
        assert await events.next() == ("vanished", {"uids": [old_uid], "message_ids": [old]})


async def test_streams_are_bounded_per_login(http, lab, monkeypatch):
    from recall_lab.harness.web import server

    monkeypatch.setattr(server, "MAX_STREAMS_PER_LOGIN", 1)
    await login(http, view="live")
    async with http.get("/mail/events", params={"folder": "INBOX"}) as first:
        assert (await Events(first).next())[0] == "ready"
        async with http.get("/mail/events", params={"folder": "INBOX"}) as second:
            assert second.status == 429 and second.headers["Retry-After"]
    assert lab.web.streams in (0, 1)  # the first is being torn down as the client closed it


async def test_events_for_an_unknown_folder_are_404(http, lab):
    await login(http, view="live")
    async with http.get("/mail/events", params={"folder": "Nowhere"}) as response:
        assert response.status == 404
    assert lab.web.streams == 0


# --- sessions -----------------------------------------------------------------------------------------------

def test_sessions_are_bounded_in_number_and_idle_time():
    now = [0.0]
    store = SessionStore(max_sessions=2, idle_lifetime=10, clock=lambda: now[0])
    a = store.create(BOB, "pw")
    now[0] = 1
    b = store.create(BOB, "pw")
    now[0] = 2
    assert store.get(a.id) is a  # used: now the most recent
    c = store.create(BOB, "pw")
    assert store.get(b.id) is None and store.get(a.id) is a and store.get(c.id) is c
    now[0] = 13
    assert store.get(a.id) is None and len(store) == 0
    assert a.id != c.id and len(a.id) >= 40
