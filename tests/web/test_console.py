"""The lab console over its real socket: the token/cookie door, the page's counts, the event stream (entries,
counts, replay, bounds) and the recall pages after a real recall.

Each test starts a lab with its web server on ephemeral ports, sends mail over SMTP submission and reads the
console with aiohttp, as a browser would. The stream is read with a small SSE reader of the test's own (the wire
format is a few lines), so the test does not trust the code it checks.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

import aiohttp
import aiosmtplib
import pytest

from recall_lab.harness.lab import Lab
from recall_lab.harness.recall_agent import RecallAgent
from recall_lab.harness.web import console as console_module
from recall_lab.harness.web.console import CONSOLE_KEY
from recall_lab.harness.web.server import CONSOLE_COOKIE, MAX_STREAMS

TIMEOUT = 10.0
ALICE, BOB, DAVE = "alice@corp.example", "bob@corp.example", "dave@mail.example"


# --- helpers -----------------------------------------------------------------------------------------------


@asynccontextmanager
async def web_lab() -> AsyncIterator[tuple[Lab, aiohttp.ClientSession]]:
    """A running lab (default config, web server on) and an HTTP session that does not follow redirects."""
    async with Lab(web=True) as lab, aiohttp.ClientSession(base_url=lab.web.url) as http:
        yield lab, http


def cookie(lab: Lab) -> dict[str, str]:
    """The console's cookie, as the browser sends it after `/?token=...`."""
    return {"Cookie": f"{CONSOLE_COOKIE}={lab.web.console_cookie_value()}"}


async def send(lab: Lab, sender: str, to: list[str], subject: str = "Quarterly numbers",
               body: str = "The numbers, before they are final.\n") -> str:
    """Submit over SMTP submission (AUTH) and wait until every delivery settled; the Message-ID."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["Subject"] = subject
    msg["Message-ID"] = mid = make_msgid(domain=sender.partition("@")[2])
    msg.set_content(body)
    ep = lab.submission(sender.partition("@")[2])
    await aiosmtplib.send(msg, hostname=ep.host, port=ep.port, username=sender, password=lab.password(sender),
                          start_tls=False, timeout=TIMEOUT, local_hostname="localhost")
    await lab.wait_idle()
    return mid


@dataclass
class Event:
    event: str
    data: Any
    id: str | None


class EventReader:
    """Reads server-sent events from an open response; counts `:` comment lines (heartbeats)."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.comments = 0

    async def next(self) -> Event | None:
        """The next event, or None when the stream ends."""
        fields: dict[str, str] = {}
        while True:
            line = await self.response.content.readline()
            if not line:
                return None
            text = line.decode().rstrip("\r\n")
            if not text:
                if "event" in fields or "data" in fields:
                    data = fields.get("data", "")
                    return Event(fields.get("event", "message"), json.loads(data) if data else None,
                                 fields.get("id"))
                continue
            if text.startswith(":"):
                self.comments += 1
                continue
            name, _, value = text.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value

    async def until(self, wanted: Callable[[Event], bool], timeout: float = TIMEOUT) -> list[Event]:
        """Every event up to and including the first one `wanted` accepts; fails after `timeout` seconds."""
        seen: list[Event] = []

        async def run() -> list[Event]:
            while True:
                ev = await self.next()
                if ev is None:
                    raise AssertionError(f"the stream ended before the event wanted; saw {seen}")
                seen.append(ev)
                if wanted(ev):
                    return seen

        return await asyncio.wait_for(run(), timeout)

    async def end(self, timeout: float = TIMEOUT) -> list[Event]:
        """Every event until the stream ends; fails if it has not ended after `timeout` seconds."""
        seen: list[Event] = []

        async def run() -> list[Event]:
            while (ev := await self.next()) is not None:
                seen.append(ev)
            return seen

        return await asyncio.wait_for(run(), timeout)


def stored_in(user: str, mailbox: str = "INBOX") -> Callable[[Event], bool]:
    return lambda ev: ev.event == "entry" and ev.data["kind"] == "stored" and ev.data["user"] == user \
        and ev.data["mailbox"] == mailbox


def folder(counts: dict, user: str, name: str = "INBOX") -> dict:
    for d in counts["domains"]:
        for u in d["users"]:
            if u["user"] == user:
                return next(f for f in u["folders"] if f["name"] == name)
    raise AssertionError(f"no {user} in {counts}")


