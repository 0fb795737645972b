"""The mail helpers of `Lab` (harness/mail_helpers.py) over real SMTP: parsed messages, the filters, a wait that
wakes on arrival, clear; on the capture and on the realistic domains alike."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime
from email.message import EmailMessage

import aiosmtplib
import pytest

from recall_lab.fake_servers.capture import CaptureSettings
from recall_lab.harness.config import default_config
from recall_lab.harness.lab import Lab

APP = "noreply@myapp.example"


def capture_config():  # noqa: ANN201 - a LabConfig
    config = default_config()
    config.capture = CaptureSettings()
    return config


async def send(lab: Lab, to: str | list[str], subject: str, body: str = "hello", *, html: str | None = None,
               mid: str | None = None) -> str:
    """The application's mail, through the capture's SMTP listener; returns its Message-ID."""
    recipients = [to] if isinstance(to, str) else to
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = APP, ", ".join(recipients), subject
    msg["Message-ID"] = mid or f"<{time.monotonic_ns()}@myapp.example>"
    msg.set_content(body)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    ep = lab.capture.smtp
    await aiosmtplib.send(msg, hostname=ep.host, port=ep.port, local_hostname="localhost", start_tls=False,
                          recipients=recipients, sender=APP)
    return str(msg["Message-ID"])


async def test_messages_are_parsed_email_messages_with_their_bytes():
    async with Lab(capture_config(), web=False) as lab:
        mid = await send(lab, "someone@example.com", "Réinitialiser le mot de passe", "Code: 1234")
        [msg] = lab.messages("someone@example.com")
        assert isinstance(msg, EmailMessage)
        assert msg["Subject"] == "Réinitialiser le mot de passe"  # decoded (policy.default)
        assert msg.get_content().strip() == "Code: 1234"
        assert msg.raw == lab.capture.store.fetch_raw("someone@example.com", "INBOX", msg.uid)
        assert (msg.user, msg.folder, msg.source, msg.message_id) == ("someone@example.com", "INBOX", "capture",
                                                                      mid)
        assert lab.message("someone@example.com", mid).raw == msg.raw
        assert lab.latest("someone@example.com").raw == msg.raw
        with pytest.raises(LookupError, match="no message <nope@x>"):
            lab.message("someone@example.com", "<nope@x>")
        with pytest.raises(LookupError, match="no folder 'Archive'"):
            lab.messages("someone@example.com", "Archive")
        assert lab.messages("never@example.com") == []  # capture mode: any address, no mail yet
        with pytest.raises(LookupError, match="no message in INBOX"):
            lab.latest("never@example.com")


async def test_the_helpers_read_the_realistic_domains_too():
    async with Lab(web=False) as lab:
        sub = lab.submission("corp.example")
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = "alice@corp.example", "bob@corp.example", "Invoice 42"
        msg["Message-ID"] = "<invoice-42@corp.example>"
        msg.set_content("Please pay.")
        await aiosmtplib.send(msg, hostname=sub.host, port=sub.port, local_hostname="corp.example",
                              start_tls=False, username="alice@corp.example", password="alice-password")
        got = await lab.wait_for(to="bob@corp.example", subject="invoice")
        assert (got.source, got.message_id) == ("corp.example", "<invoice-42@corp.example>")
        [sent] = lab.find(subject="Invoice 42", folder="Sent")
        assert sent.user == "alice@corp.example"
        assert lab.messages("bob@corp.example")[0].get_content().strip() == "Please pay."
        with pytest.raises(KeyError, match="not a user of this lab"):
            lab.messages("someone@example.com")  # no capture: only the lab's users have mail
        with pytest.raises(KeyError, match="capture mode is off"):
            lab.find(to="someone@example.com")


async def test_find_filters():
    async with Lab(capture_config(), web=False) as lab:
        await send(lab, "a@example.com", "Reset your password", "Open https://app.example/reset?token=T0K3N")
        await send(lab, "b@example.com", "Welcome aboard", "Hello B", html="<p>Click <b>here</b> to start</p>")
        await send(lab, ["a@example.com", "c@example.com"], "Weekly digest", "Nothing new")
        subjects = [m["Subject"] for m in lab.find()]
        assert sorted(subjects) == sorted(["Reset your password", "Welcome aboard", "Weekly digest",
                                           "Weekly digest"])
        assert [m["Subject"] for m in lab.find(to="A@Example.com")] == ["Reset your password", "Weekly digest"]
        assert [m.user for m in lab.find(subject="WEEKLY")] == ["a@example.com", "c@example.com"]
        assert [m["Subject"] for m in lab.find(subject=re.compile(r"^Re"))] == ["Reset your password"]
        assert lab.find(subject=re.compile(r"^re")) == []  # a pattern is searched as given (case counts)
        [reset] = lab.find(text=re.compile(r"token=\w+"))
        assert re.search(r"token=(\w+)", reset.get_content()).group(1) == "T0K3N"
        assert [m.user for m in lab.find(text="hello b")] == ["b@example.com"]  # the plain part
        assert lab.find(text="click here") == []  # the HTML part is read only when there is no plain one
        assert lab.find(to="c@example.com", subject="reset") == []  # filters combine with AND
        with pytest.raises(TypeError, match="subject must be a string or a compiled re.Pattern"):
            lab.find(subject=42)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="since must be timezone-aware"):
            lab.find(since=datetime.now())  # noqa: DTZ005 - the mistake under test
        with pytest.raises(ValueError, match="to must be an address"):
            lab.find(to="nobody")


async def test_since_tells_apart_messages_of_the_same_second():
    async with Lab(capture_config(), web=False) as lab:
        await send(lab, "a@example.com", "first")
        mark = datetime.now(UTC)
        await send(lab, "a@example.com", "second")
        assert [m["Subject"] for m in lab.find(since=mark)] == ["second"]
        both = lab.messages("a@example.com")
        assert both[0].arrived < mark <= both[1].arrived


async def test_wait_for_wakes_when_the_message_arrives():
    async with Lab(capture_config(), web=False) as lab:
        assert lab.find(to="a@example.com") == []
        started = time.monotonic()
        waiting = asyncio.create_task(lab.wait_for(to="a@example.com", subject="wanted", timeout=30))
        await send(lab, "a@example.com", "unrelated")  # heard, read, not a match: the wait goes on
        await send(lab, "b@example.com", "wanted")  # another user: not even read
        assert not waiting.done()
        mid = await send(lab, "a@example.com", "wanted")
        got = await asyncio.wait_for(waiting, 10)
        assert got.message_id == mid
        assert time.monotonic() - started < 10  # woken by the store's event, not by the 30 s timeout
        again = await lab.wait_for(to="a@example.com", subject="wanted", timeout=0.1)  # there already: at once
        assert again.message_id == mid


async def test_wait_for_times_out_naming_the_filters():
    async with Lab(capture_config(), web=False) as lab:
        with pytest.raises(TimeoutError, match=r"no message with to='x@example.com', subject='reset' in INBOX "
                                               r"arrived within 0.2 s"):
            await lab.wait_for(to="x@example.com", subject="reset", timeout=0.2)


async def test_clear_one_user_or_everyone():
    async with Lab(capture_config(), web=False) as lab:
        await send(lab, ["a@example.com", "b@example.com", "bob@corp.example"], "one")
        await send(lab, "a@example.com", "two")
        assert lab.clear("a@example.com") == 2
        assert lab.messages("a@example.com") == []
        assert len(lab.messages("b@example.com")) == 1
        store = lab.store("corp.example")
        store.deliver("carol@corp.example", b"Subject: local\r\n\r\nx\r\n")
        assert lab.clear() == 3  # b, bob's capture mailbox, carol in corp.example
        assert lab.find() == [] and store.messages("carol@corp.example", "INBOX") == []
        assert lab.capture.message_count == 0