# --- the door ----------------------------------------------------------------------------------------------


async def test_without_the_cookie_every_console_url_answers_401_with_the_hint() -> None:
    async with web_lab() as (_lab, http):
        for path in ("/", "/console/recalls", "/console/recalls/x@corp.example", "/console/events"):
            async with http.get(path) as resp:
                assert resp.status == 401, path
                text = await resp.text()
                assert "text/html" in resp.headers["Content-Type"]
                assert "Traceback" not in text
        async with http.get("/") as resp:
            assert "Open the URL the lab printed" in await resp.text()
        async with http.get("/", headers={"Cookie": f"{CONSOLE_COOKIE}=forged"}) as resp:
            assert resp.status == 401


async def test_a_wrong_token_is_401_and_sets_no_cookie() -> None:
    async with web_lab() as (lab, http):
        async with http.get("/", params={"token": lab.web.token + "x"}, allow_redirects=False) as resp:
            assert resp.status == 401
            assert "Set-Cookie" not in resp.headers
            assert "does not match this lab" in await resp.text()
        async with http.get("/", params={"token": ""}, allow_redirects=False) as resp:
            assert resp.status == 401


async def test_the_right_token_sets_the_cookie_and_redirects_without_the_token() -> None:
    async with web_lab() as (lab, http):
        async with http.get(lab.web.console_url, allow_redirects=False) as resp:
            assert resp.status == 303
            assert resp.headers["Location"] == "/"
            set_cookie = resp.headers["Set-Cookie"]
        assert set_cookie.startswith(f"{CONSOLE_COOKIE}={lab.web.console_cookie_value()};")
        assert lab.web.token not in set_cookie  # the cookie is derived from the token, not the token
        attributes = {part.strip().lower() for part in set_cookie.split(";")[1:]}
        assert {"httponly", "samesite=strict", "path=/"} <= attributes
        async with http.get("/", headers=cookie(lab)) as resp:
            assert resp.status == 200
            page = await resp.text()
            csp = resp.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "connect-src 'self'" in csp and "unsafe-inline" not in csp
        assert '<script src="/static/console.js"' in page
        assert "corp.example" in page and "mail.example" in page and "organisation" in page


async def test_the_console_script_and_style_are_served() -> None:
    async with web_lab() as (_lab, http):
        for path, kind in (("/static/console.js", "javascript"), ("/static/console.css", "css")):
            async with http.get(path) as resp:
                assert resp.status == 200 and kind in resp.headers["Content-Type"], path
        async with http.get("/static/console.js") as resp:
            script = await resp.text()
        assert "innerHTML" not in script  # everything the script writes goes through textContent


# --- counts and the page -----------------------------------------------------------------------------------


async def test_the_page_shows_folders_unread_counts_and_the_relay_queue() -> None:
    async with web_lab() as (lab, http):
        lab.pause_relay("corp.example")
        await send(lab, ALICE, [BOB, DAVE], subject="Budget draft")
        async with http.get("/", headers=cookie(lab)) as resp:
            page = await resp.text()
        corp = page[page.index('data-domain="corp.example"'):page.index('data-domain="mail.example"')]
        bob_row = corp[corp.index(BOB):].split("</tr>")[0]
        assert re.search(r'data-folder="INBOX">INBOX <b class="exists">1</b> <i class="unseen">\(1\)</i>', bob_row)
        alice_row = corp[corp.index(ALICE):].split("</tr>")[0]
        assert re.search(r'data-folder="Sent">Sent <b class="exists">1</b>', alice_row)
        assert re.search(r'relay queue: <b class="relay-pending">1</b>', corp)  # dave's copy waits
        assert "Budget draft" in page  # the timeline names the message
        lab.resume_relay("corp.example")


async def test_the_page_without_javascript_lists_the_timeline_newest_first() -> None:
    async with web_lab() as (lab, http):
        await send(lab, ALICE, [BOB], subject="first")
        await send(lab, ALICE, [BOB], subject="second")
        async with http.get("/", headers=cookie(lab)) as resp:
            page = await resp.text()
        seqs = [int(s) for s in re.findall(r'<li class="entry [^"]*" data-seq="(\d+)"', page)]
        assert seqs and seqs == sorted(seqs, reverse=True)
        assert page.index("&#34;second&#34;") < page.index("&#34;first&#34;")
        assert 'class="entry kind-accepted"' in page and 'class="entry kind-stored"' in page


async def test_a_hostile_subject_is_escaped_on_the_console() -> None:
    hostile = '<script>alert(1)</script><img src=x onerror=alert(2)>"\'&'
    async with web_lab() as (lab, http):
        await send(lab, ALICE, [BOB], subject=hostile)
        async with http.get("/", headers=cookie(lab)) as resp:
            page = await resp.text()
        assert "<script>alert" not in page and "<img src=x" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;" in page


# --- the stream --------------------------------------------------------------------------------------------


async def test_the_stream_says_hello_then_shows_a_message_accepted_and_stored_with_counts() -> None:
    async with web_lab() as (lab, http):
        async with http.get("/console/events", headers=cookie(lab)) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            reader = EventReader(resp)
            hello = await reader.next()
            assert hello is not None and hello.event == "hello"
            assert hello.data["lab"] == lab.web.app[CONSOLE_KEY].lab_id
            first_counts = await reader.until(lambda ev: ev.event == "counts")
            assert folder(first_counts[-1].data, BOB)["exists"] == 0
            mid = await send(lab, ALICE, [BOB], subject="Live one")
            events = await reader.until(stored_in(BOB))
            if not any(ev.event == "entry" and ev.data["kind"] == "accepted" for ev in events):
                events += await reader.until(lambda ev: ev.event == "entry" and ev.data["kind"] == "accepted")
            accepted = next(ev for ev in events if ev.event == "entry" and ev.data["kind"] == "accepted")
            assert accepted.data["message_id"] == mid and BOB in accepted.data["recipients"]
            bob = next(ev for ev in events if stored_in(BOB)(ev))
            assert bob.data["message_id"] == mid and bob.data["subject"] == "Live one"
            assert all(ev.id == str(ev.data["seq"]) for ev in events if ev.event == "entry")
            counts = await reader.until(lambda ev: ev.event == "counts" and folder(ev.data, BOB)["exists"] == 1)
            assert folder(counts[-1].data, BOB)["unseen"] == 1


async def test_last_event_id_replays_what_the_reader_missed() -> None:
    async with web_lab() as (lab, http):
        await send(lab, ALICE, [BOB], subject="one")
        middle = lab.web.timeline.last_seq
        await send(lab, ALICE, [BOB], subject="two")
        headers = {**cookie(lab), "Last-Event-ID": str(middle)}
        async with http.get("/console/events", headers=headers) as resp:
            reader = EventReader(resp)
            events = await reader.until(lambda ev: ev.event == "counts")
        replayed = [ev.data for ev in events if ev.event == "entry"]
        assert [e["seq"] for e in replayed] == [e["seq"] for e in lab.web.timeline.since(middle)]
        assert replayed and replayed[0]["seq"] == middle + 1
        assert any(e.get("subject") == "two" for e in replayed)
        assert not any(e.get("subject") == "one" for e in replayed)


async def test_a_page_from_an_earlier_lab_gets_the_whole_timeline() -> None:
    async with web_lab() as (lab, http):
        await send(lab, ALICE, [BOB])
        params = {"lab": "an-earlier-lab", "since": "1"}
        async with http.get("/console/events", headers=cookie(lab), params=params) as resp:
            events = await EventReader(resp).until(lambda ev: ev.event == "counts")
        entries = [ev.data["seq"] for ev in events if ev.event == "entry"]
        assert entries[0] == 1 and entries[-1] == lab.web.timeline.last_seq


async def test_a_bad_last_event_id_is_a_400() -> None:
    async with web_lab() as (lab, http):
        for headers in ({"Last-Event-ID": "abc"}, {"Last-Event-ID": "-3"}):
            async with http.get("/console/events", headers={**cookie(lab), **headers}) as resp:
                assert resp.status == 400
                assert "Last-Event-ID" in await resp.text()


async def test_open_streams_are_capped_with_429() -> None:
    async with web_lab() as (lab, http):
        lab.web.streams = MAX_STREAMS - 1
        async with http.get("/console/events", headers=cookie(lab)) as open_one:
            assert open_one.status == 200
            await EventReader(open_one).until(lambda ev: ev.event == "hello")
            assert lab.web.streams == MAX_STREAMS
            async with http.get("/console/events", headers=cookie(lab)) as refused:
                assert refused.status == 429
                assert refused.headers["Retry-After"]
        lab.web.streams = 0


async def test_a_stuck_reader_is_dropped_not_buffered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console_module, "QUEUE_LIMIT", 5)
    async with web_lab() as (lab, http):
        console = lab.web.app[CONSOLE_KEY]
        async with http.get("/console/events", headers=cookie(lab)) as resp:
            reader = EventReader(resp)
            await reader.until(lambda ev: ev.event == "counts")
            assert len(console.streams) == 1
            # 50 entries in one go, before the stream's writer can run: more than its queue holds
            for n in range(50):
                lab.activity.publish("corp.example", "test-burst", n=n)
            rest = await reader.end()
        assert not [ev for ev in rest if ev.event == "entry"]  # dropped, not fed the burst
        assert console.streams == set() and lab.web.streams == 0
        # the browser reconnects with the last id it saw and gets the burst from the timeline
        async with http.get("/console/events", headers={**cookie(lab), "Last-Event-ID": "0"}) as again:
            events = await EventReader(again).until(lambda ev: ev.event == "counts")
        assert sum(1 for ev in events if ev.event == "entry" and ev.data["kind"] == "test-burst") == 50


async def test_an_idle_stream_gets_heartbeat_comments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console_module, "HEARTBEAT_S", 0.05)
    async with web_lab() as (lab, http):
        async with http.get("/console/events", headers=cookie(lab)) as resp:
            await EventReader(resp).until(lambda ev: ev.event == "counts")

            async def first_comment() -> bytes:
                while True:
                    line = await resp.content.readline()
                    assert line, "the stream ended"
                    if line.startswith(b":"):
                        return line

            assert await asyncio.wait_for(first_comment(), TIMEOUT) == b": heartbeat\n"


async def test_streams_end_when_the_lab_stops() -> None:
    lab = Lab(web=True)
    await lab.start()
    try:
        async with aiohttp.ClientSession(base_url=lab.web.url) as http, \
                http.get("/console/events", headers=cookie(lab)) as resp:
            reader = EventReader(resp)
            await reader.until(lambda ev: ev.event == "counts")
            stopping = asyncio.create_task(lab.stop())
            await reader.end(timeout=5.0)
            await asyncio.wait_for(stopping, 5.0)
    finally:
        await lab.stop()


# --- recalls -----------------------------------------------------------------------------------------------


async def test_the_recall_page_after_a_cloud_recall() -> None:
    async with web_lab() as (lab, http):
        mid = await send(lab, ALICE, [BOB, DAVE], subject="Sent by mistake")
        agent = RecallAgent(lab, ALICE, lab.password(ALICE), timeout=TIMEOUT)
        handle = await agent.recall(mid)
        report = await handle.report(timeout=TIMEOUT)
        await lab.wait_idle()
        assert str(report.statuses[BOB]) .endswith("recalled")
        href = console_module.recall_href(mid)
        async with http.get("/", headers=cookie(lab)) as resp:
            page = await resp.text()
        assert f'href="{href}"' in page  # linked from the timeline and the recall list
        async with http.get("/console/recalls", headers=cookie(lab)) as resp:
            listing = await resp.text()
        assert f'href="{href}"' in listing and "Sent by mistake" in listing
        async with http.get(href, headers=cookie(lab)) as resp:
            assert resp.status == 200
            detail = await resp.text()
        assert mid.replace("<", "&lt;").replace(">", "&gt;") in detail
        assert ALICE in detail and "cloud" in detail
        bob_row = detail[detail.index(f"<td>{BOB}</td>"):].split("</tr>")[0]
        assert "recalled" in bob_row and "no folder (gone)" in bob_row
        dave_row = detail[detail.index(f"<td>{DAVE}</td>"):].split("</tr>")[0]
        assert "external" in dave_row
        assert "Message Recall Report" in detail  # where the report was stored, and its text:
        assert re.search(rf"<pre>.*{re.escape(BOB)}.*</pre>", detail, flags=re.DOTALL)
        assert "expunged" in detail  # the timeline entries about it
        # the same page with the brackets, percent-encoded
        async with http.get("/console/recalls/%3C" + mid.strip("<>") + "%3E", headers=cookie(lab)) as resp:
            assert resp.status == 200


async def test_an_unknown_recall_is_a_404_page() -> None:
    async with web_lab() as (lab, http):
        for path in ("/console/recalls/nobody@corp.example", "/console/recalls/not%20an%20id"):
            async with http.get(path, headers=cookie(lab)) as resp:
                assert resp.status == 404
                assert "Traceback" not in await resp.text()
